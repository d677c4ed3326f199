"""GET /v1/models: per protocol, which tasks are served (and why not); the model manifests.
GET /v1/messages: the plain-language message of every code (the web form and clients show them)."""
from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from model.messages import table
from service.api.deps import PrincipalDep, SettingsDep, StoreDep
from service.schemas import MessagesOut, ModelsOut
from service.served import protocols_out, served

router = APIRouter(prefix="/v1", tags=["models"])


@router.get("/models", response_model=ModelsOut)
async def list_models(settings: SettingsDep, store: StoreDep, _principal: PrincipalDep) -> dict:
    """The expressions served, per protocol each task with its model or why it is not served, and the
    manifests of the served models. An upload for a task that is not served is refused (422
    `model_unavailable`)."""
    s = await run_in_threadpool(served, store, settings)
    models = [{"name": str(m.get("name", "")), "version": str(m.get("version", "")), "expression": e,
               "sha256": m.get("sha256"), "trained_on": m.get("trained_on"),
               "clinical_use": bool(m.get("clinical_use", False)), "manifest": m} for e, m in s.models.items()]
    return {"expressions": s.expressions, "protocols": protocols_out(s), "models": models, "source": s.source,
            "problem": s.problem}


@router.get("/messages", response_model=MessagesOut)
async def list_messages(_principal: PrincipalDep) -> dict:
    """Every stable code (errors, quality reasons, findings) with what happened and what to do."""
    return {"messages": table()}
