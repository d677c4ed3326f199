"""The clinician's web form (GET /, /static/...) and the browser session (POST/GET/DELETE /v1/session).

The form is one Jinja2 page plus plain JS/CSS from `service/web/`, all served from here: no build
step, no CDN. The browser authenticates with the `feqa_session` cookie that POST /v1/session sets:
a random server-side session id (only its SHA-256 is stored; signing out ends it), never the API key.
HttpOnly, so page scripts never read it; SameSite=Strict, so other sites cannot make the browser send
it; and every state-changing request it authenticates must carry this service's own Origin (a page on
another port of the same host is same-site, so SameSite alone does not stop it). Sign-in attempts are
rate limited per client address and every refused one is audited.
"""
from __future__ import annotations

import mimetypes
import time
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from pydantic import BaseModel, Field

from model.tasks import protocols
from service import problems
from service.api.deps import (
    SESSION_COOKIE,
    SettingsDep,
    StoreDep,
    authenticate,
    check_origin,
    credential,
)

WEB_DIR = Path(__file__).resolve().parents[2] / "web"
STATIC_DIR = WEB_DIR / "static"
SESSION_MAX_AGE_S = 12 * 3600  # a working day; the key itself stays valid until revoked

router = APIRouter(tags=["web"])


def _protocols_for_template() -> dict[str, dict[str, Any]]:
    """The protocols, tasks, titles and instructions: model.tasks (one definition, also served by /v1/models)."""
    return protocols()


@lru_cache(maxsize=1)
def _templates() -> Any:
    import jinja2  # only the web page needs it

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(WEB_DIR / "templates")),
                             autoescape=jinja2.select_autoescape(["html"]))
    return env


def _version() -> str:
    try:
        return metadata.version("feqa")
    except metadata.PackageNotFoundError:
        return "dev"


# Pages and their scripts must not be framed by other sites or sniffed into another type.
PAGE_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
                                "style-src 'self'; script-src 'self'; connect-src 'self'; "
                                "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def index(request: Request, settings: SettingsDep) -> HTMLResponse:
    html = _templates().get_template("index.html").render(
        protocols=_protocols_for_template(),
        anonymous_allowed=settings.anonymous_allowed,
        static_url=request.scope.get("root_path", "") + "/static",
        api_base=request.scope.get("root_path", ""),
        version=_version(),
        max_upload_bytes=settings.max_upload_bytes,
        max_duration_s=int(settings.max_duration_s),
    )
    return HTMLResponse(html, headers=PAGE_HEADERS)


@router.get("/static/{path:path}", name="web_static", include_in_schema=False)
def static(path: str) -> FileResponse:
    target = (STATIC_DIR / path).resolve()
    if not target.is_file() or STATIC_DIR.resolve() not in target.parents:
        raise problems.Problem(404, problems.NOT_FOUND, "no such file")
    media_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    return FileResponse(target, media_type=media_type,
                        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"})


class SessionIn(BaseModel):
    api_key: str = Field(min_length=1, max_length=512, description="the clinician's API key")


class SessionOut(BaseModel):
    authenticated: bool
    method: str | None = Field(None, description="key, cookie or anonymous")
    tenant: str | None = None
    anonymous_allowed: bool


@router.post("/v1/session", response_model=SessionOut, tags=["session"])
def create_session(body: SessionIn, request: Request, store: StoreDep, settings: SettingsDep) -> JSONResponse:
    """Exchange an API key for an HttpOnly, SameSite=Strict `feqa_session` cookie (for the web form): a new
    server-side session id, not the key. Attempts are rate limited per client address; refusals audited."""
    check_origin(request, settings, required=False)   # no sign-in forced on a browser by another page
    client = request.client.host if request.client else ""
    wait = request.app.state.sign_in_limiter.check(f"sign-in:{client}")
    if wait > 0:
        # Audited once a minute per address: a flood of refused attempts must not flood the audit log.
        seen = request.app.state.sign_in_throttled
        now = time.monotonic()
        if now - seen.get(client, -60.0) >= 60.0:
            if len(seen) > 10_000:
                seen.clear()
            seen[client] = now
            store.audit("", "anonymous", "session.throttled", detail={"client": client})
        raise problems.Problem(429, problems.RATE_LIMITED, "too many sign-in attempts from this address; wait "
                               "and try again", headers={"Retry-After": str(max(1, int(wait + 0.999)))})
    key = body.api_key.strip()
    principal = store.verify_key(key)
    if principal is None:
        store.audit("", "anonymous", "session.denied", detail={"client": client})
        raise problems.Problem(401, problems.UNAUTHORIZED, "the API key is not valid or was revoked",
                               details={"field": "api_key"})
    session_id = store.create_session(principal, SESSION_MAX_AGE_S)
    store.audit(principal.tenant, principal.key_id, "session.create", detail={"client": client})
    out = SessionOut(authenticated=True, method="cookie", tenant=principal.tenant,
                     anonymous_allowed=settings.anonymous_allowed)
    response = JSONResponse(out.model_dump(), status_code=201)
    secure = request.url.scheme == "https" or (settings.public_url or "").startswith("https:")
    response.set_cookie(SESSION_COOKIE, session_id, max_age=SESSION_MAX_AGE_S, path="/", httponly=True,
                        samesite="strict", secure=secure)
    return response


@router.get("/v1/session", response_model=SessionOut, tags=["session"])
def read_session(request: Request, store: StoreDep, settings: SettingsDep) -> SessionOut:
    """Who the browser is: signed in with the cookie, a key header, anonymous, or nobody."""
    try:
        principal = authenticate(request, store, settings)
    except problems.Problem:
        return SessionOut(authenticated=False, method=None, anonymous_allowed=settings.anonymous_allowed)
    cred = credential(request)
    if principal.key_id == "anonymous":
        method = "anonymous"
    elif cred is not None and cred[0] == "session":
        method = "cookie"
    else:
        method = "key"
    return SessionOut(authenticated=True, method=method, tenant=principal.tenant,
                      anonymous_allowed=settings.anonymous_allowed)


@router.delete("/v1/session", status_code=204, tags=["session"])
def delete_session(request: Request, store: StoreDep, settings: SettingsDep) -> Response:
    """Sign out: the session ends on the server (its cookie no longer works anywhere) and the browser
    forgets the cookie. The API key itself stays valid."""
    session_id = request.cookies.get(SESSION_COOKIE)
    if session_id:
        check_origin(request, settings, required=False)   # another page cannot sign the browser out
        principal = store.verify_session(session_id)
        if store.revoke_session(session_id) and principal is not None:
            store.audit(principal.tenant, principal.key_id, "session.end")
        request.app.state.key_cache.drop(f"session:{session_id}")
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response
