"""The Python client against a real (tiny, local) HTTP server: retries, backoff and problem errors."""
from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from service.client import ApiError, ConnectionFailed, FeqaClient, idempotency_key


class Script:
    """Answers to send, in order; the last one repeats."""

    def __init__(self, answers: list[tuple[int, dict, dict]]) -> None:
        self.answers = answers
        self.seen: list[tuple[str, str, dict]] = []


@pytest.fixture()
def server() -> Iterator[tuple[str, Script]]:
    script = Script([])

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            script.seen.append((self.command, self.path, dict(self.headers)))
            status, body, headers = script.answers[min(len(script.seen), len(script.answers)) - 1]
            raw = json.dumps(body).encode()
            self.send_response(status)
            ctype = "application/problem+json" if status >= 400 else "application/json"
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(raw)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(raw)

        do_GET = do_POST = do_DELETE = _answer

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", script
    httpd.shutdown()
    httpd.server_close()


def test_given_503_then_429_when_get_then_retries_with_backoff_and_honours_retry_after(server):
    url, script = server
    script.answers = [(503, {"code": "not_ready"}, {}), (429, {"code": "rate_limited"}, {"Retry-After": "2"}),
                      (200, {"id": "a1", "status": "queued", "items": []}, {})]
    sleeps: list[float] = []
    with FeqaClient(url, "k-123", backoff=0.25, sleep=sleeps.append) as client:
        job = client.get("a1")
    assert job["id"] == "a1"
    assert len(script.seen) == 3
    assert sleeps == [0.25, 2.0]  # exponential first, then the server's Retry-After
    assert script.seen[0][2]["Authorization"] == "Bearer k-123"


def test_given_a_problem_document_when_the_call_fails_then_apierror_carries_its_code(server):
    url, script = server
    script.answers = [(422, {"type": "urn:feqa:problem:unknown_expression", "title": "Unprocessable content",
                             "status": 422, "detail": "unknown expression 'grin'", "code": "unknown_expression"}, {})]
    with FeqaClient(url, None, sleep=lambda s: None) as client, pytest.raises(ApiError) as err:
        client.get("x")
    assert (err.value.status, err.value.code) == (422, "unknown_expression")
    assert "grin" in err.value.detail
    assert len(script.seen) == 1  # a 4xx other than 429 is not retried


def test_given_a_persistent_500_when_retries_run_out_then_the_error_is_raised(server):
    url, script = server
    script.answers = [(500, {"code": "internal_error"}, {})]
    sleeps: list[float] = []
    with FeqaClient(url, None, retries=3, backoff=0.1, sleep=sleeps.append) as client, pytest.raises(ApiError):
        client.models()
    assert len(script.seen) == 4
    assert sleeps == pytest.approx([0.1, 0.2, 0.4])


def test_given_no_server_when_called_then_connection_failed_after_retries():
    sleeps: list[float] = []
    with FeqaClient("http://127.0.0.1:9", None, retries=2, backoff=0.01, sleep=sleeps.append) as client:
        with pytest.raises(ConnectionFailed):
            client.models()
    assert len(sleeps) == 2


def test_given_a_submit_when_retried_then_the_file_is_sent_again_with_the_same_idempotency_key(server, tmp_path):
    url, script = server
    video = tmp_path / "p1_smile.mp4"
    video.write_bytes(b"\x00" * 1000)
    script.answers = [(502, {}, {}), (202, {"id": "a2", "url": "/v1/assessments/a2", "status": "queued"}, {})]
    with FeqaClient(url, "k", sleep=lambda s: None) as client:
        out = client.submit([(video, "smile")], patient_ref="P1", idempotency_key="abc")
    assert out["id"] == "a2"
    assert [h.get("Idempotency-Key") for _, _, h in script.seen] == ["abc", "abc"]
    assert all(int(h["Content-Length"]) > 1000 for _, _, h in script.seen)  # the body was rebuilt for the retry


def test_idempotency_key_depends_on_video_expression_and_model_version():
    base = idempotency_key("v" * 64, "smile", "1.0.0")
    assert base == idempotency_key("v" * 64, "smile", "1.0.0")
    assert len({base, idempotency_key("w" * 64, "smile", "1.0.0"), idempotency_key("v" * 64, "frown", "1.0.0"),
                idempotency_key("v" * 64, "smile", "1.0.1")}) == 4


def test_given_no_idempotency_key_when_a_submit_is_retried_then_both_attempts_carry_the_same_random_key(
        server, tmp_path):
    url, script = server
    video = tmp_path / "v.mp4"
    video.write_bytes(b"\x00" * 10)
    script.answers = [(503, {}, {}), (202, {"id": "a3", "url": "/v1/assessments/a3", "status": "queued"}, {})]
    with FeqaClient(url, "k", sleep=lambda s: None) as client:
        client.submit([(video, "frown")])
    keys = [h.get("Idempotency-Key") for _, _, h in script.seen]
    assert len(keys) == 2 and keys[0] and keys[0] == keys[1]
