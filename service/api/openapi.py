"""/openapi.json that generated clients can use.

FastAPI's generated document is completed once, after every route is known (routes other packages add
are covered too):
- every error response of every operation is `application/problem+json` with the `Problem` schema
  (FastAPI's own `HTTPValidationError` is replaced: the server sends problem+json for 422 as well);
- each operation that needs an API key names the two security schemes (`Authorization: Bearer` and
  `X-API-Key`) and declares 401 and 429; one with parameters or a body declares 422; one with a path
  parameter 404; every one 500 and, where it reads the job store, 503;
- pictures are `image/png` binary strings, the FHIR export an `application/fhir+json` object.
"""
from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from service.problems import MEDIA_TYPE, TITLES
from service.schemas import Problem

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
# FastAPI declares the schemes from service.api.deps (BEARER, API_KEY_HEADER); each secured operation
# gets one requirement per scheme (either works).
SECURITY: list[dict[str, list[str]]] = [{"bearerAuth": []}, {"apiKeyHeader": []}]
BINARY = {"type": "string", "format": "binary", "contentMediaType": "image/png"}


def operation_id(route: APIRoute) -> str:
    """The route function's name (create_assessment, get_picture, ...): what generated clients call."""
    return route.name


def _problem_response(status: str, current: dict | None) -> dict:
    description = (current or {}).get("description")
    if not description or description in ("Successful Response", "Validation Error", "Additional Response"):
        description = TITLES.get(int(status), "Error") + " (RFC 9457 problem details with a stable `code`)"
    return {"description": description, "content": {MEDIA_TYPE: {"schema": PROBLEM_REF}}}


def _has_own_schema(response: dict) -> bool:
    """An error response that documents another body on purpose (e.g. /readyz's 503 Health)."""
    for media, body in (response.get("content") or {}).items():
        ref = (body.get("schema") or {}).get("$ref", "")
        if media != MEDIA_TYPE and ref and not ref.endswith("/HTTPValidationError"):
            return True
    return False


def complete_operation(path: str, op: dict) -> None:
    responses: dict[str, Any] = op.setdefault("responses", {})
    wanted = {"500"}
    if op.get("security"):
        op["security"] = SECURITY
        wanted |= {"401", "429", "503"}
    if op.get("parameters") or op.get("requestBody"):
        wanted.add("422")
    if "{" in path:
        wanted.add("404")
    for status in wanted:
        responses.setdefault(status, {})
    for status, response in list(responses.items()):
        if status.isdigit() and int(status) >= 400 and not _has_own_schema(response):
            responses[status] = _problem_response(status, response)
    for response in responses.values():
        content = response.get("content") or {}
        if "image/png" in content:
            response["content"] = {"image/png": {"schema": BINARY}}
        elif "application/fhir+json" in content:
            response["content"] = {"application/fhir+json": {"schema": {
                "type": "object", "additionalProperties": True,
                "description": "a FHIR R4 Observation (resourceType, status, code, component, ...)"}}}


def build(app: FastAPI) -> dict:
    spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes,
                       separate_input_output_schemas=False)
    for path, ops in spec.get("paths", {}).items():
        for op in ops.values():
            complete_operation(path, op)
    components = spec.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(problem.pop("$defs", {}))
    schemas["Problem"] = problem
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return spec


def install(app: FastAPI) -> None:
    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = build(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
