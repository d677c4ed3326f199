"""GET /v1/models: the expressions and model manifests the workers serve."""
from __future__ import annotations

from fastapi import APIRouter

from model.contract import EXPRESSIONS, PROTOCOLS
from service.api.deps import PrincipalDep, SettingsDep
from service.manifests import read_manifests
from service.schemas import ModelsOut

router = APIRouter(prefix="/v1", tags=["models"])


@router.get("/models", response_model=ModelsOut)
def list_models(settings: SettingsDep, _principal: PrincipalDep) -> dict:
    manifests, problem = read_manifests(settings.model_dir)
    models = [{"name": m["name"], "version": str(m.get("version", "")), "expression": m["expression"],
               "sha256": m.get("sha256"), "trained_on": m.get("trained_on"),
               "clinical_use": bool(m.get("clinical_use", False)), "manifest": m} for m in manifests]
    served = {m["expression"] for m in manifests}
    return {"model_dir": str(settings.model_dir), "expressions": [e for e in EXPRESSIONS if e in served],
            "protocols": {k: list(v) for k, v in PROTOCOLS.items()}, "models": models, "problem": problem}
