"""In-process API: only served expressions are accepted, and every error a person reads is in plain words.

Given an app whose model directory serves smile and frown (the unit conftest's stand-in manifests),
when a client uploads for an expression without a model, then the upload is refused at once (422
`model_unavailable` listing the served expressions) and nothing is stored or queued; problem titles and
details, failed items' errors and FHIR texts come from model.messages (no codes, no class names).
"""
from __future__ import annotations

from model.messages import MESSAGES
from worker.jobs.store import NewItem


def test_an_expression_without_a_model_is_refused_at_upload(client, app, queue, video_bytes):
    files = [("video", ("a.mp4", video_bytes, "video/mp4")), ("video", ("b.mp4", video_bytes, "video/mp4"))]
    r = client.post("/v1/assessments", files=files, data={"expression": ["smile", "kiss"]})
    assert r.status_code == 422, r.text
    p = r.json()
    assert p["code"] == "model_unavailable" and r.headers["content-type"].startswith("application/problem+json")
    assert p["details"] == {"index": 1, "expression": "kiss", "served": ["smile", "frown"]}
    assert p["title"] == MESSAGES["model_unavailable"][0]
    assert p["detail"].startswith("Video 1: no model is loaded for the expression 'kiss'")
    assert p["detail"].endswith(MESSAGES["model_unavailable"][1])
    assert queue.sent == [] and not any(app.state.storage.path("uploads").rglob("*.video*"))


def test_upload_problems_name_the_video_as_details_index_does(client, video_bytes):
    files = [("video", ("a.mp4", video_bytes, "video/mp4")), ("video", ("b.mp4", b"", "video/mp4"))]
    p = client.post("/v1/assessments", files=files, data={"expression": ["smile", "frown"]}).json()
    assert p["code"] == "empty_file" and p["details"]["index"] == 1 and p["detail"].startswith("Video 1 is empty.")
    bad = client.post("/v1/assessments", files=files, data={"expression": ["smile", "kiss"], "protocol": "pfed5"})
    assert bad.json()["details"]["index"] == 1 and "video 1" in bad.json()["detail"]


def test_messages_are_served_for_the_web_form(client):
    body = client.get("/v1/messages").json()["messages"]
    assert set(body) == set(MESSAGES)
    assert body["face_too_small"]["what_to_do"] == MESSAGES["face_too_small"][1]


def test_failed_items_and_fhir_texts_are_plain(client, app):
    store = app.state.store
    aid = store.new_id()
    store.create_assessment(aid, "local", [NewItem("smile", f"uploads/{aid}/0.video", "0", 1),
                                           NewItem("frown", f"uploads/{aid}/1.video", "0", 1)])
    failed, abstained = store.item_ids(aid)
    store.claim_item(failed, "w", 3)
    store.fail_item(failed, "not_a_video", "not a readable video file (InvalidDataError)")
    store.claim_item(abstained, "w", 3)
    store.finish_item(abstained, {"score": None, "abstained": True, "reasons": ["too_dark", "head_turned"]}, {}, {})
    err = client.get(f"/v1/assessments/{aid}").json()["items"][0]["error"]
    assert err["code"] == "not_a_video" and err["title"] == MESSAGES["not_a_video"][0]
    assert err["message"] == "Not a readable video file. " + MESSAGES["not_a_video"][1]
    c_failed, c_abstained = client.get(f"/v1/assessments/{aid}/fhir").json()["component"]
    assert c_failed["dataAbsentReason"]["text"] == err["message"]
    assert c_abstained["dataAbsentReason"]["text"] == f"{MESSAGES['too_dark'][0]} {MESSAGES['head_turned'][0]}"
