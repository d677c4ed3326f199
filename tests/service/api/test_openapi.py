"""/openapi.json describes what the server sends (generated clients depend on it; see
tests/web/test_generated_client.py for the end-to-end check with a generated client).

Given the app, when its OpenAPI document is built, then every error response of every operation is
application/problem+json with the Problem schema, FastAPI's HTTPValidationError is gone, operations that
need a key name the bearer and X-API-Key schemes, pictures are image/png binaries, and the result schema
declares the `video` field.
"""
from __future__ import annotations


def test_every_error_response_is_a_problem_and_keys_are_declared(client):
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    assert set(schemas["Problem"]["required"]) >= {"type", "title", "status", "detail", "code"}
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        **spec["components"]["securitySchemes"]["bearerAuth"], "type": "http", "scheme": "bearer"}
    assert spec["components"]["securitySchemes"]["apiKeyHeader"]["name"] == "X-API-Key"
    n_errors = 0
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            for status, response in op["responses"].items():
                if int(status) < 400 or (path, status) == ("/readyz", "503"):
                    continue
                n_errors += 1
                assert response["content"] == {"application/problem+json": {
                    "schema": {"$ref": "#/components/schemas/Problem"}}}, (method, path, status)
            if path.startswith("/v1/assessments") or path in ("/v1/models", "/v1/messages"):
                assert op["security"] == [{"bearerAuth": []}, {"apiKeyHeader": []}], (method, path)
                assert {"401", "429"} <= set(op["responses"]), (method, path)
    assert n_errors > 40
    upload = spec["paths"]["/v1/assessments"]["post"]
    assert {"401", "413", "415", "422", "503"} <= set(upload["responses"])
    picture = spec["paths"]["/v1/assessments/{assessment_id}/items/{index}/{name}.png"]["get"]
    assert picture["responses"]["200"]["content"]["image/png"]["schema"]["format"] == "binary"
    assert "video" in schemas["ItemResult"]["properties"] and "error" in schemas["ItemOut"]["properties"]


def test_validation_errors_are_problems_with_the_fields(client):
    r = client.post("/v1/assessments", headers={"Idempotency-Key": "k" * 300},
                    files=[("video", ("a.mp4", b"x", "video/mp4"))], data={"expression": "smile"})
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["code"] == "invalid_request" and body["errors"][0]["loc"] == ["header", "idempotency-key"]
    assert "header.idempotency-key" in body["detail"]
