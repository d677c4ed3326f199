"""GET /docs: Swagger UI served from this process (the files of the `swagger-ui-py` package), no CDN.

Hospital networks often have no internet access, so the page and everything it loads come from
here: swagger-ui's JS/CSS under /static/swagger/, the spec from /openapi.json. (`swagger-ui-bundle`
was tried first: it ships Swagger UI 4.15, which refuses FastAPI's OpenAPI 3.1 spec.) The page's one
inline script (the Swagger UI set-up) is allowed by its hash in the Content-Security-Policy.
"""
from __future__ import annotations

import base64
import hashlib
import importlib.util
import re
from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from service import problems

router = APIRouter(include_in_schema=False)

SWAGGER_PREFIX = "/static/swagger"
# Only what the page loads is served from the bundle.
SWAGGER_FILES = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
                 "favicon-32x32.png": "image/png"}
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)


@lru_cache(maxsize=1)
def swagger_dir() -> Path:
    """swagger-ui-py's copy of the swagger-ui dist (found, not imported: its package imports its handlers)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise problems.Problem(404, problems.NOT_FOUND, "Swagger UI is not installed (pip install swagger-ui-py)")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def docs_csp(html: str) -> str:
    hashes = " ".join("'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
                      for s in _INLINE_SCRIPT.findall(html))
    return ("default-src 'self'; img-src 'self' data:; style-src 'self'; "
            f"script-src 'self' {hashes}; connect-src 'self'; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


@router.get("/docs", response_class=HTMLResponse)
def docs(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    page = get_swagger_ui_html(
        openapi_url=root + request.app.openapi_url, title=f"{request.app.title} - docs",
        swagger_js_url=f"{root}{SWAGGER_PREFIX}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{SWAGGER_PREFIX}/swagger-ui.css",
        swagger_favicon_url=f"{root}{SWAGGER_PREFIX}/favicon-32x32.png",
        swagger_ui_parameters={"validatorUrl": None})   # no badge fetched from validator.swagger.io
    html = bytes(page.body).decode()
    return HTMLResponse(html, headers={"Content-Security-Policy": docs_csp(html),
                                       "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"})


@router.get(SWAGGER_PREFIX + "/{name}")
def swagger_file(name: str) -> FileResponse:
    if name not in SWAGGER_FILES:
        raise problems.Problem(404, problems.NOT_FOUND, "no such file")
    return FileResponse(swagger_dir() / name, media_type=SWAGGER_FILES[name],
                        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "public, max-age=86400"})
