"""Bad requests against a real API process (no worker needed: all are refused before queueing)."""
from __future__ import annotations

import httpx
import pytest

from bench.servers import feqa_stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("inputs")
    with feqa_stack(tmp, workers=0, ready=False, env={"FEQA_MAX_UPLOAD_BYTES": str(150_000)}) as s:
        yield s


@pytest.fixture(scope="module")
def keys(stack):
    return stack.create_key("a"), stack.create_key("b")


def post(stack, key, body: bytes, expression="smile", name="clip.mp4"):
    with stack.client(key) as http:
        return http.post("/v1/assessments", files=[("video", (name, body, "video/mp4"))],
                         data={"expression": expression})


@pytest.mark.parametrize("case,status,code", [
    ("empty", 422, "empty_file"),
    ("text", 422, "not_a_video"),
    ("truncated", 422, "not_a_video"),
    ("expression", 422, "unknown_expression"),
    ("too_large", 413, "upload_too_large"),
])
def test_bad_uploads_get_their_status_and_code(stack, keys, video_bytes, case, status, code):
    body = {"empty": b"", "text": b"hello, I am a text file\n" * 50, "truncated": video_bytes[:40_000],
            "expression": video_bytes[:140_000], "too_large": video_bytes}[case]
    r = post(stack, keys[0], body, expression="grin" if case == "expression" else "smile")
    assert (r.status_code, r.json()["code"]) == (status, code), r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["detail"]


def test_too_large_chunked_upload_is_cut_off(stack, keys, video_bytes):
    # no Content-Length: the server counts while streaming and stops at the limit
    boundary = "feqa-test-boundary"

    def body():
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"expression\"\r\n\r\nsmile\r\n"
               f"--{boundary}\r\nContent-Disposition: form-data; name=\"video\"; filename=\"v.mp4\"\r\n"
               "Content-Type: video/mp4\r\n\r\n").encode()
        for _ in range(40):
            yield b"\0" * 8192
        yield f"\r\n--{boundary}--\r\n".encode()

    r = httpx.post(f"{stack.base_url}/v1/assessments", content=body(), timeout=30,
                   headers={"Content-Type": f"multipart/form-data; boundary={boundary}", "X-API-Key": keys[0]})
    assert r.status_code == 413 and r.json()["code"] == "upload_too_large"
    assert not list((stack.var_dir / "storage").rglob("*.part"))


def test_keys_and_tenants(stack, keys):
    assert post(stack, None, b"x").json()["code"] == "unauthorized"
    r = post(stack, "feqa_0000_wrong", b"x")
    assert r.status_code == 401 and r.json()["code"] == "unauthorized"
    with stack.client(keys[1]) as http:
        r = http.get("/v1/assessments/0123456789abcdef0123456789abcdef")
        assert r.status_code == 404 and r.json()["code"] == "not_found"


def test_not_ready_without_workers(stack):
    r = httpx.get(f"{stack.base_url}/readyz")
    assert r.status_code == 503 and r.json()["status"] == "not_ready"
    assert httpx.get(f"{stack.base_url}/healthz").json()["status"] == "ok"
