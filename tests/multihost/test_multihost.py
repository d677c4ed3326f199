"""FEQA on seven hosts: Redis, PostgreSQL, an S3 server, the API, two workers and a client, each in its own
network namespace on one private switch (tests/multihost/netns.py), with no data directory shared by the
API and the workers (each process has its own var dir; uploads and pictures go through the bucket).

Given that deployment, when assessments are uploaded, then each one is scored exactly once (one item row,
one attempt, one set of stage timings) and its pictures are served by the API from the bucket; when the
cable of the worker host that holds an item is pulled mid-job (its switch port down), then the other
worker host takes the item over (the stale heartbeat lets its housekeeping re-queue it) and finishes it,
once, even after the cable is back; the API host's var dir never holds a video or a picture.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from bench.servers import PYTHON, Proc, service_env, start
from tests.conftest import real_video
from tests.faults.support import long_video, shared_models, wait_for
from tests.multihost.netns import lan, namespaces_unavailable
from tests.s3server import moto_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOSTS = ["redis", "pg", "s3", "api", "w1", "w2", "client"]
PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    return shared_models(tmp_path_factory)


def _stop(p: Proc, sig: int = signal.SIGTERM) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(p.popen.pid, sig)
    try:
        p.popen.wait(10)
    except subprocess.TimeoutExpired:
        p.kill(signal.SIGKILL)
        p.popen.wait(5)


@contextlib.contextmanager
def private_postgres(net, logs: Path):
    """A PostgreSQL of its own on the pg host: initdb into a temporary directory as the postgres user."""
    data = Path(tempfile.mkdtemp(prefix="feqa-mh-pg-"))
    shutil.chown(data, "postgres", "postgres")
    try:
        r = subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "initdb"), "-D", str(data / "db"),
                            "-A", "trust", "-U", "postgres", "--no-sync"], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        with open(data / "db" / "pg_hba.conf", "a") as fh:
            fh.write("host all all 10.77.0.0/24 trust\n")
        host = net["pg"]
        proc = start("postgres", host.cmd(["runuser", "-u", "postgres", "--", str(PG_BIN / "postgres"),
                                           "-D", str(data / "db"), "-c", f"listen_addresses={host.ip}",
                                           "-c", f"unix_socket_directories={data}", "-c", "fsync=off",
                                           "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]),
                     dict(os.environ), logs)
        try:
            yield f"postgresql+psycopg://postgres@{host.ip}:5432/postgres", proc
        finally:
            _stop(proc, signal.SIGQUIT)   # immediate shutdown of the postmaster and its backends
    finally:
        shutil.rmtree(data, ignore_errors=True)


def _wait_http(url: str, timeout: float, proc: Proc | None = None) -> None:
    def up():
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited: {proc.log.read_text(errors='replace')[-3000:]}")
        try:
            return httpx.get(url, timeout=1) is not None
        except httpx.HTTPError:
            return False
    wait_for(up, timeout, url)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_api_workers_and_services_on_separate_hosts(models, tmp_path):
    why = namespaces_unavailable()
    if why:
        pytest.skip(why)
    if PG_BIN is None:
        pytest.fail("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
    logs = tmp_path / "logs"
    procs: list[Proc] = []
    with lan(HOSTS) as net, private_postgres(net, logs) as (db_url, pg), \
            moto_server(tmp_path / "s3", host=net["s3"].ip, port=9000, netns=net["s3"].ns) as s3:
        procs.append(pg)
        try:
            net.call("client", _scenario, net, db_url, s3, models, tmp_path, logs, procs)
        except BaseException:
            for p in procs:
                if p.log.exists():
                    print(f"--- {p.name} ---\n{p.log.read_text(errors='replace')[-4000:]}")
            raise
        finally:
            for p in reversed(procs[1:]):
                _stop(p)


def _scenario(net, db_url, s3, models: Path, tmp: Path, logs: Path, procs: list[Proc]) -> None:
    """Runs on the client host: every socket opened here is the client's."""
    from worker.jobs.db import Item, StageDuration, migrate
    from worker.jobs.store import Store

    procs.append(start("redis", net["redis"].cmd(
        ["redis-server", "--bind", net["redis"].ip, "--port", "6379", "--save", "", "--appendonly", "no",
         "--protected-mode", "no"]), dict(os.environ), logs))
    wait_for(lambda: subprocess.run(["pg_isready", "-h", net["pg"].ip, "-p", "5432", "-t", "1"],
                                    capture_output=True).returncode == 0, 60, "PostgreSQL on the pg host")
    _wait_http(s3.endpoint, 60)
    s3.client().create_bucket(Bucket=s3.bucket)
    for f in sorted(models.iterdir()):                # publish the models to the model store
        if f.suffix in (".json", ".onnx"):
            s3.client().upload_file(str(f), s3.bucket, f"models/{f.name}")
    migrate(db_url)                                   # `feqa migrate`, run once before the processes start
    store = Store(db_url)
    key = store.create_key("clinic")

    def env(var_dir: Path, **extra: str) -> dict:
        e = service_env(var_dir, broker="redis", database_url=db_url, extra={**s3.env("feqa/"), **extra})
        e["REDIS_URL"] = f"redis://{net['redis'].ip}:6379/0"
        return e

    api_var = tmp / "api-var"
    api_env = env(api_var, FEQA_MODEL_DIR=str(api_var / "no-models"))   # the API host has no models either
    queue = api_env["FEQA_QUEUE"]
    api_ip = net["api"].ip
    procs.append(start("api", net["api"].cmd([PYTHON, "-m", "service.api.server", "--host", api_ip, "--port",
                                               "8000", "--log-level", "warning"]), api_env, logs))
    worker_var = {}
    for w in ("w1", "w2"):
        worker_var[w] = tmp / f"{w}-var"
        # No model folder on the worker hosts: each copies its models from the model store in the bucket.
        wenv = env(worker_var[w], FEQA_MODEL_DIR=str(worker_var[w] / "no-models"), FEQA_QUEUE=queue,
                   FEQA_MODEL_STORE=f"s3://{s3.bucket}/models/")
        procs.append(start(w, net[w].cmd([PYTHON, "-m", "service.cli", "worker", "--pool", "solo", "--concurrency",
                                          "1", "--name", f"{w}@%h", "--loglevel", "INFO"], hostname=f"feqa-{w}"),
                           wenv, logs))
    base = f"http://{api_ip}:8000"
    _wait_http(f"{base}/healthz", 90, procs[-3])

    def both_ready():
        r = httpx.get(f"{base}/readyz", timeout=2)
        ids = {w["id"].partition(":")[0] for w in r.json()["checks"].get("workers", [])}
        return r.status_code == 200 and ids == {"feqa-w1", "feqa-w2"}
    wait_for(both_ready, 120, "both worker hosts ready (their heartbeats seen by the API)")

    def upload(http: httpx.Client, video: Path) -> str:
        r = http.post("/v1/assessments", files={"video": ("clip.mp4", video.read_bytes(), "video/mp4")},
                      data={"expression": "smile"})
        assert r.status_code == 202, r.text
        return r.json()["id"]

    def done(http: httpx.Client, aid: str, timeout: float) -> dict:
        def finished():
            body = http.get(f"/v1/assessments/{aid}").json()
            return body if body["status"] in ("succeeded", "failed", "partly_failed") else None
        return wait_for(finished, timeout, f"assessment {aid} finished")

    def item(aid: str):
        (iid,) = store.item_ids(aid)
        return store.get_item(iid)

    def once(aid: str) -> tuple[int, list[str]]:
        with store.session() as s:
            n = s.scalar(select(func.count()).select_from(Item).where(Item.assessment_id == aid))
            stages = list(s.scalars(select(StageDuration.stage).join(Item, Item.id == StageDuration.item_id)
                                    .where(Item.assessment_id == aid)))
        return n, stages

    served = {m["sha256"] for hb in store.ready_workers(60) for m in hb.models}
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        # Given: two short clips. Then: each scored once, its pictures served by the API from the bucket.
        short = [upload(http, real_video()) for _ in range(2)]
        for aid in short:
            body = done(http, aid, 180)
            assert body["status"] == "succeeded", body
            it = item(aid)
            assert it.attempts == 1 and it.worker.partition(":")[0] in ("feqa-w1", "feqa-w2"), it.worker
            n, stages = once(aid)
            assert n == 1 and stages and len(stages) == len(set(stages)), stages
            assert body["items"][0]["result"]["model"]["sha256"] in served   # the version that made it
        link = wait_for(lambda: (lambda i: i["links"].get("overlay") if i["pictures"] == "ready" else None)(
            http.get(f"/v1/assessments/{short[0]}").json()["items"][0]), 60, "pictures ready")
        png = http.get(link)
        assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
        assert any(k.startswith(f"feqa/artifacts/{short[0]}/") for k in s3.keys("feqa/"))
        # The scaling signals the API serves, from the broker host and the worker hosts' heartbeats.
        metrics = http.get("/metrics").text
        assert f'feqa_broker_queue_length{{queue="{queue}"}} 0.0' in metrics
        assert "feqa_workers_ready 2.0" in metrics
        wait_for(lambda: sum((hb.detail or {}).get("busy_s", 0) for hb in store.ready_workers(60)) > 0, 10,
                 "busy seconds in the heartbeats")

        # Given: a 10.9 s clip running on one worker host. When: that host's cable is pulled.
        aid = upload(http, long_video())

        def holder():
            it = item(aid)
            return it.worker if it.status == "running" and it.worker and it.stage != "done" else None
        victim_id = wait_for(holder, 120, "the long clip running on a worker host", 0.05)
        victim = victim_id.partition(":")[0].removeprefix("feqa-")
        net.cut(victim)
        assert item(aid).status in ("running", "queued")     # cut mid-job: no result yet
        # Then: the other host re-queues it once the victim's heartbeat is stale, and finishes it.
        body = done(http, aid, 180)
        assert body["status"] == "succeeded", body
        it = item(aid)
        assert it.attempts == 2 and it.worker.partition(":")[0] != f"feqa-{victim}", (victim_id, it.worker)
        assert body["items"][0]["result"]["model"]["sha256"] in served
        result = it.result

        # The cable back in: the victim host may wake up, but the result stays the one written.
        net.mend(victim)
        time.sleep(3)
        it2 = item(aid)
        n, stages = once(aid)
        assert (it2.status, it2.attempts, it2.worker, it2.result) == ("succeeded", 2, it.worker, result)
        assert n == 1 and stages and len(stages) == len(set(stages)), stages

    # The API host's disk: no video, no picture, no storage directory; the workers' temp copies are gone.
    assert not (api_var / "storage").exists()
    assert not [p for p in _files(api_var) if p.suffix in (".mp4", ".video", ".png", ".part")]
    for w, var in worker_var.items():
        assert not [p for p in _files(var) if p.suffix in (".mp4", ".video", ".png", ".part")], w
