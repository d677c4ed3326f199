"""In-process API behaviour with a recording queue: uploads, idempotency, FHIR, delete, models."""
from __future__ import annotations

import json

import pytest

from tests.service.conftest import RecordingQueue
from worker.jobs.store import NewItem


def post(client, video: bytes, *, expression="smile", headers=None, name="a.mp4", extra=None):
    data = {"expression": expression} if expression is not None else {}
    data.update(extra or {})
    return client.post("/v1/assessments", files=[("video", (name, video, "video/mp4"))], data=data,
                       headers=headers or {})


def test_upload_is_stored_queued_and_audited_without_patient_data(client, app, queue, video_bytes):
    r = post(client, video_bytes, extra={"patient_ref": "MRN-12345"})
    assert r.status_code == 202
    body = r.json()
    assert body["status"] == "queued" and body["url"] == f"/v1/assessments/{body['id']}"
    assert r.headers["location"] == body["url"]
    assert len(queue.sent) == 1
    a, items = app.state.store.get_assessment("local", body["id"])
    assert app.state.storage.path(items[0].video_key).read_bytes() == video_bytes
    events = app.state.store.audit_events(body["id"])
    assert [e.action for e in events] == ["upload"]
    assert "MRN-12345" not in json.dumps(events[0].detail) and "a.mp4" not in json.dumps(events[0].detail)
    got = client.get(body["url"]).json()
    assert got["patient_ref"] == "MRN-12345" and got["items"][0]["progress"] == {"stage": "queued", "percent": 0.0}


def test_several_videos_pair_with_expressions_by_order(client, queue, video_bytes):
    files = [("video", ("1.mp4", video_bytes, "video/mp4")), ("video", ("2.mp4", video_bytes, "video/mp4"))]
    r = client.post("/v1/assessments", files=files, data={"expression": ["smile", "frown"]})
    assert r.status_code == 202
    items = client.get(r.json()["url"]).json()["items"]
    assert [(i["index"], i["expression"]) for i in items] == [(0, "smile"), (1, "frown")]
    bad = client.post("/v1/assessments", files=files, data={"expression": ["smile"]})
    assert bad.status_code == 422 and bad.json()["code"] == "expression_mismatch"


@pytest.mark.parametrize("video,expression,code", [
    (b"", "smile", "empty_file"),
    (b"this is text, not a video\n" * 10, "smile", "not_a_video"),
    (None, "grin", "unknown_expression"),
])
def test_bad_inputs_are_422_problems_and_leave_nothing_behind(client, app, queue, video_bytes, video, expression,
                                                              code):
    r = post(client, video_bytes if video is None else video, expression=expression)
    assert r.status_code == 422 and r.json()["code"] == code
    assert r.headers["content-type"].startswith("application/problem+json")
    assert queue.sent == []
    assert not any(app.state.storage.path("uploads").rglob("*.video*"))


def test_idempotency_key_replays_the_same_assessment(client, queue, video_bytes):
    h = {"Idempotency-Key": "visit-42-smile"}
    first = post(client, video_bytes, headers=h)
    again = post(client, video_bytes, headers=h)
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"] and len(queue.sent) == 1


def test_delete_removes_files_and_results_but_keeps_the_audit_trail(client, app, video_bytes):
    aid = post(client, video_bytes).json()["id"]
    video = app.state.storage.path(f"uploads/{aid}/0.video")
    assert video.exists()
    assert client.delete(f"/v1/assessments/{aid}").status_code == 204
    assert not video.exists()
    assert client.get(f"/v1/assessments/{aid}").status_code == 404
    assert client.delete(f"/v1/assessments/{aid}").status_code == 404
    assert [e.action for e in app.state.store.audit_events(aid)] == ["upload", "delete"]


def test_retry_requeues_only_failed_items(client, app, queue, video_bytes):
    aid = post(client, video_bytes).json()["id"]
    r = client.post(f"/v1/assessments/{aid}/retry")
    assert r.status_code == 409 and r.json()["code"] == "nothing_to_retry"
    item = app.state.store.item_ids(aid)[0]
    app.state.store.claim_item(item, "w", 3)
    app.state.store.fail_item(item, "internal_error", "boom")
    r = client.post(f"/v1/assessments/{aid}/retry")
    assert r.status_code == 202 and r.json()["requeued"] == [0]
    assert queue.sent == [item, item]


def test_fhir_observation_shape(client, app):
    store = app.state.store
    aid = store.new_id()
    store.create_assessment(aid, "local", [NewItem("smile", f"uploads/{aid}/0.video", "0", 1),
                                           NewItem("frown", f"uploads/{aid}/1.video", "0", 1)],
                            protocol="pfed5", patient_ref="P-1")
    smile, frown = store.item_ids(aid)
    model = {"name": "smile-compact", "version": "1", "sha256": "ab" * 32, "trained_on": "untrained",
             "clinical_use": False}
    store.claim_item(smile, "w", 3)
    store.finish_item(smile, {"score": 2.4, "score_rounded": 2, "meaning": "mild", "abstained": False,
                              "model": model}, {}, {})
    store.claim_item(frown, "w", 3)
    store.finish_item(frown, {"score": None, "abstained": True, "reasons": ["face_too_small"], "model": model},
                      {}, {})
    obs = client.get(f"/v1/assessments/{aid}/fhir").json()
    assert obs["resourceType"] == "Observation" and obs["status"] == "preliminary"
    assert obs["subject"] == {"identifier": {"value": "P-1"}}
    assert obs["code"]["coding"][0]["code"] == "mds-updrs-3.2"
    c0, c1 = obs["component"]
    assert c0["code"]["coding"][0]["code"] == "mds-updrs-3.2.smile"
    assert c0["valueQuantity"]["value"] == 2.4 and c0["interpretation"][0]["text"] == "mild"
    assert "valueQuantity" not in c1 and c1["dataAbsentReason"]["coding"][0]["code"] == "not-performed"
    assert "NOT FOR CLINICAL USE" in obs["note"][0]["text"] and "smile-compact 1" in obs["device"]["display"]
    assert [e.action for e in store.audit_events(aid)] == ["fhir_export"]


def test_models_lists_manifests_without_onnxruntime(client, settings, model_dir, tmp_path):
    settings.model_dir = tmp_path / "no-models"
    r = client.get("/v1/models").json()
    assert r["models"] == [] and "no model is installed" in r["problem"] and str(tmp_path) not in str(r)
    assert r["protocols"]["pfed5"]["served"] is False
    settings.model_dir = model_dir
    r = client.get("/v1/models").json()
    assert r["expressions"] == ["smile"] and r["models"][0]["trained_on"] == "untrained"
    assert r["source"] == "model_dir" and "model_dir" not in r
    tasks = {t["expression"]: t for t in r["protocols"]["pfed5"]["tasks"]}
    assert tasks["smile"]["served"] and tasks["smile"]["model"]["name"].startswith("smile")
    assert not tasks["frown"]["served"] and tasks["frown"]["reason"] == "no model is installed for this task"
    assert r["protocols"]["toronto"]["served"] is False
    assert str(model_dir) not in client.get("/v1/models").text


def test_openapi_documents_the_multipart_upload(client):
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/v1/assessments"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert body["schema"]["properties"]["video"]["type"] == "array"
    assert client.get("/docs").status_code == 200


def test_metrics_report_requests_and_queue_depth(client, video_bytes):
    post(client, video_bytes)
    text = client.get("/metrics").text
    assert 'feqa_http_requests_total{method="POST",route="/v1/assessments",status="202"} 1.0' in text
    assert 'feqa_queue_depth{status="queued"} 1.0' in text


def test_api_process_loads_no_onnxruntime_or_opencv(tmp_path, video_path):
    import subprocess
    import sys

    code = ("import sys\nfrom worker.settings import Settings\nfrom service.api.main import create_app\n"
            "from worker.jobs.db import migrate\n"
            f"s = Settings(var_dir={str(tmp_path)!r}); migrate(s.db_url); create_app(s)\n"
            f"from service.probe import probe_upload\nprint(probe_upload({str(video_path)!r}, max_duration_s=60, max_bytes=10**9))\n"
            "bad = [m for m in ('onnxruntime', 'cv2', 'torch', 'worker.tasks') if m in sys.modules]\n"
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_an_unreachable_broker_is_a_503_and_keeps_nothing(settings, video_bytes):
    from fastapi.testclient import TestClient

    from service.api.main import create_app

    class DownQueue:
        def enqueue(self, ids):
            raise ConnectionError("broker down")

    app = create_app(settings, queue=DownQueue())
    with TestClient(app) as c:
        r = post(c, video_bytes, headers={"Idempotency-Key": "k1"})
        assert r.status_code == 503 and r.json()["code"] == "broker_unavailable" and r.headers["retry-after"]
        assert not any(app.state.storage.path("uploads").rglob("*.video*"))
        app.state.queue = RecordingQueue()
        again = post(c, video_bytes, headers={"Idempotency-Key": "k1"})
        assert again.status_code == 202


def test_a_video_longer_than_the_limit_is_refused_before_queueing(settings, queue, video_bytes):
    from fastapi.testclient import TestClient

    from service.api.main import create_app

    settings.max_duration_s = 1.0   # the test clip lasts 2.4 s
    with TestClient(create_app(settings, queue=queue)) as c:
        r = post(c, video_bytes)
    assert r.status_code == 422 and r.json()["code"] == "video_too_long" and queue.sent == []
