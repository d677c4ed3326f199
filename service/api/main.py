"""The FastAPI app factory: `create_app(settings)`; uvicorn serves `service.api.main:app_factory`."""
from __future__ import annotations

import logging
import os

from fastapi import FastAPI

from service import problems
from service.api import metrics, openapi
from service.api.deps import KeyCache
from service.api.guard import Guard
from service.api.ratelimit import make_limiter
from service.api.routes import assessments, docs, health, models, patients, web
from service.queue import Queue
from worker.jobs.db import schema_revision
from worker.jobs.housekeeping import purge
from worker.jobs.storage import PRIVATE_UMASK, open_storage
from worker.jobs.store import Store
from worker.settings import Settings, get_settings

log = logging.getLogger("feqa.api")

DESCRIPTION = """Facial expression quality assessment (TraMP-Former) for movement-disorder clinics.

Upload face videos with the expression performed in each; poll the assessment; read the
per-expression score (0 normal .. 4 severe), the model facts, the quality report, or a FHIR R4
Observation. Errors are RFC 9457 problem+json with a stable `code`. Scores are automated
estimates, preliminary until a clinician signs them."""


def create_app(settings: Settings | None = None, *, queue: Queue | None = None) -> FastAPI:
    settings = settings or get_settings()
    os.umask(PRIVATE_UMASK)   # every file this process writes (uploads, the SQLite store) is 0600, dirs 0700
    app = FastAPI(title="FEQA clinical inference API", version="1", description=DESCRIPTION,
                  openapi_url="/openapi.json", docs_url=None, redoc_url=None,
                  generate_unique_id_function=openapi.operation_id)
    app.state.settings = settings
    app.state.store = Store(settings.db_url)   # the schema is `feqa migrate`'s job, not the API's
    _warn_if_schema_old(settings.db_url)
    app.state.storage = open_storage(settings)
    app.state.queue = queue or Queue(settings)
    if queue is None:
        _ = app.state.queue.celery   # import Celery now rather than in the first upload
    app.state.key_cache = KeyCache()
    app.state.rate_limiter = make_limiter(settings.rate_limit_per_minute, "api-key",
                                          backend=settings.rate_limit_backend, redis_url=settings.redis_url,
                                          scope=settings.queue)
    app.state.sign_in_limiter = make_limiter(settings.sign_in_per_minute, "sign-in",
                                             backend=settings.rate_limit_backend, redis_url=settings.redis_url,
                                             scope=settings.queue)
    app.state.sign_in_throttled = {}   # client address -> when last audited as throttled
    app.state.metrics = metrics.Metrics(app.state.store, settings)
    app.add_middleware(metrics.MetricsMiddleware, metrics=app.state.metrics)
    app.add_middleware(Guard, settings=settings)   # outermost: limits, no-store, quiet failures
    problems.install(app)
    openapi.install(app)
    for router in (assessments.router, patients.router, models.router, health.router, metrics.router):
        app.include_router(router)
    app.include_router(docs.router)  # GET /docs and /static/swagger/* (before the web form's /static/*)
    app.include_router(web.router)  # the web form: GET /, /static/*, /v1/session
    try:
        purge(app.state.store, app.state.storage, settings)
    except Exception:   # housekeeping must not keep the API from starting
        log.exception("purge at start failed")
    return app


def _warn_if_schema_old(url: str) -> None:
    try:
        current, head = schema_revision(url)
    except Exception:   # the database may be down now and up later: /readyz and the problems say so
        log.exception("could not read the job store's schema revision")
        return
    if current != head:
        log.error("the job store's schema is at revision %s, the newest is %s: run `feqa migrate`",
                  current or "none", head)


def app_factory() -> FastAPI:
    return create_app()
