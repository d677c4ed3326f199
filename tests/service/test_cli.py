"""The service's commands: feqa score, feqa serve --create-key / --purge."""
from __future__ import annotations

import json
import os
import subprocess

import pytest
import sqlalchemy as sa

from bench.servers import PYTHON, ROOT, service_env


def feqa(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "service.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env or os.environ.copy(), timeout=300)


def test_score_prints_the_result_with_model_facts(model_dir, video_path):
    r = feqa("score", str(video_path), "--expression", "smile", "--model-dir", str(model_dir))
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert 0 <= res["score"] <= 4 and res["model"]["trained_on"] == "untrained"
    assert res["not_for_clinical_use"] is True and "not for clinical use" in r.stderr
    # the whole-recording fields, in the JSON and in the summary line on stderr
    assert {"scale", "aggregation", "repetitions", "findings", "measures"} <= set(res)
    n = res["aggregation"]["n_windows"]
    assert f"smile: {res['score']}" in r.stderr and f"{n} window(s)" in r.stderr
    assert all(f in r.stderr for f in res["findings"])


def test_score_reports_a_missing_model_with_its_code(model_dir, video_path):
    r = feqa("score", str(video_path), "--expression", "frown", "--model-dir", str(model_dir))
    assert r.returncode == 2 and json.loads(r.stdout)["error"]["code"] == "model_unavailable"


def test_create_key_prints_a_working_key_once(tmp_path):
    env = service_env(tmp_path / "var")
    r = feqa("serve", "--create-key", "clinic-x", env=env)
    assert r.returncode == 0, r.stderr
    key = r.stdout.strip()
    assert key.startswith("feqa_")
    from worker.jobs.store import Store

    store = Store(f"sqlite:///{tmp_path / 'var' / 'feqa.sqlite3'}")
    assert store.verify_key(key).tenant == "clinic-x"
    assert feqa("serve", "--purge", env=env).returncode == 0


def test_only_feqa_migrate_changes_the_schema(tmp_path):
    # given a new database that a Store has opened and used to read
    from worker.jobs.store import Store

    env = service_env(tmp_path / "var")
    url = f"sqlite:///{tmp_path / 'var' / 'feqa.sqlite3'}"
    with pytest.raises(sa.exc.OperationalError):
        Store(url).queue_depth()   # no table: the Store made none
    check = feqa("migrate", "--check", env=env)
    assert check.returncode == 1 and "revision none" in check.stdout
    # when `feqa migrate` runs (twice: the second finds nothing to do), then the schema is current
    assert feqa("migrate", env=env).returncode == 0
    assert feqa("migrate", env=env).returncode == 0
    assert feqa("migrate", "--check", env=env).returncode == 0
    assert Store(url).queue_depth() == {}


def test_serve_says_clearly_when_the_model_directory_is_empty(tmp_path):
    from bench.servers import feqa_serve

    empty = tmp_path / "models-empty"
    empty.mkdir()
    with feqa_serve(tmp_path, model_dir=empty, workers=0, ready=False) as stack:
        import httpx

        assert httpx.get(f"{stack.base_url}/readyz").status_code == 503
        log = stack.procs[0].log.read_text()
    assert "WARNING: no models in" in log and "make demo-models" in log


def test_worker_healthcheck_follows_this_hosts_heartbeat(tmp_path):
    import socket

    from worker.jobs.store import Store

    env = service_env(tmp_path / "var")
    assert feqa("migrate", env=env).returncode == 0
    store = Store(f"sqlite:///{tmp_path / 'var' / 'feqa.sqlite3'}")
    assert feqa("worker", "--healthcheck", env=env).returncode == 1
    store.heartbeat(f"{socket.gethostname()}:1", [{"expression": "smile"}], warmed=True)
    r = feqa("worker", "--healthcheck", env=env)
    assert r.returncode == 0 and "ready" in r.stdout


def _children(pid: int) -> list[int]:
    """Direct children of `pid`, read from /proc."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = open(f"/proc/{d}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d))
    return out


def _gone(pid: int, timeout: float) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":   # exited, waiting for its (init) parent to reap it
            return True
        time.sleep(0.2)
    return False


def test_serve_leaves_no_worker_behind_when_stopped_or_killed(tmp_path, model_dir):
    import signal

    from bench.servers import feqa_serve

    # Given `feqa serve` with its local worker
    for how in ("group-sigterm", "server-sigkill"):
        with feqa_serve(tmp_path / how, model_dir=model_dir) as stack:
            serve = stack.procs[0].popen
            workers = _children(serve.pid)
            assert workers, "feqa serve started no worker subprocess"
            # When the whole group is told to stop (Ctrl-C, a service manager) or the server alone dies
            if how == "group-sigterm":
                os.killpg(serve.pid, signal.SIGTERM)
            else:
                os.kill(serve.pid, signal.SIGKILL)
            serve.wait(30)
            # Then no worker outlives it (none restarted during shutdown, none orphaned)
            for w in workers + _children(serve.pid):
                assert _gone(w, 30), f"worker {w} outlived feqa serve ({how})"
