"""RFC 9457 problem details (application/problem+json) with stable codes.

Input and model errors reuse `model.errors.FeqaError` codes (not_a_video, empty_file,
unknown_expression, ...); the service adds the codes below. A code never changes once released.
`title` is the code's plain-language message (model.messages: the same for every occurrence of a
code), `detail` the facts of this occurrence followed by what to do.
"""
from __future__ import annotations

import logging
import traceback

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from model.errors import FeqaError
from model.messages import explain, message

log = logging.getLogger("feqa.api")
MEDIA_TYPE = "application/problem+json"

# Codes added by the service (the model/worker codes live in model/errors.py).
UNAUTHORIZED = "unauthorized"            # 401: no key, or a key we do not know
RATE_LIMITED = "rate_limited"            # 429
NOT_FOUND = "not_found"                  # 404: no such resource for this tenant
UPLOAD_TOO_LARGE = "upload_too_large"    # 413
INVALID_REQUEST = "invalid_request"      # 400/405/415/422: malformed request (415: not multipart/form-data)
MISSING_VIDEO = "missing_video"          # 422
EXPRESSION_MISMATCH = "expression_mismatch"  # 422: videos and expressions do not pair up
UNKNOWN_PROTOCOL = "unknown_protocol"    # 422
BROKER_UNAVAILABLE = "broker_unavailable"  # 503: the job queue does not answer; nothing was kept
NOTHING_TO_RETRY = "nothing_to_retry"    # 409
INTERNAL_ERROR = "internal_error"        # 500
DATABASE_UNAVAILABLE = "database_unavailable"  # 503: the job store does not answer
STORAGE_UNAVAILABLE = "storage_unavailable"    # 503: the upload volume cannot be written (read-only, full)
IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"  # 422: the key was used before for other content
REQUEST_TIMEOUT = "request_timeout"      # 408: the body did not arrive in time
HEADERS_TOO_LARGE = "headers_too_large"  # 431: too many request headers
CROSS_ORIGIN = "cross_origin_refused"    # 403: a cookie-authenticated change from another origin
INVALID_FIELD = "invalid_field"          # 422: a form field too long, with control characters, ...

TITLES = {400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found", 405: "Method not allowed",
          408: "Request timeout", 409: "Conflict", 413: "Content too large", 415: "Unsupported media type",
          431: "Request header fields too large",
          422: "Unprocessable content", 429: "Too many requests", 500: "Internal server error",
          503: "Service unavailable"}


class Problem(FeqaError):
    """An error raised by the web layer itself; carries optional response headers."""

    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None,
                 details: dict | None = None) -> None:
        super().__init__(message, code=code, http_status=status, details=details)
        self.headers = headers or {}


def problem_response(status: int, code: str, detail: str, *, instance: str | None = None,
                     extra: dict | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"type": f"urn:feqa:problem:{code}", "title": message(code)["title"], "status": status,
            "detail": explain(code, detail), "code": code}
    if instance:
        body["instance"] = instance
    if extra:
        body.update(extra)
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(FeqaError)
    async def _feqa(request: Request, exc: FeqaError) -> JSONResponse:
        extra = {"details": exc.details} if exc.details else None
        return problem_response(exc.http_status, exc.code, exc.message, instance=request.url.path,
                                extra=extra, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        where = ", ".join(".".join(str(p) for p in e["loc"]) for e in errors[:3])
        return problem_response(422, INVALID_REQUEST, f"the request does not match the API schema ({where})",
                                instance=request.url.path, extra={"errors": errors})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: NOT_FOUND, 401: UNAUTHORIZED, 429: RATE_LIMITED}.get(exc.status_code, INVALID_REQUEST)
        return problem_response(exc.status_code, code, str(exc.detail), instance=request.url.path,
                                headers=getattr(exc, "headers", None))

    @app.exception_handler(sa_exc.OperationalError)
    @app.exception_handler(sa_exc.InterfaceError)
    @app.exception_handler(sa_exc.TimeoutError)
    async def _database(request: Request, exc: Exception) -> JSONResponse:
        # The database is down or unreachable: a temporary condition, not a bug; say when to come back.
        log.error("database unavailable (%s) on %s %s", type(exc).__name__, request.method, request.url.path)
        return problem_response(503, DATABASE_UNAVAILABLE, "the job store is not reachable; try again shortly",
                                instance=request.url.path, headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log_unexpected(exc, request.method, request.url.path)
        return problem_response(500, INTERNAL_ERROR, "internal error; the event was logged",
                                instance=request.url.path)


def log_unexpected(exc: BaseException, method: str, path: str) -> None:
    """An unexpected error: its class and the frames where it happened, never its message (the text of a
    database error quotes the statement's parameters: patient references, file names)."""
    frames = "".join(traceback.format_tb(exc.__traceback__, limit=-8))
    log.error("unhandled %s on %s %s\n%s", type(exc).__name__, method, path, frames.rstrip())
