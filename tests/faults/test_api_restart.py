"""The API restarts during uploads: completed uploads are kept, partial ones leave nothing behind.

Given an API (SQLite job store and broker, no worker needed), when three uploads complete and two more are
half-sent, and the API process is killed with SIGKILL and started again, then the three completed
assessments are there with their videos, the half-sent uploads have no assessment, and their partial
files (`*.part`) are removed by the restarted API's housekeeping. A client that gives up mid-upload on a
live API leaves no partial file either.
"""
from __future__ import annotations

import signal
import threading
import time
import uuid

import httpx
import pytest

from bench.servers import api_cmd, feqa_stack, start, wait_listening
from tests.faults.support import leftovers, upload, upload_files, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def multipart(video: bytes, boundary: str) -> tuple[bytes, bytes]:
    """The body of an upload, split into a head (fields + first half of the video) and a tail."""
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"expression\"\r\n\r\nsmile\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"video\"; filename=\"v.mp4\"\r\n"
            "Content-Type: video/mp4\r\n\r\n").encode()
    half = len(video) // 2
    return head + video[:half], video[half:] + f"\r\n--{boundary}--\r\n".encode()


def stalled_upload(base_url: str, key: str, video: bytes, release: threading.Event, out: list) -> None:
    """Send half the body, then wait for `release` before sending the rest (or failing to)."""
    boundary = uuid.uuid4().hex
    head, tail = multipart(video, boundary)

    def body():
        yield head
        release.wait(60)
        yield tail

    try:
        r = httpx.post(f"{base_url}/v1/assessments", content=body(), timeout=60,
                       headers={"Authorization": f"Bearer {key}",
                                "Content-Type": f"multipart/form-data; boundary={boundary}"})
        out.append(r.status_code)
    except httpx.HTTPError as exc:
        out.append(type(exc).__name__)


def test_sigkill_during_uploads_keeps_completed_and_cleans_partial(models, video, tmp_path):
    data = video.read_bytes()
    env = {"FEQA_PARTIAL_UPLOAD_MAX_AGE_S": "1"}
    with feqa_stack(tmp_path, model_dir=models, workers=0, ready=False, env=env) as stack:
        key = stack.create_key("clinic")
        with stack.client(key) as http:
            done = [upload(http, data, name=f"ok{i}.mp4") for i in range(3)]
        assert [r.status_code for r in done] == [202] * 3
        done_ids = [r.json()["id"] for r in done]

        release, results = threading.Event(), []
        threads = [threading.Thread(target=stalled_upload, args=(stack.base_url, key, data, release, results))
                   for _ in range(2)]
        for t in threads:
            t.start()
        wait_for(lambda: len(leftovers(stack.var_dir)) == 2, 20, "two partial uploads on disk")

        # When: the API dies mid-upload, without any chance to clean up.
        api = stack.procs[0]
        api.kill(signal.SIGKILL)
        api.popen.wait(10)
        release.set()
        for t in threads:
            t.join(30)
        assert len(results) == 2 and 202 not in results, results   # the half-sent uploads were not accepted
        assert len(leftovers(stack.var_dir)) == 2                  # what a killed process leaves behind

        time.sleep(1.2)   # older than FEQA_PARTIAL_UPLOAD_MAX_AGE_S
        port = int(stack.base_url.rsplit(":", 1)[1])
        stack.procs[0] = start("api", api_cmd(port), stack.env, stack.var_dir / "logs")
        wait_listening(stack.base_url, proc=stack.procs[0])

        # Then: the completed uploads are all there, with their videos; the partial files are gone.
        assert leftovers(stack.var_dir) == []
        with stack.client(key) as http:
            for aid in done_ids:
                body = http.get(f"/v1/assessments/{aid}").json()
                assert body["status"] == "queued", body
                assert [p.name for p in upload_files(stack.var_dir, aid)] == ["0.video"]
        uploads = sorted(p.name for p in (stack.var_dir / "storage" / "uploads").iterdir())
        assert uploads == sorted(done_ids)      # no directory left by the dead uploads


def test_client_abandoning_an_upload_leaves_no_partial_file(models, video, tmp_path):
    data = video.read_bytes()
    with feqa_stack(tmp_path, model_dir=models, workers=0, ready=False) as stack:
        key = stack.create_key("clinic")
        boundary = uuid.uuid4().hex
        head, _ = multipart(data, boundary)
        port = int(stack.base_url.rsplit(":", 1)[1])
        import socket

        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall((f"POST /v1/assessments HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
                       f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                       f"Content-Length: {len(head) * 2}\r\n\r\n").encode() + head)
            wait_for(lambda: len(leftovers(stack.var_dir)) == 1, 20, "the partial upload on disk")
        # The client hung up: the API notices the disconnect and removes what it wrote.
        wait_for(lambda: leftovers(stack.var_dir) == [], 20, "the partial upload removed")
        uploads = stack.var_dir / "storage" / "uploads"
        assert not uploads.exists() or not any(p.is_file() for p in uploads.rglob("*"))
