"""/v1/assessments: submit videos, poll, pictures, FHIR export, retry, delete."""
from __future__ import annotations

import logging
import re
import unicodedata
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse

from model.contract import EXPRESSIONS, PROTOCOLS, check_expression
from model.errors import ModelUnavailable, UnknownExpression, VideoError
from model.messages import video_label
from service import problems
from service.api.deps import PrincipalDep, SettingsDep, StorageDep, StoreDep
from service.probe import probe_upload
from service.schemas import AssessmentCreated, AssessmentOut, RetryOut
from service.served import served, unavailable_problem_text
from service.uploads import ParsedUpload, parse_upload, storage_unavailable, too_large
from service.views import ARTIFACTS, assessment_out, assessment_url, fhir_observation
from worker.jobs.db import Assessment, Item
from worker.jobs.keys import upload_key, uploads_prefix
from worker.jobs.status import JobStatus
from worker.jobs.storage import Storage, Writer
from worker.jobs.store import NewItem, Principal, Store, assessment_status
from worker.settings import Settings

log = logging.getLogger("feqa.api")
router = APIRouter(prefix="/v1/assessments", tags=["assessments"])

UPLOAD_BODY = {
    "required": True,
    "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["video"],
        "properties": {
            "video": {"type": "array", "items": {"type": "string", "format": "binary"},
                      "description": "one or more face videos (MP4, MOV, WebM); repeat the part"},
            "expression": {"type": "array", "items": {"type": "string", "enum": list(EXPRESSIONS)},
                           "description": "the expression performed in each video, in the same order"},
            "patient_ref": {"type": "string", "description": "opaque reference; returned, never logged"},
            "protocol": {"type": "string", "enum": list(PROTOCOLS)},
        }}}},
}
PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}


def base_url(request: Request, settings: Settings) -> str:
    return (settings.public_url or "").rstrip("/")


# Field limits at the edge, matching the database columns (worker/jobs/db.py): a longer or odd value is a
# typed 422 here, never a database error (which answered 500 and logged the value on PostgreSQL).
PATIENT_REF_MAX = 256
IDEMPOTENCY_KEY_MAX = 256
ID_PATTERN = re.compile(r"[0-9a-f]{32}")          # Store.new_id(): uuid4().hex


def has_control_chars(value: str) -> bool:
    return any(unicodedata.category(c) in ("Cc", "Cs") for c in value)


def check_text(name: str, value: str | None, max_len: int) -> str | None:
    if value is None:
        return None
    if len(value) > max_len:
        raise problems.Problem(422, problems.INVALID_FIELD, f"'{name}' is longer than {max_len} characters",
                               details={"field": name, "max_length": max_len})
    if has_control_chars(value):
        raise problems.Problem(422, problems.INVALID_FIELD, f"'{name}' contains control characters",
                               details={"field": name})
    return value


def check_id(assessment_id: str) -> None:
    """Ids of another shape (%00, traversal, very long) are unknown ids: 404 before any query."""
    if not ID_PATTERN.fullmatch(assessment_id):
        raise problems.Problem(404, problems.NOT_FOUND, "no such assessment")


def _one(fields: dict[str, list[str]], name: str) -> str | None:
    values = [v for v in fields.get(name, []) if v]
    if len(values) > 1:
        raise problems.Problem(422, problems.INVALID_FIELD, f"send '{name}' once", details={"field": name})
    return values[0] if values else None


def pair_expressions(n_videos: int, expressions: list[str], protocol: str | None) -> list[str]:
    """Match expressions to videos by order; a protocol alone names them when the counts agree."""
    if protocol is not None and protocol not in PROTOCOLS:
        raise problems.Problem(422, problems.UNKNOWN_PROTOCOL,
                               f"unknown protocol {protocol!r}; expected one of: {', '.join(PROTOCOLS)}")
    if n_videos == 0:
        raise problems.Problem(422, problems.MISSING_VIDEO, "send at least one 'video' file part")
    if not expressions and protocol and n_videos == len(PROTOCOLS[protocol]):
        expressions = list(PROTOCOLS[protocol])
    if len(expressions) != n_videos:
        # index: the first part without its partner (a video without an expression, or the reverse)
        raise problems.Problem(422, problems.EXPRESSION_MISMATCH,
                               f"got {n_videos} video(s) and {len(expressions)} expression(s); send one "
                               "'expression' field per 'video' part, in the same order",
                               details={"index": min(n_videos, len(expressions)), "videos": n_videos,
                                        "expressions": len(expressions)})
    for i, e in enumerate(expressions):
        try:
            check_expression(e)
        except UnknownExpression as exc:
            exc.details = {**exc.details, "index": i}
            raise
        if protocol and e not in PROTOCOLS[protocol]:
            raise UnknownExpression(f"the expression of {video_label(i)}, {e!r}, is not part of protocol {protocol!r}",
                                    details={"index": i, "expected": list(PROTOCOLS[protocol])})
    return expressions


def check_served(store: Store, settings: Settings, expressions: list[str]) -> None:
    """Refuse, before anything is stored, an expression no loaded model serves (422, not a later failure)."""
    s = served(store, settings)
    for i, e in enumerate(expressions):
        if e not in s.models:
            raise problems.Problem(422, ModelUnavailable.code, f"{video_label(i)}: {unavailable_problem_text(e, s)}",
                                   details={"index": i, "expression": e, "served": s.expressions})


def check_video(w: Writer, settings: Settings, index: int) -> None:
    """Refuse empty files, non-videos and too-long videos before anything is queued."""
    if w.size == 0:
        raise VideoError(f"{video_label(index)} is empty", code="empty_file", details={"index": index})
    try:
        facts = probe_upload(w.local_file, max_duration_s=settings.max_duration_s, max_bytes=settings.max_upload_bytes,
                      memory_bytes=settings.probe_memory_mb * 1024 * 1024, timeout_s=settings.probe_timeout_s)
    except VideoError as exc:
        exc.details = {**exc.details, "index": index}
        exc.message = f"{video_label(index)}: {exc.message}"
        raise
    duration = facts.get("duration_s")
    if duration is not None and duration > settings.max_duration_s:
        raise VideoError(f"{video_label(index)} lasts {duration:.0f} s; the limit is {settings.max_duration_s:.0f} s",
                         code="video_too_long", details={"index": index})


def _accepted(request: Request, settings: Settings, aid: str, status: str, code: int) -> JSONResponse:
    url = assessment_url(base_url(request, settings), aid)
    return JSONResponse({"id": aid, "url": url, "status": status}, status_code=code, headers={"Location": url})


def _store_upload(store: Store, storage: Storage, principal: Principal, aid: str, upload: ParsedUpload,
                  expressions: list[str], protocol: str | None, patient_ref: str | None,
                  idem: str | None) -> tuple[str, bool]:
    items = [NewItem(e, upload_key(aid, i), w.sha256, w.size)
             for i, (e, w) in enumerate(zip(expressions, upload.videos, strict=True))]
    return store.create_assessment(aid, principal.tenant, items, protocol=protocol, patient_ref=patient_ref,
                                   idempotency_key=idem)


def _same_content(store: Store, principal: Principal, existing: str, upload: ParsedUpload, expressions: list[str],
                  protocol: str | None, patient_ref: str | None) -> bool:
    """Does the assessment stored under this idempotency key hold exactly this request's content (the videos'
    SHA-256, their expressions, the patient reference and the protocol)?"""
    found = store.get_assessment(principal.tenant, existing)
    if found is None:
        return True     # deleted meanwhile: the replay answers with its state (gone)
    a, items = found
    stored = ([(it.expression, it.video_sha256) for it in items], a.patient_ref, a.protocol)
    return stored == ([(e, w.sha256) for e, w in zip(expressions, upload.videos, strict=True)], patient_ref,
                      protocol)


def _key_reused() -> problems.Problem:
    return problems.Problem(422, problems.IDEMPOTENCY_KEY_REUSED,
                            "this Idempotency-Key was used before for another upload (other videos, expressions, "
                            "patient or protocol); use a new key for new content")


@router.post("", status_code=202, response_model=AssessmentCreated, openapi_extra={"requestBody": UPLOAD_BODY},
             responses={200: {"model": AssessmentCreated, "description": "idempotent replay"},
                        401: PROBLEM, 413: PROBLEM, 415: PROBLEM, 422: PROBLEM, 429: PROBLEM, 503: PROBLEM})
async def create_assessment(request: Request, principal: PrincipalDep, store: StoreDep, storage: StorageDep,
                            settings: SettingsDep,
                            idempotency_key: Annotated[str | None, Header(max_length=256)] = None) -> JSONResponse:
    """Upload one or more videos with the expression performed in each; answers 202 with the URL to poll.
    The same Idempotency-Key with the same content answers 200 with the first assessment; with other content
    422 `idempotency_key_reused` (a key is bound to its tenant and to what was sent)."""
    idempotency_key = check_text("Idempotency-Key", idempotency_key or None, IDEMPOTENCY_KEY_MAX)
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > settings.max_upload_bytes + 64 * 1024:
        problem = too_large(settings.max_upload_bytes)   # refused before reading a byte of the body
        problem.headers["Connection"] = "close"
        raise problem
    aid = store.new_id()
    upload = await parse_upload(request.stream(), request.headers.get("content-type", ""),
                                lambda i: storage.writer(upload_key(aid, i)),
                                max_bytes=settings.max_upload_bytes, max_files=settings.max_items)
    try:
        protocol = _one(upload.fields, "protocol")
        patient_ref = check_text("patient_ref", _one(upload.fields, "patient_ref"), PATIENT_REF_MAX)
        expressions = pair_expressions(len(upload.videos), upload.fields.get("expression", []), protocol)
        await run_in_threadpool(check_served, store, settings, expressions)
        if idempotency_key:
            existing = await run_in_threadpool(store.find_idempotent, principal.tenant, idempotency_key)
            if existing:
                same = await run_in_threadpool(_same_content, store, principal, existing, upload, expressions,
                                               protocol, patient_ref)
                if not same:
                    raise _key_reused()
                upload.abort()
                storage.delete_prefix(uploads_prefix(aid))
                return await _replay(request, store, settings, principal, existing)
        for i, w in enumerate(upload.videos):
            w.close()
            await run_in_threadpool(check_video, w, settings, i)   # probes the writer's local file
            try:
                w.commit()
            except OSError as exc:
                raise storage_unavailable() from exc
        aid2, created = await run_in_threadpool(_store_upload, store, storage, principal, aid, upload,
                                                expressions, protocol, patient_ref, idempotency_key)
        if not created and not await run_in_threadpool(_same_content, store, principal, aid2, upload,
                                                       expressions, protocol, patient_ref):
            raise _key_reused()
    except BaseException:
        upload.abort()
        storage.delete_prefix(uploads_prefix(aid))
        raise
    if not created:   # lost an idempotency race to a concurrent request with the same content
        storage.delete_prefix(uploads_prefix(aid))
        return await _replay(request, store, settings, principal, aid2)
    await run_in_threadpool(_enqueue_and_audit, request, store, storage, principal, aid, expressions, upload)
    return _accepted(request, settings, aid, JobStatus.QUEUED, 202)


def _enqueue_and_audit(request: Request, store: Store, storage: Storage, principal: Principal, aid: str,
                       expressions: list[str], upload: ParsedUpload) -> None:
    try:
        request.app.state.queue.enqueue(store.item_ids(aid))
    except Exception as exc:   # broker down: undo, so that the client's retry starts clean
        log.error("could not queue assessment %s (%s)", aid, type(exc).__name__)
        store.delete_assessment(principal.tenant, aid)
        storage.delete_prefix(uploads_prefix(aid))
        raise problems.Problem(503, problems.BROKER_UNAVAILABLE, "the job queue is not reachable; "
                               "nothing was kept, send the upload again shortly",
                               headers={"Retry-After": "5"}) from exc
    store.audit(principal.tenant, principal.key_id, "upload", aid,
                {"items": len(expressions), "expressions": expressions, "bytes": sum(w.size for w in upload.videos)})
    log.info("assessment %s accepted: %d item(s)", aid, len(expressions))


async def _replay(request: Request, store: Store, settings: Settings, principal: Principal, aid: str) -> JSONResponse:
    found = await run_in_threadpool(store.get_assessment, principal.tenant, aid)
    status = assessment_status(found[1]) if found else JobStatus.QUEUED
    return _accepted(request, settings, aid, status, 200)


def _load(store: Store, principal: Principal, assessment_id: str) -> tuple[Assessment, list[Item]]:
    check_id(assessment_id)
    found = store.get_assessment(principal.tenant, assessment_id)
    if found is None:   # also for another tenant's id: never reveal that it exists
        raise problems.Problem(404, problems.NOT_FOUND, f"no assessment {assessment_id!r}")
    return found


@router.get("/{assessment_id}", response_model=AssessmentOut, responses={401: PROBLEM, 404: PROBLEM})
async def get_assessment(assessment_id: str, request: Request, principal: PrincipalDep, store: StoreDep,
                         settings: SettingsDep) -> JSONResponse:
    """Status, per-item progress and, when done, the per-expression results."""
    # The hot polling path: one thread hop for the reads and the audit row, and the body built
    # directly (the response model documents it; validating every poll would double the cost).
    body = await run_in_threadpool(_read_assessment, store, principal, assessment_id,
                                   base_url(request, settings))
    return JSONResponse(body)


def _read_assessment(store: Store, principal: Principal, assessment_id: str, base: str) -> dict:
    check_id(assessment_id)
    found = store.read_audited(principal.tenant, assessment_id, principal.key_id)
    if found is None:
        raise problems.Problem(404, problems.NOT_FOUND, f"no assessment {assessment_id!r}")
    return assessment_out(base, *found)


@router.get("/{assessment_id}/items/{index}/{name}.png", response_class=FileResponse,
            responses={200: {"content": {"image/png": {}}}, 404: PROBLEM})
def get_picture(assessment_id: str, index: int, name: str, principal: PrincipalDep, store: StoreDep,
                storage: StorageDep) -> Response:
    """The landmark overlay (`overlay.png`) or trajectory plot (`trajectories.png`) of one item."""
    a, items = _load(store, principal, assessment_id)
    item = next((it for it in items if it.idx == index), None)
    key = (item.artifacts or {}).get(name) if item is not None and name in ARTIFACTS else None
    if key is None or not storage.exists(key):
        raise problems.Problem(404, problems.NOT_FOUND, f"no {name}.png for item {index}")
    store.audit(principal.tenant, principal.key_id, "download", a.id, {"item": index, "picture": name})
    local = storage.local_path(key)
    if local is not None:
        return FileResponse(local, media_type="image/png")
    return StreamingResponse(storage.iter_bytes(key), media_type="image/png")   # object storage


@router.get("/{assessment_id}/fhir", responses={200: {"content": {"application/fhir+json": {}}}, 404: PROBLEM})
def get_fhir(assessment_id: str, principal: PrincipalDep, store: StoreDep, settings: SettingsDep) -> JSONResponse:
    """The assessment as a FHIR R4 Observation (status preliminary, one component per expression)."""
    a, items = _load(store, principal, assessment_id)
    store.audit(principal.tenant, principal.key_id, "fhir_export", a.id)
    return JSONResponse(fhir_observation(a, items, settings.fhir_code_system), media_type="application/fhir+json")


@router.post("/{assessment_id}/retry", response_model=RetryOut, status_code=202, operation_id="retry_assessment",
             responses={404: PROBLEM, 409: PROBLEM})
def retry(assessment_id: str, request: Request, principal: PrincipalDep, store: StoreDep,
          settings: SettingsDep) -> JSONResponse:
    """Put the failed items (whose video is still kept) back in the queue."""
    _load(store, principal, assessment_id)
    ids = store.retry_failed(principal.tenant, assessment_id)
    if not ids:
        raise problems.Problem(409, problems.NOTHING_TO_RETRY,
                               "no failed item with its video still stored; upload the video again")
    request.app.state.queue.enqueue(ids)
    a, items = _load(store, principal, assessment_id)
    indexes = [it.idx for it in items if it.id in ids]
    store.audit(principal.tenant, principal.key_id, "retry", a.id, {"items": indexes})
    url = assessment_url(base_url(request, settings), a.id)
    return JSONResponse({"id": a.id, "url": url, "status": assessment_status(items), "requeued": indexes},
                        status_code=202)


@router.delete("/{assessment_id}", status_code=204, responses={404: PROBLEM}, operation_id="delete_assessment")
def delete(assessment_id: str, principal: PrincipalDep, store: StoreDep, storage: StorageDep) -> None:
    """Delete the videos, pictures and results; the audit trail stays."""
    check_id(assessment_id)
    prefixes = store.delete_assessment(principal.tenant, assessment_id)
    if prefixes is None:
        raise problems.Problem(404, problems.NOT_FOUND, f"no assessment {assessment_id!r}")
    for prefix in prefixes:
        storage.delete_prefix(prefix)
    store.audit(principal.tenant, principal.key_id, "delete", assessment_id)
