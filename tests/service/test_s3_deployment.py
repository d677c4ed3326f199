"""API and worker processes on object storage: nothing on a shared disk.

A real stack (API process, a Celery worker process, Redis broker, SQLite job store) whose only
storage is a bucket on a real S3-speaking server: the upload streams to the bucket, the worker
fetches it, the pictures are served from the bucket, and deletion empties it.
"""
from __future__ import annotations

import time

import pytest

from bench.servers import feqa_stack, untrained_models
from tests.conftest import real_video
from tests.s3server import moto_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_assessment_through_object_storage(tmp_path):
    models = untrained_models(tmp_path / "models", expressions=("smile",))
    with moto_server(tmp_path / "s3") as s3, \
            feqa_stack(tmp_path, model_dir=models, broker="redis", env=s3.env("clinic-a/")) as stack:
        key = stack.create_key("clinic")
        with stack.client(key) as http:
            video = real_video()
            r = http.post("/v1/assessments", files={"video": ("clip.mp4", video.read_bytes(), "video/mp4")},
                          data={"expression": "smile"})
            assert r.status_code == 202, r.text
            aid = r.json()["id"]
            body = stack.wait_done(http, aid, timeout=180)
            assert body["status"] == "succeeded", body
            item = body["items"][0]
            # The pictures come from the bucket, through the API.
            for _ in range(100):
                if item["pictures"] != "pending":
                    break
                time.sleep(0.2)
                item = http.get(f"/v1/assessments/{aid}").json()["items"][0]
            assert item["pictures"] == "ready", item
            link = item["links"]["overlay"]
            png = http.get(link)
            assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
            stored = s3.keys("clinic-a/")
            assert f"clinic-a/artifacts/{aid}/0/overlay.png" in stored
            # Nothing of the assessment lives on the processes' disk.
            assert not (stack.var_dir / "storage").exists()
            assert http.delete(f"/v1/assessments/{aid}").status_code == 204
        assert not [k for k in s3.keys("clinic-a/") if aid in k]
