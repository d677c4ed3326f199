"""/v1/patients/{patient_ref}: one patient's assessments over time (the web form's history view) and their
FHIR Bundle. Tenant-scoped like every read (another clinic's patient with the same reference is not seen),
audited (the ids read, never the reference), and only what is kept: deleting an assessment or its expiry
(result retention) removes it from the history.

A reference may hold "/" (e.g. "ward-3/P-17"), sent as is or percent-encoded (%2F, which the server decodes
before routing): the path converter takes everything up to the last "/assessments" or "/fhir", so the
final segment always names the route."""
from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from service import problems
from service.api.deps import PrincipalDep, SettingsDep, StoreDep
from service.api.routes.assessments import PROBLEM, base_url
from service.schemas import PatientAssessmentsOut
from service.views import assessment_out, fhir_bundle
from worker.jobs.store import Principal, Store
from worker.settings import Settings

router = APIRouter(prefix="/v1/patients", tags=["patients"])
PatientRef = Annotated[str, Path(min_length=1, max_length=256, description="the opaque patient reference "
                                                                          "given at upload")]
MAX_BUNDLE = 1000     # assessments in one FHIR Bundle


def _cursor_out(nxt: tuple[datetime, str] | None) -> str | None:
    if nxt is None:
        return None
    raw = json.dumps({"t": nxt[0].isoformat(), "id": nxt[1]}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _cursor_in(cursor: str | None) -> tuple[datetime, str] | None:
    if not cursor:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return datetime.fromisoformat(str(data["t"])), str(data["id"])
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        raise problems.Problem(422, problems.INVALID_REQUEST, "the cursor is not one this API gave out; "
                               "start again without it", details={"field": "cursor"}) from None


def _since(settings: Settings) -> datetime | None:
    days = settings.result_retention_days
    return datetime.now(UTC) - timedelta(days=days) if days and days > 0 else None


def _page(store: Store, principal: Principal, settings: Settings, ref: str, limit: int, cursor: str | None,
          base: str) -> dict:
    page, nxt = store.patient_assessments(principal.tenant, ref, principal.key_id, limit=limit,
                                          before=_cursor_in(cursor), since=_since(settings))
    return {"patient_ref": ref, "assessments": [assessment_out(base, a, items) for a, items in page],
            "next_cursor": _cursor_out(nxt), "limit": limit}


@router.get("/{patient_ref:path}/assessments", response_model=PatientAssessmentsOut,
            responses={401: PROBLEM, 422: PROBLEM})
async def list_patient_assessments(patient_ref: PatientRef, request: Request, principal: PrincipalDep,
                                   store: StoreDep, settings: SettingsDep,
                                   limit: Annotated[int, Query(ge=1, le=100)] = 20,
                                   cursor: Annotated[str | None, Query(max_length=512)] = None) -> JSONResponse:
    """The patient's assessments in this tenant, newest first, `limit` per page (`next_cursor` for older
    ones): each as GET /v1/assessments/{id} returns it, with its results, scale and measures."""
    body = await run_in_threadpool(_page, store, principal, settings, patient_ref, limit, cursor,
                                   base_url(request, settings))
    return JSONResponse(body)


def _bundle(store: Store, principal: Principal, settings: Settings, ref: str, base: str) -> dict:
    pages: list[Any] = []
    before = None
    while len(pages) < MAX_BUNDLE:
        page, before = store.patient_assessments(principal.tenant, ref, principal.key_id, limit=100,
                                                 before=before, since=_since(settings))
        pages.extend(page)
        if before is None:
            break
    return fhir_bundle(ref, pages[:MAX_BUNDLE], settings.fhir_code_system, base)


@router.get("/{patient_ref:path}/fhir", responses={200: {"content": {"application/fhir+json": {}}}, 401: PROBLEM})
async def get_patient_fhir(patient_ref: PatientRef, request: Request, principal: PrincipalDep, store: StoreDep,
                           settings: SettingsDep) -> JSONResponse:
    """The patient's Observations (one per assessment, oldest first) as a FHIR R4 Bundle of type collection."""
    body = await run_in_threadpool(_bundle, store, principal, settings, patient_ref, base_url(request, settings))
    return JSONResponse(body, media_type="application/fhir+json")
