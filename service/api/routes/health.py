"""Liveness (/healthz) and readiness (/readyz: the database answers and a worker has every model it
needs, scoring and face models, loaded and warmed, as its heartbeat in the job store says)."""
from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from service.api.deps import SettingsDep, StoreDep
from service.schemas import Health

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health)
def healthz() -> dict:
    return {"status": "ok", "checks": {}}


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
def readyz(store: StoreDep, settings: SettingsDep) -> JSONResponse:
    checks: dict = {}
    try:
        with store.session() as s:
            s.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # any driver error means not ready
        checks["database"] = f"error: {type(exc).__name__}"
    workers = [] if checks["database"] != "ok" else store.ready_workers(settings.heartbeat_max_age_s)
    checks["workers"] = [{"id": w.worker_id, "models": [m.get("expression") for m in (w.models or [])],
                          "face_models": [m.get("name") for m in (w.detail or {}).get("face_models") or []]}
                         for w in workers]
    ok = checks["database"] == "ok" and bool(workers)
    if not workers:
        checks["reason"] = "no worker has reported its models loaded and warmed"
    return JSONResponse({"status": "ok" if ok else "not_ready", "checks": checks}, status_code=200 if ok else 503)
