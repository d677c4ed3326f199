"""Client-facing fields: the per-item `pictures` state, `details.index` on expression errors, and
an offline /docs page (Swagger UI from the installed swagger-ui-bundle, no CDN)."""
from __future__ import annotations

import base64
import hashlib
import re
from datetime import UTC, datetime, timedelta

import pytest

from service.views import PICTURES_GRACE_S, pictures_state
from worker.jobs.status import NO_PICTURES
from worker.jobs.store import NewItem


def _item(app, status="queued"):
    store = app.state.store
    aid = store.new_id()
    store.create_assessment(aid, "local", [NewItem("smile", f"uploads/{aid}/0.video", "0", 1)])
    item_id = store.item_ids(aid)[0]
    return aid, item_id


def _pictures(client, aid):
    return [(i["status"], i["pictures"], i["links"]["overlay"]) for i in
            client.get(f"/v1/assessments/{aid}").json()["items"]]


def test_pictures_follow_the_item_from_pending_to_ready(client, app):
    store = app.state.store
    aid, item_id = _item(app)
    assert _pictures(client, aid) == [("queued", "pending", None)]
    assert store.claim_item(item_id, "w1", 3) is not None
    assert _pictures(client, aid) == [("running", "pending", None)]
    assert store.finish_item(item_id, {"expression": "smile", "score": 1.0}, {}, {})
    assert _pictures(client, aid) == [("succeeded", "pending", None)]    # published, pictures not drawn yet
    assert store.set_artifacts(item_id, {"overlay": f"artifacts/{aid}/0/overlay.png"}, {})
    [(status, pictures, overlay)] = _pictures(client, aid)
    assert (status, pictures) == ("succeeded", "ready") and overlay.endswith("/items/0/overlay.png")
    client.delete(f"/v1/assessments/{aid}")
    assert store.get_item(item_id).artifacts is None
    assert pictures_state(store.get_item(item_id)) == "none"      # deleted with the assessment


def test_pictures_none_for_failed_items_and_when_none_could_be_drawn(client, app):
    store = app.state.store
    aid, item_id = _item(app)
    store.claim_item(item_id, "w1", 3)
    store.fail_item(item_id, "no_face", "no face")
    assert _pictures(client, aid) == [("failed", "none", None)]
    aid2, item2 = _item(app)
    store.claim_item(item2, "w1", 3)
    store.finish_item(item2, {"expression": "smile", "abstained": True}, {}, {})
    store.set_artifacts(item2, {NO_PICTURES: "failed"}, {})        # what the worker records on failure
    assert _pictures(client, aid2) == [("succeeded", "none", None)]


def test_pictures_none_when_the_worker_died_before_drawing(app):
    store = app.state.store
    _, item_id = _item(app)
    store.claim_item(item_id, "w1", 3)
    store.finish_item(item_id, {"expression": "smile", "score": 1.0}, {}, {})
    it = store.get_item(item_id)
    finished = it.finished_at if it.finished_at.tzinfo else it.finished_at.replace(tzinfo=UTC)
    assert pictures_state(it, now=finished + timedelta(seconds=5)) == "pending"
    assert pictures_state(it, now=finished + timedelta(seconds=PICTURES_GRACE_S + 1)) == "none"
    assert pictures_state(it, now=datetime.now(UTC)) == "pending"


def test_the_worker_records_no_pictures_when_drawing_fails(tmp_path, monkeypatch):
    from worker import pipeline, runtime, tasks
    from worker.jobs.db import migrate
    from worker.jobs.storage import LocalStorage
    from worker.jobs.store import Store

    migrate(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    st = runtime.ProcessState(store=Store(f"sqlite:///{tmp_path / 'db.sqlite3'}"),
                            storage=LocalStorage(tmp_path / "storage"), worker_id="w1")
    aid = st.store.new_id()
    st.store.create_assessment(aid, "t", [NewItem("smile", f"uploads/{aid}/0.video", "0", 1)])
    item_id = st.store.item_ids(aid)[0]
    st.store.claim_item(item_id, "w1", 3)
    st.store.finish_item(item_id, {"expression": "smile"}, {}, {})

    def broken(extraction, out_dir):
        raise RuntimeError("matplotlib exploded")

    monkeypatch.setattr(pipeline, "draw_pictures", broken)
    tasks.pictures_job(st, item_id, f"artifacts/{aid}/0", extraction=None)
    assert pictures_state(st.store.get_item(item_id)) == "none"
    monkeypatch.setattr(pipeline, "draw_pictures", lambda extraction, out_dir: ({}, 0.1))
    tasks.pictures_job(st, item_id, f"artifacts/{aid}/0", extraction=None)
    assert st.store.get_item(item_id).artifacts == {NO_PICTURES: "not drawn"}


def _videos(video_bytes, n):
    return [("video", (f"{i}.mp4", video_bytes, "video/mp4")) for i in range(n)]


@pytest.mark.parametrize("data,n_videos,code,index", [
    ({"expression": ["smile", "grin", "frown"]}, 3, "unknown_expression", 1),
    ({"expression": ["smile", "frown", "blow"], "protocol": "pfed5"}, 3, "unknown_expression", 2),
    ({"expression": ["smile"]}, 2, "expression_mismatch", 1),          # video #1 has no expression
    ({"expression": ["smile", "frown", "smile"]}, 2, "expression_mismatch", 2),   # expression #2 has no video
    ({"protocol": "pfed5"}, 2, "expression_mismatch", 0),
])
def test_expression_errors_name_the_offending_part(client, queue, video_bytes, data, n_videos, code, index):
    r = client.post("/v1/assessments", files=_videos(video_bytes, n_videos), data=data)
    body = r.json()
    assert r.status_code == 422 and body["code"] == code, body
    assert body["details"]["index"] == index
    assert queue.sent == []


def test_docs_are_served_offline_with_a_csp_that_allows_them(client):
    r = client.get("/docs")
    assert r.status_code == 200 and "swagger-ui" in r.text
    urls = re.findall(r'(?:src|href)="([^"]*)"', r.text) + re.findall(r"url: '([^']*)'", r.text)
    assert "/openapi.json" in urls and len(urls) >= 4
    assert all(u.startswith("/") and not u.startswith("//") for u in urls), urls
    assert "cdn" not in r.text and "validator.swagger.io" not in r.text
    csp = r.headers["content-security-policy"]
    assert "'unsafe-inline'" not in csp and "script-src 'self' 'sha256-" in csp
    [inline] = re.findall(r"<script>(.*?)</script>", r.text, re.S)      # the Swagger UI set-up
    assert "'sha256-" + base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode() + "'" in csp
    for u in urls:
        if u != "/openapi.json":
            got = client.get(u)
            assert got.status_code == 200 and len(got.content) > 500, u
    assert client.get("/static/swagger/swagger-ui-bundle.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/static/swagger/index.html").status_code == 404
    assert client.get("/static/swagger/../../service/settings.py").status_code == 404
    assert client.get("/redoc").status_code == 404           # redoc loads a CDN script: not offered


def test_the_python_client_waits_only_for_pending_pictures():
    from service.client import _pictures_pending

    def job(*states):
        return {"items": [{"status": "succeeded", "pictures": s, "links": {"overlay": None}} for s in states]}

    assert _pictures_pending(job("ready", "pending"))
    assert not _pictures_pending(job("ready", "none"))     # failed drawing: stop waiting (was: wait forever)
    assert _pictures_pending({"items": [{"status": "succeeded", "links": {}}]})   # an older server
