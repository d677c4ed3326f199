"""Access control against a real API + worker: authentication on every route, tenant isolation, rate
limits, the audit trail, and no secret or patient data in any log.

Given a stack with anonymous use off, when each route is called without a key, then every route except the
public ones (health, readiness, metrics, the web page, static files, the API description and the sign-in
endpoints) answers 401 problem+json. Given tenant A's assessment, tenant B gets 404 on every verb. A key
over its rate answers 429 with Retry-After. Every upload, read, FHIR export, picture download and deletion
is in the audit log under the caller's key id. After a real flow with a distinctive patient reference, file
name and API key, none of them appears in any log the processes wrote (stdout and stderr included).
"""
from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from bench.servers import feqa_stack
from tests.faults.support import upload, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RATE = 120   # requests per minute per key in this stack
PATIENT = "PATIENT-ZX81-7Q4242"
FILENAME = "Jane_Doe_1957-03-14_PZX81.mp4"
# Routes anyone may call: liveness/readiness for orchestrators, metrics for Prometheus, the web page and
# its static files, the API description, and the sign-in/out endpoints (which take the key themselves).
PUBLIC = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/"),
          ("GET", "/static/{path:path}"), ("GET", "/openapi.json"), ("GET", "/docs"),
          ("GET", "/docs/oauth2-redirect"), ("GET", "/redoc"),
          ("POST", "/v1/session"), ("GET", "/v1/session"), ("DELETE", "/v1/session")}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, models) -> Iterator:
    tmp = tmp_path_factory.mktemp("access")
    with feqa_stack(tmp, model_dir=models, env={"FEQA_RATE_LIMIT_PER_MINUTE": str(RATE)}) as s:
        yield s


@pytest.fixture(scope="module")
def scored(stack, video) -> dict:
    """Tenant A's finished assessment, uploaded with a patient reference and a telling file name."""
    key = stack.create_key("tenant-a")
    with stack.client(key) as http:
        r = http.post("/v1/assessments", files={"video": (FILENAME, video.read_bytes(), "video/mp4")},
                      data={"expression": "smile", "patient_ref": PATIENT})
        assert r.status_code == 202, r.text
        body = stack.wait_done(http, r.json()["id"])
        assert body["status"] == "succeeded", body
        pictures_drawn(http, body["id"])
    return {"key": key, "id": body["id"], "body": body}


def is_public(method: str, path: str) -> bool:
    """Static files (the web form's, Swagger UI's) are public wherever they are mounted."""
    return (method, path) in PUBLIC or (method == "GET" and path.startswith("/static/"))


def pictures_drawn(http, aid: str) -> None:
    """The result is published before its pictures are drawn; their links appear when they exist."""
    wait_for(lambda: http.get(f"/v1/assessments/{aid}").json()["items"][0]["links"].get("overlay"), 30,
             "the overlay picture", 0.3)


def all_routes(stack) -> set[tuple[str, str]]:
    """Every (method, path) the app serves: the OpenAPI operations plus the routes hidden from it."""
    from service.api.main import create_app
    from worker.settings import Settings

    class NoQueue:
        def enqueue(self, _ids) -> None:
            raise AssertionError("no task may be sent while listing routes")

    app = create_app(Settings(var_dir=stack.var_dir / "routes-listing"), queue=NoQueue())   # no database use
    def walk(routes):
        for route in routes:
            if hasattr(route, "original_router"):     # this FastAPI wraps included routers
                yield from walk(route.original_router.routes)
            else:
                yield route

    out = set()
    for route in walk(app.routes):
        for method in getattr(route, "methods", None) or ():
            if method != "HEAD":
                # A patient reference may hold "/": the route matches it with a path converter, and the spec
                # documents it as the plain parameter it is for clients.
                out.add((method, route.path.replace("{patient_ref:path}", "{patient_ref}")))
    return out


def fill(path: str) -> str:
    return (path.replace("{assessment_id}", "0123456789abcdef0123456789abcdef").replace("{index}", "0")
            .replace("{name}", "overlay").replace("{patient_ref}", "P-0042").replace("{path:path}", "app.js").replace("{path}", "app.js"))


def test_every_route_but_the_public_ones_needs_a_key(stack):
    spec = {(m.upper(), p) for p, ops in stack.client().get("/openapi.json").json()["paths"].items() for m in ops}
    routes = all_routes(stack)
    assert spec <= routes, spec - routes                      # the spec describes real routes
    protected = sorted(r for r in routes if not is_public(*r))
    assert ("POST", "/v1/assessments") in protected and len(protected) >= 7, protected
    with stack.client() as anon, stack.client("feqa_0000000000000000_not-a-real-key") as forged:
        for method, path in protected:
            for http in (anon, forged):
                r = http.request(method, fill(path))
                assert r.status_code == 401, (method, path, r.status_code, r.text[:300])
                assert r.headers["content-type"].startswith("application/problem+json")
                assert r.json()["code"] == "unauthorized" and r.headers.get("www-authenticate") == "Bearer"
        for method, path in sorted(r for r in routes if is_public(*r)):
            r = anon.request(method, fill(path), json={"api_key": "x"} if method == "POST" else None)
            assert r.status_code != 401 or path == "/v1/session", (method, path, r.status_code)
        assert anon.get("/v1/session").json()["authenticated"] is False


def test_revoked_key_is_refused(stack):
    key = stack.create_key("tenant-r")
    stack.store().revoke_key(key.split("_")[1])
    with stack.client(key) as http:
        r = http.get("/v1/models")
    assert r.status_code == 401 and r.json()["code"] == "unauthorized"


def test_other_tenant_gets_404_on_every_verb(stack, scored):
    aid = scored["id"]
    other = stack.create_key("tenant-b")
    with stack.client(other) as b:
        for method, path in (("GET", f"/v1/assessments/{aid}"), ("GET", f"/v1/assessments/{aid}/fhir"),
                             ("GET", f"/v1/assessments/{aid}/items/0/overlay.png"),
                             ("GET", f"/v1/assessments/{aid}/items/0/trajectories.png"),
                             ("POST", f"/v1/assessments/{aid}/retry"), ("DELETE", f"/v1/assessments/{aid}")):
            r = b.request(method, path)
            assert r.status_code == 404, (method, path, r.status_code, r.text)
            assert r.json()["code"] == "not_found" and PATIENT not in r.text
    with stack.client(scored["key"]) as a:      # and B's DELETE changed nothing
        body = a.get(f"/v1/assessments/{aid}").json()
        assert body["status"] == "succeeded" and body["patient_ref"] == PATIENT
        assert a.get(f"/v1/assessments/{aid}/items/0/overlay.png").status_code == 200


def test_rate_limit_answers_429_with_retry_after(stack):
    key, other = stack.create_key("tenant-rl"), stack.create_key("tenant-rl")
    with stack.client(key) as http:
        # Until the first 429 (at most twice the rate: on a loaded machine the bucket refills meanwhile).
        codes: list[int] = []
        while len(codes) < 2 * RATE and 429 not in codes:
            codes.append(http.get("/v1/models").status_code)
        r = http.get("/v1/models")
    assert codes[:RATE - 5].count(200) == RATE - 5, codes          # the burst allowance is honoured
    assert r.status_code == 429 and codes.count(429) >= 1, codes
    assert r.json()["code"] == "rate_limited"
    assert r.headers["content-type"].startswith("application/problem+json")
    assert 1 <= int(r.headers["retry-after"]) <= 60
    with stack.client(other) as http:                              # per key: another key is unaffected
        assert http.get("/v1/models").status_code == 200


def test_audit_log_records_every_access(stack, scored, video):
    from worker.jobs.db import AuditEvent  # noqa: F401  (the table the API writes)

    key = stack.create_key("tenant-audit")
    key_id = key.split("_")[1]
    with stack.client(key) as http:
        aid = upload(http, video, patient_ref=PATIENT).json()["id"]
        stack.wait_done(http, aid)
        pictures_drawn(http, aid)
        store = stack.store()
        reads_before = sum(e.action == "read" for e in store.audit_events(aid))
        assert http.get(f"/v1/assessments/{aid}").status_code == 200
        assert http.get(f"/v1/assessments/{aid}/fhir").status_code == 200
        assert http.get(f"/v1/assessments/{aid}/items/0/overlay.png").status_code == 200
        assert http.delete(f"/v1/assessments/{aid}").status_code == 204
        assert http.get(f"/v1/assessments/{aid}").status_code == 404   # gone for everyone
    events = store.audit_events(aid)
    actions = [e.action for e in events]
    assert actions[0] == "upload"
    assert sum(a == "read" for a in actions) == reads_before + 1
    for action in ("fhir_export", "download", "delete"):
        assert actions.count(action) == 1, actions
    assert {e.actor for e in events} == {key_id} and {e.tenant for e in events} == {"tenant-audit"}
    assert all(PATIENT not in repr(e.detail) for e in events)        # the trail holds no patient data
    with store.session() as s:
        from worker.jobs.db import Assessment

        assert s.get(Assessment, aid).patient_ref is None               # deletion scrubs the reference


def test_no_secret_or_patient_data_in_any_log(stack, scored):
    key = scored["key"]
    secret_part = key.split("_", 2)[2]
    with stack.client(key) as http:     # exercise the read paths too, and a failing request with the key
        http.get(f"/v1/assessments/{scored['id']}/fhir")
        http.get("/v1/assessments/does-not-exist")
        upload(http, b"not a video", name=FILENAME, patient_ref=PATIENT)
    logs = {p: p.read_text(errors="replace") for p in stack.var_dir.rglob("*.log")}
    assert {p.name for p in logs} >= {"api.log", "worker0.log"}, list(logs)
    assert any("ready" in text for text in logs.values())         # the logs are real and non-empty
    needles = {"patient_ref": PATIENT, "api key": key, "api key secret": secret_part,
               "file name": FILENAME, "file name stem": "Jane_Doe"}
    for path, text in logs.items():
        for what, needle in needles.items():
            assert needle not in text, f"{what} found in {path}"
        assert not re.search(r"Bearer\s+feqa_", text), f"an Authorization header in {path}"


def test_web_session_cookie_and_page_headers(stack, scored):
    """The web form's key lives in an HttpOnly, SameSite=Strict cookie; the page forbids framing and
    foreign scripts; a wrong key signs nobody in."""
    with stack.client() as anon:
        bad = anon.post("/v1/session", json={"api_key": "feqa_0000000000000000_wrong"})
        assert bad.status_code == 401 and "set-cookie" not in bad.headers
        page = anon.get("/")
        assert page.status_code == 200
        csp = page.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        assert scored["key"] not in page.text
    with stack.client() as browser:
        r = browser.post("/v1/session", json={"api_key": scored["key"]})
        assert r.status_code == 201, r.text
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert browser.get(f"/v1/assessments/{scored['id']}").status_code == 200   # the cookie authenticates
        assert browser.delete("/v1/session").status_code == 204
