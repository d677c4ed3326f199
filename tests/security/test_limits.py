"""Limits enforced before the cost they protect, against a real API (the deployed server command) and worker.

Each test is one attack from issue 14, bounded in time and bytes, sent only to 127.0.0.1:
- a body of text fields far over the upload limit is refused while it streams;
- a multipart body without its closing boundary is refused, not scored on the part received;
- a huge header, slow headers, a stalled body and too many headers are cut off by the server;
- a 1.5 KB MP4 whose index claims 50 million samples is refused without the API allocating it;
- concurrent uploads declaring 8192x4096 pictures do not add up in the API process;
- a stream whose pictures grow from 64x64 to 8704x8704 after its first frame fails in the worker with a
  typed code, within the worker's memory bound;
- a client hanging up mid-upload leaves no traceback in the log;
- a read-only upload directory answers a typed 503.
Memory is read from /proc/<pid>/status (peak reset through /proc/<pid>/clear_refs before each attack).
"""
from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.attacks import declared_huge, sample_table_bomb, size_switch_stream
from bench.servers import feqa_stack
from tests.faults.support import leftovers, upload, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LIMIT = 2 * 1024 * 1024
MB = 1024 * 1024
ENV = {"FEQA_MAX_UPLOAD_BYTES": str(LIMIT), "FEQA_HEADER_TIMEOUT_S": "1", "FEQA_BODY_IDLE_TIMEOUT_S": "1.5",
       "FEQA_RATE_LIMIT_PER_MINUTE": "0"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, models) -> Iterator:
    tmp = tmp_path_factory.mktemp("limits")
    with feqa_stack(tmp, model_dir=models, env=ENV) as s:
        s.key = s.create_key("clinic")
        yield s


def port_of(stack) -> int:
    return int(stack.base_url.rsplit(":", 1)[1])


def rss(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1]) * 1024
    return out


def reset_peak(pid: int) -> int:
    """Reset VmHWM to the current RSS; returns the current RSS."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return rss(pid)["VmRSS"]


def api_pid(stack) -> int:
    return stack.procs[0].popen.pid


def head(stack, extra: str = "", *, boundary: str, length: int | None = None) -> bytes:
    size = f"Content-Length: {length}\r\n" if length is not None else "Transfer-Encoding: chunked\r\n"
    return (f"POST /v1/assessments HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {stack.key}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n{size}{extra}\r\n").encode()


def recv_some(sock: socket.socket, timeout: float) -> bytes:
    """The server's answer: the first read, then whatever follows within a moment (the head and the body of
    an answer can arrive in separate reads), until the server closes or `timeout` passes."""
    sock.settimeout(timeout)
    deadline, out = time.monotonic() + timeout, b""
    try:
        out = sock.recv(65536)
        while out and time.monotonic() < deadline:
            sock.settimeout(max(0.05, min(0.5, deadline - time.monotonic())))
            more = sock.recv(65536)
            if not more:
                break
            out += more
    except (TimeoutError, ConnectionResetError, OSError):
        pass
    return out


def send_until_answer(sock: socket.socket, chunks, budget: int, deadline_s: float = 30) -> tuple[int, bytes]:
    """Send chunks until the server answers, hangs up or `budget` bytes are out; (bytes sent, answer)."""
    sent, deadline = 0, time.monotonic() + deadline_s
    for chunk in chunks:
        if sent >= budget or time.monotonic() > deadline:
            break
        if select.select([sock], [], [], 0)[0]:
            return sent, recv_some(sock, 2)
        try:
            sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            return sent, recv_some(sock, 2)
        sent += len(chunk)
    return sent, recv_some(sock, 5)


def test_text_fields_count_against_the_upload_limit(stack):
    """48 MiB of `patient_ref` fields (no file at all): refused after a few kilobytes, not parsed whole."""
    boundary = uuid.uuid4().hex
    field = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"patient_ref\"\r\n\r\n"
             + "p" * 4000 + "\r\n").encode()
    pid = api_pid(stack)
    before = reset_peak(pid)

    def chunks():
        for _ in range(48 * MB // len(field)):
            yield b"%x\r\n%s\r\n" % (len(field), field)

    with socket.create_connection(("127.0.0.1", port_of(stack))) as s:
        s.sendall(head(stack, boundary=boundary))
        sent, answer = send_until_answer(s, chunks(), budget=16 * MB)
    assert answer.startswith((b"HTTP/1.1 413", b"HTTP/1.1 422")), (sent, answer[:300])
    assert sent < 8 * MB, sent                               # cut off early, not at the end of 48 MiB
    assert rss(pid)["VmHWM"] - before < 100 * MB


def test_total_body_counts_fields_and_files(stack):
    """A body just over the limit made of one file and padding fields is refused as too large."""
    boundary = uuid.uuid4().hex
    video_part = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"video\"; filename=\"a.mp4\"\r\n"
                  "Content-Type: video/mp4\r\n\r\n").encode() + b"\0" * (LIMIT - 8 * 1024) + b"\r\n"
    pad = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"expression\"\r\n\r\n" + "x" * 4000
           + "\r\n").encode()
    body = video_part + pad * 20 + f"--{boundary}--\r\n".encode()     # files under, whole body over the limit

    def chunked():          # no Content-Length: only counting while streaming can refuse it
        for i in range(0, len(body), 64 * 1024):
            yield body[i:i + 64 * 1024]

    r = httpx.post(f"{stack.base_url}/v1/assessments", content=chunked(), timeout=30,
                   headers={"Authorization": f"Bearer {stack.key}",
                            "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 413, r.text
    assert r.json()["code"] == "upload_too_large", r.text
    assert leftovers(stack.var_dir) == []


def test_body_without_closing_boundary_is_refused(stack, video):
    boundary = uuid.uuid4().hex
    data = video.read_bytes()
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"expression\"\r\n\r\nsmile\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"video\"; filename=\"a.mp4\"\r\n"
            "Content-Type: video/mp4\r\n\r\n").encode() + data          # no "\r\n--boundary--"
    r = httpx.post(f"{stack.base_url}/v1/assessments", content=body, timeout=30,
                   headers={"Authorization": f"Bearer {stack.key}",
                            "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 400, (r.status_code, r.text)
    assert r.json()["code"] == "invalid_request"
    assert leftovers(stack.var_dir) == []


def healthz_latencies(stack, stop: threading.Event, out: list[float]) -> None:
    with httpx.Client(base_url=stack.base_url, timeout=10) as http:
        while not stop.is_set():
            t = time.perf_counter()
            http.get("/healthz")
            out.append(time.perf_counter() - t)
            time.sleep(0.02)


def test_huge_header_is_cut_off_and_others_are_served(stack):
    """A header growing to 100 MiB: refused after the header limit, while /healthz keeps answering."""
    stop, lat = threading.Event(), []
    probe = threading.Thread(target=healthz_latencies, args=(stack, stop, lat), daemon=True)
    probe.start()
    wait_for(lambda: len(lat) >= 3, 10, "healthz answering")
    pid = api_pid(stack)
    before = reset_peak(pid)
    block = b"a" * (256 * 1024)

    def chunks():
        yield b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "
        for _ in range(400):              # 100 MiB
            yield block

    try:
        with socket.create_connection(("127.0.0.1", port_of(stack))) as s:
            sent, answer = send_until_answer(s, chunks(), budget=100 * MB)
    finally:
        time.sleep(0.3)
        stop.set()
        probe.join(10)
    assert sent < 16 * MB, sent                               # the server stopped reading long before
    assert answer == b"" or answer.startswith((b"HTTP/1.1 400", b"HTTP/1.1 431")), answer[:200]
    assert lat and max(lat) < 1.0, max(lat)
    assert rss(pid)["VmHWM"] - before < 100 * MB


def test_slow_headers_are_timed_out(stack):
    with socket.create_connection(("127.0.0.1", port_of(stack))) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")       # never finished
        t = time.monotonic()
        s.settimeout(8)
        try:
            data = s.recv(1024)
        except TimeoutError:
            data = None
    assert data is not None and data == b"", data            # closed by the server, not left open
    assert time.monotonic() - t < 5


def test_stalled_body_gets_408(stack):
    boundary = uuid.uuid4().hex
    part = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"video\"; filename=\"a.mp4\"\r\n"
            "Content-Type: video/mp4\r\n\r\n").encode() + b"\0" * 1000
    with socket.create_connection(("127.0.0.1", port_of(stack))) as s:
        s.sendall(head(stack, boundary=boundary, length=len(part) + 100_000) + part)
        t = time.monotonic()
        answer = recv_some(s, 8)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:300]
    assert b"request_timeout" in answer
    assert time.monotonic() - t < 6
    wait_for(lambda: leftovers(stack.var_dir) == [], 5, "the partial upload removed")


def test_too_many_headers_get_431(stack):
    headers = {f"X-H{i}": "1" for i in range(150)}
    r = httpx.get(f"{stack.base_url}/healthz", headers=headers, timeout=10)
    assert r.status_code == 431, r.status_code
    assert r.json()["code"] == "headers_too_large"


def test_sample_table_bomb_is_refused_without_allocating(stack, tmp_path):
    bomb = sample_table_bomb(tmp_path / "bomb.mp4", 50_000_000)
    assert bomb.stat().st_size < 4096
    pid = api_pid(stack)
    before = reset_peak(pid)
    with stack.client(stack.key) as http:
        r = upload(http, bomb)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "video_too_large"
    assert rss(pid)["VmHWM"] - before < 100 * MB


def test_concurrent_huge_picture_uploads_stay_bounded(stack, tmp_path):
    big = declared_huge(tmp_path / "huge.mp4", 8192, 1, height=4096)
    pid = api_pid(stack)
    before = reset_peak(pid)
    codes: list = []

    def one():
        with stack.client(stack.key) as http:
            r = upload(http, big)
            codes.append((r.status_code, r.json().get("code")))

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert codes == [(422, "video_too_large")] * 6, codes
    assert rss(pid)["VmHWM"] - before < 100 * MB


def test_stream_growing_past_the_limit_fails_in_the_worker_bounded(stack, tmp_path):
    clip = size_switch_stream(tmp_path / "switch.mp4", 8704)
    worker = stack.workers[0].popen.pid
    before = reset_peak(worker)
    with stack.client(stack.key) as http:
        r = upload(http, clip)
        if r.status_code == 422:                 # refused at the edge is fine too
            assert r.json()["code"] == "video_too_large", r.text
            return
        assert r.status_code == 202, r.text
        body = stack.wait_done(http, r.json()["id"], timeout=120)
    assert body["status"] == "failed", body
    assert body["items"][0]["error"]["code"] == "video_too_large", body
    assert rss(worker)["VmHWM"] - before < 300 * MB


def test_client_hang_up_leaves_no_traceback(stack, video):
    log = stack.procs[0].log
    start = log.stat().st_size
    boundary = uuid.uuid4().hex
    data = video.read_bytes()
    part = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"video\"; filename=\"a.mp4\"\r\n"
            "Content-Type: video/mp4\r\n\r\n").encode() + data[: len(data) // 2]
    with socket.create_connection(("127.0.0.1", port_of(stack))) as s:
        s.sendall(head(stack, boundary=boundary, length=len(data) * 2) + part)
        wait_for(lambda: len(leftovers(stack.var_dir)) == 1, 10, "the partial upload on disk")
    wait_for(lambda: leftovers(stack.var_dir) == [], 10, "the partial upload removed")
    time.sleep(0.5)
    text = log.read_bytes()[start:].decode(errors="replace")
    assert "Traceback" not in text and "Exception in ASGI" not in text, text[-3000:]


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Root ignores modes: an immutable directory (chattr +i) refuses even root's writes."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(path)], check=True)
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        path.chmod(0o555)
        try:
            yield
        finally:
            path.chmod(0o700)


def test_read_only_upload_directory_answers_503(stack, video):
    with read_only(stack.var_dir / "storage" / "uploads"), stack.client(stack.key) as http:
        r = upload(http, video)
    assert r.status_code == 503, r.text
    assert r.json()["code"] == "storage_unavailable"
    assert "Retry-After" in r.headers
