"""A client generated from the running server's /openapi.json (openapi-python-client) works end to end.

Given the real service (API + worker, web_stack) and a client generated from its /openapi.json, when the
client uploads a video, polls, reads a picture and makes requests that fail, then every answer parses
into the generated types: AssessmentCreated / AssessmentOut (with the result's `video` facts), the PNG as
a File, and a typed Problem (with its code) for 401, 404, 409, 413, 415 and 422.
(Kept beside the web tests to share their running service.)
"""
from __future__ import annotations

import importlib
import io
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from bench.servers import PYTHON
from tests.conftest import real_video
from tests.web.conftest import MAX_UPLOAD

pytestmark = [pytest.mark.integration, pytest.mark.slow]
GENERATOR = Path(PYTHON).parent / "openapi-python-client"
# openapi-python-client reads only JSON and octet-stream bodies: it is told to treat these as such.
CONFIG = """post_hooks: []
content_type_overrides:
  image/png: application/octet-stream
  application/fhir+json: application/json
"""


@pytest.fixture(scope="module")
def gen(web_stack, tmp_path_factory):
    """The generated package, imported from a temporary folder."""
    tmp = tmp_path_factory.mktemp("generated")
    (tmp / "openapi.json").write_text(httpx.get(f"{web_stack.base_url}/openapi.json", timeout=30).text)
    (tmp / "config.yml").write_text(CONFIG)
    name = f"feqa_generated_{uuid.uuid4().hex[:6]}"
    done = subprocess.run([str(GENERATOR), "generate", "--path", str(tmp / "openapi.json"), "--output-path",
                           str(tmp / name), "--meta", "none", "--config", str(tmp / "config.yml")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Warning" not in done.stdout + done.stderr, done.stdout + done.stderr   # nothing was left out
    sys.path.insert(0, str(tmp))
    try:
        pkg = importlib.import_module(name)
        yield type("Generated", (), {
            "pkg": pkg, "api": lambda mod: importlib.import_module(f"{name}.api.{mod}"),
            "models": importlib.import_module(f"{name}.models"), "types": importlib.import_module(f"{name}.types")})
    finally:
        sys.path.remove(str(tmp))


def upload(gen, client, content: bytes, expression: str = "smile", **kw):
    api = gen.api("assessments.create_assessment")
    m = gen.models
    body = m.CreateAssessmentBody(video=[gen.types.File(payload=io.BytesIO(content), file_name="clip.mp4",
                                                          mime_type="video/mp4")],
                                  expression=[m.CreateAssessmentBodyExpressionItem(expression)])
    return api.sync_detailed(client=client, body=body, **kw)


def assert_problem(gen, response, status: int, code: str) -> None:
    assert response.status_code == status, (response.status_code, response.content[:300])
    problem = response.parsed
    assert isinstance(problem, gen.models.Problem), (status, response.content[:300])
    assert (problem.status, problem.code) == (status, code) and problem.title and problem.detail


def test_generated_client_uploads_polls_reads_a_picture_and_gets_typed_problems(gen, web_stack):
    key = web_stack.create_key("generated-client")
    client = gen.pkg.AuthenticatedClient(base_url=web_stack.base_url, token=key, timeout=httpx.Timeout(60.0))
    m = gen.models
    get_assessment = gen.api("assessments.get_assessment")

    created = upload(gen, client, real_video().read_bytes(), idempotency_key=uuid.uuid4().hex)
    assert created.status_code == 202 and isinstance(created.parsed, m.AssessmentCreated), created.content
    aid = created.parsed.id
    deadline = time.monotonic() + 180
    while True:
        job = get_assessment.sync(client=client, assessment_id=aid)
        assert isinstance(job, m.AssessmentOut)
        if job.status.value in ("succeeded", "failed", "partly_failed") and job.items[0].pictures.value != "pending":
            break
        assert time.monotonic() < deadline, web_stack.logs()
        time.sleep(0.3)
    item = job.items[0]
    assert job.status.value == "succeeded" and item.result.expression == "smile", web_stack.logs()
    assert item.result.model.trained_on == "untrained" and item.result.model.version
    assert item.result.video.duration_s > 0 and item.result.video.n_frames > 0   # the `video` field is typed
    # every field the server sends is declared (only the quality report's measures are an open mapping)
    for obj in (job, item, item.progress, item.links, item.result, item.result.model, item.result.video):
        assert obj.additional_properties == {}, (type(obj).__name__, obj.additional_properties)
    picture = gen.api("assessments.get_picture").sync(client=client, assessment_id=aid, index=0, name="overlay")
    assert isinstance(picture, gen.types.File) and picture.payload.read(8) == b"\x89PNG\r\n\x1a\n"
    models = gen.api("models.list_models").sync(client=client)
    assert isinstance(models, m.ModelsOut) and models.expressions == ["smile", "frown"]

    # 401: no key; also the X-API-Key scheme works
    anon = gen.pkg.Client(base_url=web_stack.base_url)
    assert_problem(gen, gen.api("models.list_models").sync_detailed(client=anon), 401, "unauthorized")
    with_header = gen.pkg.Client(base_url=web_stack.base_url, headers={"X-API-Key": key})
    assert isinstance(gen.api("models.list_models").sync(client=with_header), m.ModelsOut)
    # 404: an id that does not exist (for this tenant)
    assert_problem(gen, get_assessment.sync_detailed(client=client, assessment_id="0" * 32), 404, "not_found")
    # 409: nothing failed, so nothing to retry
    assert_problem(gen, gen.api("assessments.retry_assessment").sync_detailed(client=client, assessment_id=aid),
                   409, "nothing_to_retry")
    # 413: larger than the server's limit (refused from Content-Length)
    assert_problem(gen, upload(gen, client, b"\x00" * (MAX_UPLOAD + 200_000)), 413, "upload_too_large")
    # 415: not multipart/form-data (a proxy or a hand-made request that relabels the body)
    def relabel(request: httpx.Request) -> None:
        request.headers["Content-Type"] = "text/plain"

    as_text = gen.pkg.AuthenticatedClient(base_url=web_stack.base_url, token=key,
                                          httpx_args={"event_hooks": {"request": [relabel]}})
    assert_problem(gen, upload(gen, as_text, b"x"), 415, "invalid_request")
    # 422: a task without a served model (refused at upload), a broken video, a header that fails validation
    kiss = upload(gen, client, real_video().read_bytes(), expression="kiss")
    assert_problem(gen, kiss, 422, "model_unavailable")
    assert kiss.parsed.details.additional_properties["served"] == ["smile", "frown"]
    assert_problem(gen, upload(gen, client, b"not a video" * 100), 422, "not_a_video")
    invalid = upload(gen, client, b"x", idempotency_key="k" * 300)
    assert_problem(gen, invalid, 422, "invalid_request")
    assert invalid.parsed.errors[0].loc == ["header", "idempotency-key"]
