"""Request dependencies: settings, store, storage, the caller's identity and the rate limit.

Every route reads its collaborators from `app.state` (set once by the app factory), so a test
builds an app with its own Settings instead of patching globals.
"""
from __future__ import annotations

import threading
import time
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader, HTTPBearer

from service import problems
from worker.jobs.storage import Storage
from worker.jobs.store import Principal, Store
from worker.settings import Settings

SESSION_COOKIE = "feqa_session"   # a random server-side session id (web_sessions), never the API key
AUTH_CACHE_S = 30.0   # a revoked key stops working within this time
SESSION_CACHE_S = 5.0   # a session signed out in another API process stops working within this time
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


# These are `async def` although they do no I/O: FastAPI runs a plain `def` dependency in the thread
# pool, and a hop per dependency per request costs more than the request's own work.
async def app_settings(request: Request) -> Settings:
    """The settings this app was built with (worker.settings.get_settings is the process's)."""
    return request.app.state.settings


async def get_store(request: Request) -> Store:
    return request.app.state.store


async def get_storage(request: Request) -> Storage:
    return request.app.state.storage


SettingsDep = Annotated[Settings, Depends(app_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
StorageDep = Annotated[Storage, Depends(get_storage)]


def presented_key(request: Request) -> str | None:
    """The key from `Authorization: Bearer` or `X-API-Key`."""
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return request.headers.get("x-api-key") or None


def credential(request: Request) -> tuple[str, str] | None:
    """("key", api key) from a header, else ("session", id) from the web form's cookie, else None."""
    key = presented_key(request)
    if key:
        return "key", key
    session_id = request.cookies.get(SESSION_COOKIE)
    return ("session", session_id) if session_id else None


def own_origins(request: Request, settings: Settings) -> set[str]:
    host = request.headers.get("host", "")
    origins = {f"http://{host}", f"https://{host}"} if host else set()
    if settings.public_url:
        parts = settings.public_url.split("/")
        if len(parts) >= 3:
            origins.add(f"{parts[0]}//{parts[2]}")
    return origins


def check_origin(request: Request, settings: Settings, *, required: bool = True) -> None:
    """A state-changing request that a browser sends with the session cookie must come from the service's
    own pages: its Origin (or, without one, Sec-Fetch-Site) must say so. A page on another port or host
    (same-site is not same-origin) is refused, so it cannot make a signed-in browser upload or delete."""
    if request.method in SAFE_METHODS:
        return
    origin = request.headers.get("origin")
    if origin is not None:
        if origin in own_origins(request, settings):
            return
    elif request.headers.get("sec-fetch-site") in (("same-origin",) if required else ("same-origin", "none", None)):
        return      # without `required` (sign-in), a client that is no browser (no Origin, no Sec-Fetch-Site)
    raise problems.Problem(403, problems.CROSS_ORIGIN, "this change must come from the service's own web page "
                           "(the request's Origin is another site, or missing)")


class KeyCache:
    """Verified keys for a few seconds, so polling does not hash and query on every request."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> Principal | None:
        with self._lock:
            hit = self._entries.get(key)
        if hit and hit[0] > time.monotonic():
            return hit[1]
        return None

    def put(self, key: str, principal: Principal, ttl_s: float = AUTH_CACHE_S) -> None:
        with self._lock:
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[key] = (time.monotonic() + ttl_s, principal)

    def drop(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)


def authenticate(request: Request, store: Store, settings: Settings) -> Principal:
    """Blocking (may query the store); `current_principal` is the async form with the key cache."""
    cred = credential(request)
    if cred is None:
        client = request.client.host if request.client else ""
        if settings.anonymous_allowed and client in ("127.0.0.1", "::1", "localhost", "testclient"):
            return Principal(tenant=settings.anonymous_tenant, key_id="anonymous")
        raise problems.Problem(401, problems.UNAUTHORIZED,
                               "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key'",
                               headers={"WWW-Authenticate": "Bearer"})
    kind, value = cred
    if kind == "session":
        check_origin(request, settings)
    cache: KeyCache = request.app.state.key_cache
    principal = cache.get(f"{kind}:{value}")
    if principal is None:
        principal = store.verify_key(value) if kind == "key" else store.verify_session(value)
    if principal is None:
        message = ("the API key is not valid or was revoked" if kind == "key"
                   else "the session has ended (signed out or expired); sign in again")
        raise problems.Problem(401, problems.UNAUTHORIZED, message, headers={"WWW-Authenticate": "Bearer"})
    cache.put(f"{kind}:{value}", principal, AUTH_CACHE_S if kind == "key" else SESSION_CACHE_S)
    return principal


# Declared for /openapi.json only (the security schemes generated clients use); `presented_key` reads
# the headers itself, so that the cookie works too and a missing key is our own 401 problem.
BEARER = HTTPBearer(auto_error=False, scheme_name="bearerAuth",
                    description="an API key (`feqa serve --create-key TENANT`) as `Authorization: Bearer <key>`")
API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="apiKeyHeader",
                              description="the same API key in the `X-API-Key` header")


async def current_principal(request: Request, store: StoreDep, settings: SettingsDep,
                            _bearer: Annotated[object, Depends(BEARER)] = None,
                            _api_key: Annotated[object, Depends(API_KEY_HEADER)] = None) -> Principal:
    """The caller (tenant + key id); raises 401 or 429 as problem+json. Only a key missing from the
    cache costs a thread hop and a query."""
    cred = credential(request)
    cached: Principal | None = None
    if cred is not None:
        if cred[0] == "session":
            check_origin(request, settings)
        cached = request.app.state.key_cache.get(f"{cred[0]}:{cred[1]}")
    principal = cached if cached is not None else await run_in_threadpool(authenticate, request, store, settings)
    wait = request.app.state.rate_limiter.check(principal.key_id)
    if wait > 0:
        raise problems.Problem(429, problems.RATE_LIMITED, "too many requests for this API key; slow down",
                               headers={"Retry-After": str(max(1, int(wait + 0.999)))})
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]
