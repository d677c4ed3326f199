"""`feqa batch` against a real running service (API + Celery worker from bench/servers.py).

Given a folder with two real face videos and one broken file, when `feqa batch` runs, then the output
has one row per video (scores and model facts for the good ones, the error code for the bad one) and
the exit status is 1; a re-run skips the finished rows, a run without the output file is answered by
the server's idempotency (no new jobs), and --rescore makes new jobs. A manifest of good videos exits 0.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bench.servers import PYTHON
from tests.conftest import ROOT, real_video

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(web_stack):
    return web_stack


def batch(stack, key: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "FEQA_API_KEY": key}
    return subprocess.run([PYTHON, "-m", "service.cli", "batch", *args, "--api", stack.base_url, "--poll", "0.3"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)


def n_assessments(stack) -> int:
    from worker.jobs.db import Assessment

    with stack.store().session() as s:
        return s.scalar(select(func.count()).select_from(Assessment))


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        return {Path(r["video"]).name: r for r in csv.DictReader(f)}


def test_folder_run_rerun_idempotency_and_rescore(stack, tmp_path):
    key = stack.create_key("hospital-it")
    folder = tmp_path / "videos"
    folder.mkdir()
    shutil.copyfile(real_video(), folder / "P01_smile.mp4")
    shutil.copyfile(real_video(), folder / "P02_frown.mp4")
    (folder / "P03_smile.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"not a video" * 300)
    out = tmp_path / "scores.csv"
    before = n_assessments(stack)

    # First run: two scored, one refused by the API; exit 1 because one failed.
    first = batch(stack, key, str(folder), "--out", str(out), "--concurrency", "2")
    assert first.returncode == 1, first.stderr + stack.logs()
    rows = read_csv(out)
    assert set(rows) == {"P01_smile.mp4", "P02_frown.mp4", "P03_smile.mp4"}
    for name, expr, patient in (("P01_smile.mp4", "smile", "P01"), ("P02_frown.mp4", "frown", "P02")):
        r = rows[name]
        assert (r["status"], r["expression"], r["patient_ref"]) == ("succeeded", expr, patient), r
        assert r["assessment_id"] and r["model_version"] and r["model_name"].startswith(expr)
        assert r["trained_on"] == "untrained" and r["clinical_use"] == "false"
        assert r["quality_scorable"] in ("true", "false")
        if r["abstained"] == "true":
            assert r["score"] == "" and r["quality_reasons"]
        else:
            assert 0.0 <= float(r["score"]) <= 4.0
    bad = rows["P03_smile.mp4"]
    assert (bad["status"], bad["error_code"]) == ("failed", "not_a_video")
    assert "%" in first.stderr or "video" in first.stderr  # the progress bar / summary go to stderr
    assert n_assessments(stack) == before + 2

    # Re-run with the same output: the finished rows are skipped, nothing new is created.
    second = batch(stack, key, str(folder), "--out", str(out))
    assert second.returncode == 1
    assert "skipping 2" in second.stderr
    again = read_csv(out)
    assert {n: r["assessment_id"] for n, r in again.items()} == {n: r["assessment_id"] for n, r in rows.items()}
    assert n_assessments(stack) == before + 2

    # Without the output file, the Idempotency-Key (video + expression + model version) finds the same jobs.
    fresh = tmp_path / "fresh.jsonl"
    third = batch(stack, key, str(folder), "--out", str(fresh))
    assert third.returncode == 1
    replayed = {Path(r["video"]).name: r for r in map(json.loads, fresh.read_text().splitlines())}
    assert replayed["P01_smile.mp4"]["assessment_id"] == rows["P01_smile.mp4"]["assessment_id"]
    assert replayed["P01_smile.mp4"]["score"] is not None or replayed["P01_smile.mp4"]["abstained"]
    assert n_assessments(stack) == before + 2

    # --rescore scores everything again as new jobs.
    fourth = batch(stack, key, str(folder), "--out", str(out), "--rescore", "--no-progress")
    assert fourth.returncode == 1
    rescored = read_csv(out)
    assert rescored["P01_smile.mp4"]["assessment_id"] != rows["P01_smile.mp4"]["assessment_id"]
    assert rescored["P01_smile.mp4"]["status"] == "succeeded"
    assert n_assessments(stack) == before + 4


def test_manifest_of_good_videos_exits_0_and_a_wrong_key_exits_2(stack, tmp_path):
    key = stack.create_key("hospital-it-2")
    shutil.copyfile(real_video(), tmp_path / "clip.mp4")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("video,expression,patient_ref\nclip.mp4,smile,P77\n")
    out = tmp_path / "out.csv"
    done = batch(stack, key, str(manifest), "--out", str(out), "--protocol", "pfed5")
    assert done.returncode == 0, done.stderr + stack.logs()
    row = read_csv(out)["clip.mp4"]
    assert (row["status"], row["patient_ref"], row["expression"]) == ("succeeded", "P77", "smile")

    refused = batch(stack, "feqa_not_a_key", str(manifest), "--out", str(tmp_path / "x.csv"))
    assert refused.returncode == 2
    assert "unauthorized" in refused.stderr


def test_python_client_round_trip_against_the_real_service(stack):
    from service.client import ApiError, FeqaClient

    key = stack.create_key("integrator")
    with FeqaClient(stack.base_url, key) as client:
        versions = client.model_versions()
        assert set(versions) == {"smile", "frown"}
        created = client.submit([(real_video(), "smile")], patient_ref="P9", protocol="pfed5",
                                idempotency_key="round-trip-1")
        assert created["status"] == "queued" and created["id"]
        seen: list[str] = []
        done = client.wait(created["id"], timeout=240, poll=0.3, pictures=True,
                           on_update=lambda j: seen.append(j["status"]))
        assert done["status"] == "succeeded" and seen[-1] == "succeeded"
        item = done["items"][0]
        assert item["result"]["model"]["version"] == versions["smile"]
        assert client.download(item["links"]["overlay"])[:8] == b"\x89PNG\r\n\x1a\n"
        assert client.fhir(created["id"])["resourceType"] == "Observation"
        # The same idempotency key with the same content gives the same assessment back (issue 14: the key is
        # bound to the videos, expressions, patient and protocol; other content is 422 idempotency_key_reused).
        assert client.submit([(real_video(), "smile")], patient_ref="P9", protocol="pfed5",
                             idempotency_key="round-trip-1")["id"] == created["id"]
        client.delete(created["id"])
        with pytest.raises(ApiError) as gone:
            client.get(created["id"])
        assert gone.value.status in (404, 410)
        with pytest.raises(ApiError) as err:
            client.submit([(real_video(), "grin")])
        assert (err.value.status, err.value.code) == (422, "unknown_expression")
