"""Liveness (/healthz) and readiness (/readyz: the database answers and a worker has every model it
needs, scoring and face models, loaded and warmed, as its heartbeat in the job store says). /readyz also
lists per worker the model versions it serves and flags version skew (`version_skew`: expression -> the
versions served, empty when every worker serves the same ones); skew does not make the service unready."""
from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from service.api.deps import SettingsDep, StoreDep
from service.api.fleet import fleet
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
    f = fleet(store, settings) if checks["database"] == "ok" else None
    workers = f.workers if f else []
    checks["workers"] = [{"id": w.id, "models": list(w.models), "face_models": w.face_models, "busy": w.busy,
                          "versions": {e: m.get("version") for e, m in w.models.items()}} for w in workers]
    checks["version_skew"] = f.skew if f else {}
    ok = checks["database"] == "ok" and bool(workers)
    if not workers:
        checks["reason"] = "no worker has reported its models loaded and warmed"
    return JSONResponse({"status": "ok" if ok else "not_ready", "checks": checks}, status_code=200 if ok else 503)
