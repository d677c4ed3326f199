"""The Celery task run in-process (Celery's apply) on a real video with real untrained models:
exactly-once results, video errors fail without retry, the video is deleted after scoring."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import VIDEOS
from worker.jobs.db import migrate
from worker.jobs.storage import LocalStorage
from worker.jobs.store import NewItem, Store


@pytest.fixture()
def task_env(tmp_path, model_dir):
    from model.scorer import Scorer
    from worker import runtime, tasks

    migrate(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    st = runtime.ProcessState(store=Store(f"sqlite:///{tmp_path / 'db.sqlite3'}"),
                            storage=LocalStorage(tmp_path / "storage"), worker_id=runtime.this_worker_id())
    st.scorer, st.warmed = Scorer(model_dir), True
    saved = runtime.install(st)
    yield tasks, st
    runtime.install(saved)


def add_item(st, video: Path, expression: str = "smile") -> int:
    aid = st.store.new_id()
    key = f"uploads/{aid}/0.video"
    st.storage.put_file(key, video)
    st.store.create_assessment(aid, "t", [NewItem(expression, key, "0", video.stat().st_size)])
    return st.store.item_ids(aid)[0]


def test_a_task_delivered_twice_writes_one_result(task_env, video_path):
    tasks, st = task_env
    item_id = add_item(st, video_path)
    assert tasks.assess_item.apply(args=[item_id]).get() == "succeeded"
    from worker import runtime

    runtime.flush_pictures()   # the pictures are drawn on the process's picture thread
    first = st.store.get_item(item_id)
    assert first.status == "succeeded" and 0 <= first.result["score"] <= 4
    assert set(first.artifacts) == {"overlay", "trajectories"}
    # the uploaded video is gone (retention 0 h), and a redelivery changes nothing
    assert not st.storage.exists(first.video_key) and first.video_deleted_at is not None
    assert tasks.assess_item.apply(args=[item_id]).get() == "skipped"
    again = st.store.get_item(item_id)
    assert again.result == first.result and again.attempts == 1
    assert sorted(s for s, n, _ in st.store.stage_stats() if n == 1) == sorted(
        set(first.result["timings"]) | {"plotting"})


def test_a_video_error_fails_the_item_with_its_code_and_no_retry(task_env):
    tasks, st = task_env
    no_face = VIDEOS / "pyfeat_no_face.mp4"
    if not no_face.is_file():
        pytest.fail(f"{no_face} is missing")
    item_id = add_item(st, no_face)
    assert tasks.assess_item.apply(args=[item_id]).get() == "no_face"
    it = st.store.get_item(item_id)
    assert (it.status, it.error_code, it.attempts) == ("failed", "no_face", 1)
    assert "face" in it.error_message
    assert it.error_details["quality"]["scorable"] is False   # the quality report says why


def test_an_expression_without_a_model_fails_as_model_unavailable(task_env, video_path):
    tasks, st = task_env
    item_id = add_item(st, video_path, expression="frown")
    assert tasks.assess_item.apply(args=[item_id]).get() == "model_unavailable"
    it = st.store.get_item(item_id)
    assert it.error_code == "model_unavailable"
    # the scorer's own text names the model directory: the item's message (shown to users) must not
    assert it.error_message == "no model is loaded for this expression on the worker"


def test_transient_errors_are_retried_twice_then_fail(task_env, video_path, monkeypatch):
    tasks, st = task_env
    item_id = add_item(st, video_path)
    calls = []

    def flaky(state, item):
        calls.append(item.attempts)
        raise OSError("storage hiccup")

    monkeypatch.setattr(tasks, "run_item", flaky)
    tasks.assess_item.apply(args=[item_id])   # eager: Celery re-applies each retry in place
    it = st.store.get_item(item_id)
    # three runs in all (the first + 2 retries), each claiming the item again; then failed for good
    assert calls == [1, 2, 3]
    assert (it.status, it.error_code) == ("failed", "internal_error")


def test_a_result_that_does_not_validate_fails_once_without_retries(task_env, video_path, monkeypatch):
    # given a pipeline that builds a result off its scale (a bug), when the task runs, then the item fails
    # with internal_error after one run (a retry would only repeat it) and nothing is stored as a result
    tasks, st = task_env
    item_id = add_item(st, video_path)
    calls = []

    def off_scale(video, expression, scorer, **kw):
        calls.append(1)
        return {"expression": expression, "score": 7.0, "score_rounded": 7}, None

    monkeypatch.setattr("worker.pipeline.score_video", off_scale)
    assert tasks.assess_item.apply(args=[item_id]).get() == "internal_error"
    it = st.store.get_item(item_id)
    assert calls == [1] and (it.status, it.error_code, it.result) == ("failed", "internal_error", None)
