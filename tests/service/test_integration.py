"""End to end with real processes: uvicorn API, Celery workers, Redis, SQLite/PostgreSQL, a real video."""
from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from bench.servers import feqa_serve, feqa_stack, postgres_url
from tests.service.conftest import pg_url_or_skip

pytestmark = pytest.mark.integration


def upload(http: httpx.Client, video: bytes, expression: str = "smile", **data) -> httpx.Response:
    return http.post("/v1/assessments", files=[("video", ("clip.mp4", video, "video/mp4"))],
                     data={"expression": expression, **data})


def check_scored(body: dict) -> dict:
    assert body["status"] == "succeeded", body
    item = body["items"][0]
    assert item["progress"] == {"stage": "done", "percent": 100.0}
    res = item["result"]
    assert 0.0 <= res["score"] <= 4.0 and res["score_rounded"] in range(5)
    assert res["meaning"] == ["normal", "slight", "mild", "moderate", "severe"][res["score_rounded"]]
    assert res["abstained"] is False and res["quality"]["scorable"] is True
    assert 0.9 <= res["quality"]["face_share"] <= 1.0
    m = res["model"]
    assert m["trained_on"] == "untrained" and m["clinical_use"] is False and len(m["sha256"]) == 64
    assert m["name"].startswith("smile") and m["version"]
    assert res["not_for_clinical_use"] is True
    return item


def test_single_machine_serve_scores_a_real_video(tmp_path, model_dir, video_bytes):
    # given `feqa serve` on a fresh machine: SQLite store and broker, no Redis, anonymous on loopback
    with feqa_serve(tmp_path, model_dir=model_dir) as stack, stack.client() as http:
        t0 = time.monotonic()
        r = upload(http, video_bytes)
        assert r.status_code == 202
        body = stack.wait_done(http, r.json()["id"], timeout=60)
        elapsed = time.monotonic() - t0
        item = check_scored(body)
        # the pictures follow the result (drawn after it is published); their links appear when written
        deadline = time.monotonic() + 30
        while not all(item["links"].values()) and time.monotonic() < deadline:
            time.sleep(0.2)
            item = http.get(f"/v1/assessments/{body['id']}").json()["items"][0]
        assert set(item["links"]) == {"overlay", "trajectories"} and all(item["links"].values())
        # the pictures are served, the uploaded video is gone (retention 0 h), the FHIR export names the model
        for link in item["links"].values():
            png = http.get(link)
            assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
        assert not list((stack.var_dir / "storage" / "uploads").rglob("*.video"))
        fhir = http.get(f"/v1/assessments/{body['id']}/fhir").json()
        assert fhir["component"][0]["valueQuantity"]["value"] == pytest.approx(item["result"]["score"], abs=1e-3)
        metrics = http.get("/metrics").text
        assert 'feqa_job_stage_seconds_count{stage="tracking"} 1.0' in metrics
        assert 'feqa_job_stage_seconds_count{stage="plotting"} 1.0' in metrics
        print(f"single machine: 2.4 s clip scored {elapsed:.2f} s after upload")


def test_redis_workers_keep_tenants_apart(tmp_path, model_dir, video_bytes):
    with feqa_stack(tmp_path, model_dir=model_dir, broker="redis") as stack:
        key_a, key_b = stack.create_key("clinic-a"), stack.create_key("clinic-b")
        with stack.client(key_a) as a, stack.client(key_b) as b, stack.client() as nobody:
            assert upload(nobody, video_bytes).status_code == 401
            r = upload(a, video_bytes, patient_ref="MRN-77", protocol="pfed5")
            assert r.status_code == 202
            aid = r.json()["id"]
            for path in (f"/v1/assessments/{aid}", f"/v1/assessments/{aid}/fhir"):
                other = b.get(path)
                assert other.status_code == 404 and other.json()["code"] == "not_found"
            assert b.delete(f"/v1/assessments/{aid}").status_code == 404
            body = stack.wait_done(a, aid)
            check_scored(body)
            assert body["patient_ref"] == "MRN-77"
            # a scored item has nothing to retry; delete answers 204, then the id is gone
            assert a.post(f"/v1/assessments/{aid}/retry").status_code == 409
            assert a.delete(f"/v1/assessments/{aid}").status_code == 204
            assert a.get(f"/v1/assessments/{aid}").status_code == 404
        actions = [e.action for e in stack.store().audit_events(aid)]
        assert actions[0] == "upload" and "read" in actions and actions[-1] == "delete"
        logs = stack.logs(tail=10**6)
        assert "MRN-77" not in logs and "clip.mp4" not in logs


def test_postgres_job_store(tmp_path, model_dir, video_bytes):
    with postgres_url(pg_url_or_skip()) as url:
        with feqa_stack(tmp_path, model_dir=model_dir, broker="redis", database_url=url) as stack:
            key = stack.create_key("clinic-pg")
            with stack.client(key) as http:
                r = upload(http, video_bytes, **{})
                assert r.status_code == 202
                check_scored(stack.wait_done(http, r.json()["id"]))


@pytest.mark.parametrize("broker", ["sqlite", "redis"])
def test_a_worker_killed_mid_task_is_recovered_once(tmp_path, model_dir, video_bytes, broker):
    # given a stack whose only worker dies while scoring (the SQLite broker loses the message with it)
    with feqa_stack(tmp_path, model_dir=model_dir, broker=broker) as stack:
        key = stack.create_key("t")
        with stack.client(key) as http:
            aid = upload(http, video_bytes).json()["id"]
            deadline = time.monotonic() + 30
            while http.get(f"/v1/assessments/{aid}").json()["items"][0]["status"] != "running":
                assert time.monotonic() < deadline, stack.logs()
                time.sleep(0.05)
            stack.workers[0].kill(signal.SIGKILL)
            stack.workers[0].popen.wait(10)
            # when a new worker comes up, it re-queues the orphan (its worker's process is gone)
            stack.add_worker()
            body = stack.wait_done(http, aid, timeout=90)
        check_scored(body)
        item = stack.store().get_item(stack.store().item_ids(aid)[0])
        assert item.attempts == 2 and item.status == "succeeded"


def test_a_worker_becomes_ready_when_models_arrive(tmp_path, model_dir):
    import shutil

    models = tmp_path / "models-later"
    models.mkdir()
    with feqa_stack(tmp_path, model_dir=models, ready=False) as stack:
        time.sleep(3)
        assert httpx.get(f"{stack.base_url}/readyz").status_code == 503
        for f in model_dir.iterdir():
            shutil.copy(f, models / f.name)
        stack.wait_ready(timeout=60)


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def test_serve_restarts_a_dead_worker(tmp_path, model_dir, video_bytes):
    import os

    with feqa_serve(tmp_path, model_dir=model_dir) as stack, stack.client() as http:
        serve_pid = stack.procs[0].popen.pid
        (worker_pid,) = children(serve_pid)
        os.kill(worker_pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while children(serve_pid) in ([], [worker_pid]):
            assert time.monotonic() < deadline, stack.logs()
            time.sleep(0.2)
        # the new worker scores uploads
        r = upload(http, video_bytes)
        check_scored(stack.wait_done(http, r.json()["id"], timeout=90))
