"""A rollout with real parts: the API, Redis, and two Celery worker processes that hold different versions of the
smile model. Every item of one assessment is scored by the version the assessment was pinned to (the other
worker leaves the items it is handed), and when the pinned version's last worker stops, the items left fail
with model_version_gone instead of being scored by the other version."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import httpx
import onnx
import pytest

from bench.servers import feqa_stack, start, worker_cmd
from model.manifest import sha256_file

pytestmark = pytest.mark.integration
N_ITEMS = 3


def second_version(v1_dir: Path, out: Path) -> Path:
    """The same smile model as another version: a changed ONNX file (its doc string; same weights, so any
    score difference is not what the test looks at) under a manifest with a new version and the new sha256."""
    out.mkdir(parents=True, exist_ok=True)
    (manifest_path,) = v1_dir.glob("smile-*.json")
    manifest = json.loads(manifest_path.read_text())
    graph = onnx.load(str(manifest_path.with_suffix(".onnx")))
    graph.doc_string = "rollout test: version 2"
    onnx.save(graph, str(out / manifest_path.with_suffix(".onnx").name))
    manifest.update(version="2.0.0-rollout", sha256=sha256_file(out / manifest_path.with_suffix(".onnx").name))
    (out / manifest_path.name).write_text(json.dumps(manifest))
    return out


def upload(http: httpx.Client, video: bytes, n: int) -> str:
    r = http.post("/v1/assessments", files=[("video", (f"clip{i}.mp4", video, "video/mp4")) for i in range(n)],
                  data={"expression": ["smile"] * n})
    assert r.status_code == 202, r.text
    return r.json()["id"]


def wait_pinned(http: httpx.Client, aid: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        models = http.get(f"/v1/assessments/{aid}").json()["models"]
        if models:
            return models
        time.sleep(0.05)
    raise TimeoutError(f"assessment {aid} not pinned in {timeout} s")


def test_every_item_of_an_assessment_is_scored_by_its_pinned_version(tmp_path, model_dir, video_bytes):
    v2_dir = second_version(model_dir, tmp_path / "models-v2")
    sha = {"1": json.loads(next(model_dir.glob("smile-*.json")).read_text())["sha256"],
           "2": json.loads(next(v2_dir.glob("smile-*.json")).read_text())["sha256"]}
    assert sha["1"] != sha["2"]
    # a short wait bound, so that the gone case below takes seconds (the default is 300 s)
    with feqa_stack(tmp_path, model_dir=model_dir, broker="redis", env={"FEQA_MODEL_PIN_WAIT_S": "2"},
                    ready=False) as stack:
        # a second worker process, already on version 2 of the smile model: the rollout is half done
        v2 = start("worker-v2", worker_cmd(name="v2"), {**stack.env, "FEQA_MODEL_DIR": str(v2_dir)},
                   stack.var_dir / "logs")
        stack.procs.append(v2)
        stack.wait_ready()
        key = stack.create_key("clinic-a")
        with stack.client(key) as http:
            deadline = time.monotonic() + 60
            while not http.get("/readyz").json()["checks"].get("version_skew", {}).get("smile"):
                assert time.monotonic() < deadline, stack.logs()
                time.sleep(0.2)
            by_worker = {w["id"]: w["versions"]["smile"] for w in http.get("/readyz").json()["checks"]["workers"]}
            assert sorted(by_worker.values()) == ["0.0.0+untrained", "2.0.0-rollout"]

            # One assessment of three smile videos, both workers idle: each takes tasks from the queue.
            t0 = time.monotonic()
            aid = upload(http, video_bytes, N_ITEMS)
            body = stack.wait_done(http, aid, timeout=90)
            assert body["status"] == "succeeded", body
            pin = body["models"]["smile"]
            assert pin["sha256"] in sha.values() and set(pin) == {"name", "version", "sha256"}
            made_by = [it["result"]["model"] for it in body["items"]]
            assert [(m["sha256"], m["version"]) for m in made_by] == [(pin["sha256"], pin["version"])] * N_ITEMS
            items = stack.store().get_assessment("clinic-a", aid)[1]
            assert {by_worker[it.worker] for it in items} == {pin["version"]}   # only the pinned version's worker
            # the other worker was handed some of the tasks and left them (Celery logs each task's outcome)
            other = stack.workers[0] if pin["version"] == "2.0.0-rollout" else v2
            assert "'pinned_elsewhere'" in other.log.read_text(errors="replace"), stack.logs()
            print(f"\nrollout: {N_ITEMS} items scored by version {pin['version']} in {time.monotonic() - t0:.1f} s")

            # The pinned version's last worker stops (rolled over) in the middle of an assessment: what it had not
            # scored fails with model_version_gone after FEQA_MODEL_PIN_WAIT_S, never scored by the other one.
            t0 = time.monotonic()
            aid = upload(http, video_bytes, N_ITEMS)
            pin = wait_pinned(http, aid)["smile"]
            holder = v2 if pin["version"] == "2.0.0-rollout" else stack.workers[0]
            holder.stop(timeout=30)      # warm shutdown: finishes its item, drops its heartbeat
            body = stack.wait_done(http, aid, timeout=60)
            print(f"gone: {time.monotonic() - t0:.1f} s from the second upload to the last item failed")
            states = [(it["status"], (it["error"] or {}).get("code")) for it in body["items"]]
            assert ("failed", "model_version_gone") in states, states
            for it in body["items"]:
                if it["status"] == "succeeded":
                    assert it["result"]["model"]["sha256"] == pin["sha256"]
                else:
                    assert it["error"]["code"] == "model_version_gone" and it["result"] is None
                    assert it["error"]["details"]["pinned"] == pin
                    assert "no longer running" in it["error"]["title"]
    shutil.rmtree(v2_dir, ignore_errors=True)
