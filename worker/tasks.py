"""Celery tasks: thin, they take an item id, fetch what they need and call worker.pipeline.

Each worker process loads its Scorer once after fork (worker_process_init; for the solo pool,
when the worker is ready), warms it, and writes a heartbeat with its models to the job store:
/readyz reads it. The same heartbeat thread purges expired data and re-queues items whose
worker died (the SQLite broker, unlike Redis, never redelivers a message lost with its worker).
"""
from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_init, worker_process_shutdown, worker_shutdown

from model.errors import FeqaError, InputError
from service.settings import get_settings
from service.storage import LocalStorage
from service.store import Store
from worker.celery_app import TASK_ASSESS, TASK_PURGE, app

log = logging.getLogger("feqa.worker")
HOST = socket.gethostname()


@dataclass
class ProcessState:
    store: Store
    storage: LocalStorage
    worker_id: str
    scorer: object | None = None
    models: list[dict] = field(default_factory=list)
    warmed: bool = False
    problem: str | None = None
    stop: threading.Event = field(default_factory=threading.Event)


_state: ProcessState | None = None
_state_lock = threading.Lock()


def state() -> ProcessState:
    """This process's store, storage and Scorer (created on first use, after any fork)."""
    global _state
    with _state_lock:
        if _state is None or _state.worker_id != f"{HOST}:{os.getpid()}":
            settings = get_settings()
            _state = ProcessState(store=Store(settings.db_url), storage=LocalStorage(settings.storage_root),
                                  worker_id=f"{HOST}:{os.getpid()}")
        return _state


def load_models(st: ProcessState) -> None:
    """Load every model of the model directory once, then run each on zeros so the first real
    request pays no first-call cost."""
    from model.scorer import Scorer

    settings = get_settings()
    try:
        scorer = Scorer(settings.model_dir, providers=settings.providers, intra_op_threads=settings.intra_op_threads)
        expressions = list(scorer.expressions())
        if not expressions:
            raise FileNotFoundError(f"no models in {settings.model_dir}")
        scorer.warmup()
    except Exception as exc:   # stay up and say why in the heartbeat; /readyz stays 503
        st.problem = f"{type(exc).__name__}: {exc}"
        log.error("models not loaded from %s: %s", settings.model_dir, st.problem)
        return
    st.scorer = scorer
    st.models = [{k: scorer.manifest(e).get(k) for k in ("name", "version", "expression", "sha256", "trained_on")}
                 for e in expressions]
    st.warmed = True
    log.info("worker %s ready with %d model(s)", st.worker_id, len(expressions))


def _beat(st: ProcessState) -> None:
    detail = {"problem": st.problem, "pid": os.getpid(), "host": HOST}
    st.store.heartbeat(st.worker_id, st.models, st.warmed, detail)


def heartbeat_loop(st: ProcessState) -> None:
    settings = get_settings()
    n = 0
    while not st.stop.wait(0 if n == 0 else settings.heartbeat_interval_s):
        try:
            if n and n % 6 == 0 and not st.warmed:
                load_models(st)   # models shipped after the worker started: become ready without a restart
            _beat(st)
            if n % 6 == 0:
                housekeeping(st)
        except Exception:   # a database hiccup must not kill the heartbeat thread
            log.exception("heartbeat failed")
        n += 1


def housekeeping(st: ProcessState) -> None:
    from service.housekeeping import purge

    settings = get_settings()
    purge(st.store, st.storage, settings)
    lost = st.store.requeue_orphans(lambda w: worker_alive(st, w), older_than_s=settings.visibility_timeout_s)
    if lost:
        log.warning("re-queueing %d item(s) whose worker stopped", len(lost))
        for item_id in lost:
            assess_item.apply_async(args=[item_id], queue=settings.queue)


def worker_alive(st: ProcessState, worker_id: str) -> bool:
    host, _, pid = worker_id.rpartition(":")
    if host == HOST and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
    return st.store.heartbeat_age(worker_id) < get_settings().heartbeat_max_age_s


def start_process() -> None:
    """Load the models and start the heartbeat in this process (prefork children and the solo pool,
    which sends worker_process_init too)."""
    st = state()
    if st.warmed:
        return
    load_models(st)
    threading.Thread(target=heartbeat_loop, args=(st,), name="feqa-heartbeat", daemon=True).start()


def stop_process() -> None:
    flush_pictures()
    if _state is not None:
        _state.stop.set()
        try:
            _state.store.drop_heartbeat(_state.worker_id)
        except Exception:
            log.exception("could not remove the heartbeat")


@worker_process_init.connect
def _on_process_init(**_kw) -> None:
    start_process()


@worker_process_shutdown.connect
def _on_process_shutdown(**_kw) -> None:
    stop_process()


@worker_shutdown.connect
def _on_shutdown(**_kw) -> None:
    stop_process()


# --- tasks ------------------------------------------------------------------------------------
class Throttled:
    """Progress writes at most every 5 percent or on a stage change."""

    def __init__(self, store: Store, item_id: int) -> None:
        self.store, self.item_id, self.last = store, item_id, ("", -100.0)

    def __call__(self, stage: str, fraction: float) -> None:
        pct = 100.0 * fraction
        if stage != self.last[0] or pct - self.last[1] >= 5.0:
            self.store.set_progress(self.item_id, stage, pct)
            self.last = (stage, pct)


def run_item(st: ProcessState, item) -> bool:
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
    result, extraction = score_video(st.storage.path(item.video_key), item.expression, st.scorer,
                                     progress=Throttled(st.store, item.id),
                                     limits=ExtractLimits(decode=DecodeLimits(max_duration_s=settings.max_duration_s)))
    if not st.store.finish_item(item.id, result, {}, dict(result.get("timings", {}))):
        return False
    picture_pool().submit(pictures_job, st, item.id, f"artifacts/{item.assessment_id}/{item.idx}", extraction)
    return True


def pictures_job(st: ProcessState, item_id: int, prefix: str, extraction) -> None:
    from service.views import NO_PICTURES
    from worker.pipeline import draw_pictures

    out_dir = st.storage.path(prefix)
    try:
        shutil.rmtree(out_dir, ignore_errors=True)   # a rerun starts clean
        written, seconds = draw_pictures(extraction, out_dir)
        drawn = {name: f"{prefix}/{p.name}" for name, p in written.items()} or {NO_PICTURES: "not drawn"}
        if not st.store.set_artifacts(item_id, drawn, {"plotting": seconds}):
            shutil.rmtree(out_dir, ignore_errors=True)   # deleted while drawing: keep no pictures
    except Exception:   # pictures are an extra: never let them disturb the worker
        log.exception("pictures for item %s failed", item_id)
        try:   # tell clients that no picture will come (API field `pictures: none`)
            st.store.set_artifacts(item_id, {NO_PICTURES: "failed"}, {})
        except Exception:
            log.exception("could not record the missing pictures of item %s", item_id)


_pictures: tuple[int, ThreadPoolExecutor] | None = None


def picture_pool() -> ThreadPoolExecutor:
    """One picture thread per worker process (created after fork)."""
    global _pictures
    if _pictures is None or _pictures[0] != os.getpid():
        _pictures = (os.getpid(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="feqa-pictures"))
    return _pictures[1]


def flush_pictures() -> None:
    """Wait for the pictures in progress (at process shutdown, and in tests)."""
    global _pictures
    if _pictures is not None and _pictures[0] == os.getpid():
        _pictures[1].shutdown(wait=True)
        _pictures = None


def json_safe(details: dict | None) -> dict | None:
    """Error details as plain JSON (they may hold numpy numbers); None when empty."""
    import json

    return json.loads(json.dumps(details, default=lambda o: o.item() if hasattr(o, "item") else str(o))) \
        if details else None


def drop_video(st: ProcessState, item) -> None:
    if get_settings().video_retention_hours <= 0 and item.video_key:
        st.storage.delete(item.video_key)
        st.store.mark_video_deleted(item.id)


@app.task(name=TASK_ASSESS, bind=True, acks_late=True, reject_on_worker_lost=True)
def assess_item(self, item_id: int) -> str:
    """Score one item. Idempotent: a redelivered task finds the item finished and does nothing."""
    settings = get_settings()
    st = state()
    item = st.store.claim_item(item_id, st.worker_id, settings.task_max_retries + 1,
                               alive=lambda w: worker_alive(st, w))
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
    except Exception as exc:           # transient (I/O, database, out of memory): bounded retries
        code = getattr(exc, "code", "internal_error")
        if self.request.retries < settings.task_max_retries and code != "model_unavailable":
            log.warning("item %s: %s, retrying", item_id, type(exc).__name__)
            st.store.release_item(item_id, st.worker_id)
            raise self.retry(countdown=2 ** self.request.retries, max_retries=settings.task_max_retries) from exc
        log.exception("item %s failed", item_id)
        st.store.fail_item(item_id, code, f"scoring failed ({type(exc).__name__}); try again later")
        return code
    if wrote:
        drop_video(st, item)
    return "succeeded" if wrote else "duplicate"


@app.task(name=TASK_PURGE)
def purge_task() -> dict:
    from service.housekeeping import purge

    st = state()
    return purge(st.store, st.storage, get_settings())
