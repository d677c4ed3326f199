"""The worker process's lifecycle: its state, model loading, heartbeat, housekeeping, picture thread
and the Celery signal hooks. `worker.tasks` holds only the tasks and asks this module for the state.

Each worker process loads its Scorer once after fork (worker_process_init; for the solo pool,
when the worker is ready), warms it, and writes a heartbeat with its models to the job store:
/readyz reads it. The same heartbeat thread purges expired data and re-queues items whose
worker died (the SQLite broker, unlike Redis, never redelivers a message lost with its worker).
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from celery.signals import (
    task_postrun,
    task_prerun,
    worker_process_init,
    worker_process_shutdown,
    worker_shutdown,
)

from worker.celery_app import make_celery, send_assess
from worker.jobs.storage import Storage, open_storage
from worker.jobs.store import Store
from worker.settings import Settings, get_settings

if TYPE_CHECKING:
    from model.scorer import Scorer, ScoringModels

log = logging.getLogger("feqa.worker")
HOST = socket.gethostname()

# The worker's Celery app (the API builds its own from its settings and sends tasks by name).
app = make_celery()


@dataclass
class ProcessState:
    store: Store
    storage: Storage
    worker_id: str
    scorer: ScoringModels | None = None
    models: list[dict] = field(default_factory=list)
    face_models: list[dict] = field(default_factory=list)
    warmed: bool = False
    problem: str | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    # Busy share for the scaling signals (/metrics): seconds spent in tasks since the process started.
    started: float = field(default_factory=time.monotonic)
    busy_s: float = 0.0
    busy_since: float | None = None           # when the first of the running tasks started
    running: int = 0
    busy_lock: threading.Lock = field(default_factory=threading.Lock)

    def busy_seconds(self) -> float:
        return self.busy_s + (time.monotonic() - self.busy_since if self.busy_since is not None else 0.0)


_state: ProcessState | None = None
_state_lock = threading.Lock()


def this_worker_id() -> str:
    return f"{HOST}:{os.getpid()}"


def state() -> ProcessState:
    """This process's store, storage and Scorer (created on first use, after any fork)."""
    global _state
    with _state_lock:
        if _state is None or _state.worker_id != this_worker_id():
            settings = get_settings()
            _state = ProcessState(store=Store(settings.db_url), storage=open_storage(settings),
                                  worker_id=this_worker_id())
        return _state


def install(st: ProcessState | None) -> ProcessState | None:
    """Make `st` this process's state (tests and embedded runs); returns the one it replaces."""
    global _state
    with _state_lock:
        previous, _state = _state, st
        return previous


def warm_face_models() -> list[dict]:
    """Load the face detector and landmarker this process tracks with (the ones extraction uses,
    worker.face.default_mesh) and run each once, so the first video pays no load or first-call cost.
    Returns their facts for the heartbeat."""
    from model.manifest import sha256_file
    from worker.face import ASSETS, DETECTOR_FILE, LANDMARK_FILE, Roi, default_mesh

    mesh = default_mesh()
    blank = np.zeros((256, 256, 3), np.uint8)
    mesh.detector(blank)
    mesh.landmarker(blank, Roi(128.0, 128.0, 192.0))
    return [{"name": name, "sha256": sha256_file(ASSETS / name)} for name in (DETECTOR_FILE, LANDMARK_FILE)]


def local_scorer(settings: Settings) -> tuple[Scorer, str]:
    """This host's own Scorer (the worker's, or `feqa scorer`'s) and where its models came from: FEQA_MODEL_STORE
    (a folder or s3://...) or FEQA_MODEL_DIR, on FEQA_PROVIDERS with FEQA_CUDA_DEVICE_ID's GPU."""
    from model.batcher import providers_for
    from model.scorer import Scorer
    from worker.model_store import resolve_model_dir

    model_dir = resolve_model_dir(settings)
    scorer = Scorer(model_dir, providers=providers_for(settings.providers, settings.cuda_device_id),
                    intra_op_threads=settings.intra_op_threads)
    return scorer, str(settings.model_store or model_dir)


def load_models(st: ProcessState) -> None:
    """Load every model this worker needs once (the scoring models of the model directory and the face
    models), then run each on zeros so the first real request pays no first-call cost. Only then is the
    worker warmed (and /readyz ready)."""
    from model.scorer import Scorer

    settings = get_settings()
    try:
        from model.batcher import BatchingScorer
        from worker.score_server import RemoteScorer

        scorer: Scorer | BatchingScorer | RemoteScorer
        if settings.scorer_socket:   # the host's scorer process holds the models and batches across processes
            scorer = RemoteScorer(settings.scorer_socket, settings.secret_key)
            where = f"the scorer process at {settings.scorer_socket}"
        else:
            scorer, where = local_scorer(settings)
        expressions = list(scorer.expressions())
        if not expressions:
            raise FileNotFoundError(f"no models in {where}")
        scorer.warmup()
        face_models = st.face_models or warm_face_models()
        if settings.score_batch_wait_ms > 0 and isinstance(scorer, Scorer):   # batch the concurrent tasks' windows
            scorer = BatchingScorer(scorer, settings.score_max_batch, settings.score_batch_wait_ms / 1000)
    except Exception as exc:   # stay up and say why in the heartbeat; /readyz stays 503
        st.problem = f"{type(exc).__name__}: {exc}"
        log.error("models not loaded from %s: %s", settings.model_dir, st.problem)
        return
    st.scorer, st.face_models = scorer, face_models
    st.models = [{k: scorer.manifest(e).get(k) for k in ("name", "version", "expression", "sha256", "trained_on")}
                 for e in expressions]
    st.warmed = True
    log.info("worker %s ready with %d model(s)", st.worker_id, len(expressions))


def _beat(st: ProcessState) -> None:
    settings = get_settings()
    detail = {"problem": st.problem, "pid": os.getpid(), "host": HOST, "face_models": st.face_models,
              "queue": settings.queue, "busy": st.busy_since is not None, "busy_s": round(st.busy_seconds(), 3),
              "up_s": round(time.monotonic() - st.started, 3)}
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
    from worker.jobs.housekeeping import purge

    settings = get_settings()
    purge(st.store, st.storage, settings)
    lost = st.store.requeue_orphans(lambda w: worker_alive(st, w), older_than_s=settings.visibility_timeout_s)
    if lost:
        log.warning("re-queueing %d item(s) whose worker stopped", len(lost))
        send_assess(app, lost, settings.queue)


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
    from worker.jobs.storage import PRIVATE_UMASK

    os.umask(PRIVATE_UMASK)   # pictures and anything else written here: 0600 files, 0700 directories
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


@task_prerun.connect
def _on_task_start(**_kw: Any) -> None:
    st = state()
    with st.busy_lock:
        if st.running == 0:
            st.busy_since = time.monotonic()
        st.running += 1


@task_postrun.connect
def _on_task_end(**_kw: Any) -> None:
    st = state()
    with st.busy_lock:   # busy = at least one task running (a threads pool runs several at once)
        st.running = max(0, st.running - 1)
        if st.running == 0 and st.busy_since is not None:
            st.busy_s += time.monotonic() - st.busy_since
            st.busy_since = None


@worker_process_init.connect
def _on_process_init(**_kw: Any) -> None:
    start_process()


@worker_process_shutdown.connect
def _on_process_shutdown(**_kw: Any) -> None:
    stop_process()


@worker_shutdown.connect
def _on_shutdown(**_kw: Any) -> None:
    stop_process()


# --- the picture thread -------------------------------------------------------------------------
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
