"""Celery tasks: thin, they take an item id, fetch what they need and call worker.pipeline.

The worker process's lifecycle (state, models, heartbeat, housekeeping, picture thread, signal
hooks) lives in worker.runtime; importing this module registers both with the worker's Celery app.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from pydantic import ValidationError

from model.errors import FeqaError, InputError
from worker.celery_app import TASK_ASSESS, TASK_PURGE, send_assess
from worker.jobs.db import Item
from worker.jobs.keys import artifacts_prefix
from worker.jobs.status import NO_PICTURES
from worker.jobs.store import PinMismatch, Store
from worker.result import validated
from worker.runtime import ProcessState, app, load_models, picture_pool, state, worker_alive
from worker.settings import get_settings

log = logging.getLogger("feqa.worker")
# What a failed item says for an unexpected error: its own text may name classes or server paths.
UNEXPECTED = {"model_unavailable": "no model is loaded for this expression on the worker",
              "model_checksum_mismatch": "the model file for this expression is damaged",
              "scorer_unavailable": "the host's scoring process could not be reached",
              "internal_error": "the video could not be scored"}


# --- tasks ------------------------------------------------------------------------------------
class Throttled:
    """Progress writes at most every 5 percent or on a stage change, only while `worker` holds the item."""

    def __init__(self, store: Store, item_id: int, worker: str | None = None) -> None:
        self.store, self.item_id, self.worker, self.last = store, item_id, worker, ("", -100.0)

    def __call__(self, stage: str, fraction: float) -> None:
        pct = 100.0 * fraction
        if stage != self.last[0] or pct - self.last[1] >= 5.0:
            self.store.set_progress(self.item_id, stage, pct, worker=self.worker)
            self.last = (stage, pct)


def run_item(st: ProcessState, item: Item) -> bool:
    """Score the item and publish the result; the pictures are drawn afterwards on this process's
    picture thread, so the next item's tracking overlaps them. Returns whether this run wrote the
    result (False when the assessment was deleted meanwhile)."""
    from worker.extract import ExtractLimits
    from worker.pipeline import score_video
    from worker.video import DecodeLimits

    settings = get_settings()
    if st.scorer is None:
        load_models(st)
    if st.scorer is None:
        raise FeqaError(f"no model loaded: {st.problem}", code="model_unavailable", http_status=503)
    assert item.video_key is not None   # claim_item hands out only items that still have their video
    # A local path for the length of the scoring: the file itself on a local directory, a private
    # temporary copy (removed afterwards) from object storage.
    with st.storage.fetch(item.video_key) as video:
        result, extraction = score_video(video, item.expression, st.scorer, progress=Throttled(st.store, item.id, st.worker_id),
                                         limits=ExtractLimits(decode=DecodeLimits(max_duration_s=settings.max_duration_s)))
    result = validated(result)   # the stored (and served) result is always a valid ItemResult
    if not st.store.finish_item(item.id, result, {}, dict(result.get("timings", {})), worker=st.worker_id):
        return False
    picture_pool().submit(pictures_job, st, item.id, artifacts_prefix(item.assessment_id, item.idx), extraction)
    return True


def pictures_job(st: ProcessState, item_id: int, prefix: str, extraction: Any) -> None:
    from worker.pipeline import draw_pictures

    out_dir = Path(tempfile.mkdtemp(prefix="feqa-pictures-"))   # this worker's own disk, 0700
    try:
        st.storage.delete_prefix(prefix)   # a rerun starts clean
        written, seconds = draw_pictures(extraction, out_dir)
        for p in written.values():
            st.storage.put_file(f"{prefix}/{p.name}", p)
        drawn = {name: f"{prefix}/{p.name}" for name, p in written.items()} or {NO_PICTURES: "not drawn"}
        if not st.store.set_artifacts(item_id, drawn, {"plotting": seconds}):
            st.storage.delete_prefix(prefix)   # deleted while drawing: keep no pictures
    except Exception:   # pictures are an extra: never let them disturb the worker
        log.exception("pictures for item %s failed", item_id)
        try:   # tell clients that no picture will come (API field `pictures: none`)
            st.store.set_artifacts(item_id, {NO_PICTURES: "failed"}, {})
        except Exception:
            log.exception("could not record the missing pictures of item %s", item_id)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def json_safe(details: dict | None) -> dict | None:
    """Error details as plain JSON (they may hold numpy numbers); None when empty."""
    import json

    return json.loads(json.dumps(details, default=lambda o: o.item() if hasattr(o, "item") else str(o))) \
        if details else None


def drop_video(st: ProcessState, item: Item) -> None:
    if get_settings().video_retention_hours <= 0 and item.video_key:
        st.storage.delete(item.video_key)
        st.store.mark_video_deleted(item.id)


@app.task(name=TASK_ASSESS, bind=True, acks_late=True, reject_on_worker_lost=True)
def assess_item(self: Task, item_id: int) -> str:
    """Score one item. Idempotent: a redelivered task finds the item finished and does nothing."""
    settings = get_settings()
    st = state()
    if st.scorer is None:
        load_models(st)   # the claim pins the assessment to the models loaded here: load them first
    try:
        item = st.store.claim_item(item_id, st.worker_id, settings.task_max_retries + 1,
                                   alive=lambda w: worker_alive(st, w), models=st.models)
    except PinMismatch as pin:
        return leave_pinned(st, pin)
    if item is None:
        return "skipped"
    try:
        wrote = run_item(st, item)
    except InputError as exc:          # VideoError and friends: the input will not get better
        st.store.fail_item(item_id, exc.code, exc.message, json_safe(exc.details))
        drop_video(st, item)
        return exc.code
    except SoftTimeLimitExceeded:
        st.store.fail_item(item_id, "timeout", f"scoring took longer than {settings.task_soft_time_limit_s} s")
        return "timeout"
    except ValidationError:            # the pipeline built a result ItemResult refuses: a bug, a rerun repeats it
        log.exception("item %s: the result did not validate", item_id)
        st.store.fail_item(item_id, "internal_error", UNEXPECTED["internal_error"])
        return "internal_error"
    except Exception as exc:           # transient (I/O, database, out of memory): bounded retries
        code = getattr(exc, "code", "internal_error")
        if self.request.retries < settings.task_max_retries and code != "model_unavailable":
            log.warning("item %s: %s, retrying", item_id, type(exc).__name__)
            st.store.release_item(item_id, st.worker_id)
            raise self.retry(countdown=2 ** self.request.retries, max_retries=settings.task_max_retries) from exc
        log.exception("item %s failed", item_id)
        # The class name goes to the log above, never to the person reading the item (model.messages
        # adds what to do when the API shows it).
        st.store.fail_item(item_id, code, UNEXPECTED.get(code, UNEXPECTED["internal_error"]))
        return code
    if wrote:
        drop_video(st, item)
    return "succeeded" if wrote else "duplicate"


# How soon a worker without an item's pinned model sends its task again: quickly while a worker that has the
# model is live (it takes the task from the queue), else at most every 5 s until FEQA_MODEL_PIN_WAIT_S is over.
PIN_RESEND_S = 1.0
PIN_RESEND_IDLE_S = 5.0


def leave_pinned(st: ProcessState, pin: PinMismatch) -> str:
    """This worker's model for the item's expression is not the one its assessment is pinned to: leave the
    item queued for a worker that has it (sending the task again, to any worker of the queue), or, when none
    has served it for FEQA_MODEL_PIN_WAIT_S, the item has failed with model_version_gone. Never scored here."""
    settings = get_settings()
    outcome = st.store.wait_for_pinned(pin.item_id, pin.expression, pin.pinned, settings.heartbeat_max_age_s,
                                       settings.model_pin_wait_s, queue=settings.queue)
    if outcome in ("served", "waiting"):
        wait = PIN_RESEND_S if outcome == "served" else min(PIN_RESEND_IDLE_S, max(0.5, settings.model_pin_wait_s / 5))
        log.debug("item %s: its assessment is pinned to %s version %s; left for a worker that has it",
                 pin.item_id, pin.expression, pin.pinned.get("version"))
        send_assess(app, [pin.item_id], settings.queue, countdown=wait)
        return "pinned_elsewhere"
    if outcome == "failed":
        log.warning("item %s: no worker serves the pinned %s version %s any more; failed", pin.item_id,
                    pin.expression, pin.pinned.get("version"))
    return "model_version_gone" if outcome == "failed" else "skipped"


@app.task(name=TASK_PURGE)
def purge_task() -> dict:
    from worker.jobs.housekeeping import purge

    st = state()
    return purge(st.store, st.storage, get_settings())
