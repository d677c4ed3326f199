"""`feqa batch` as hospital IT schedules it, against the real service (API + Celery worker + Redis).

Given a folder with good videos (MP4 and FLV), a broken one, a text file, a video of an expression no
model serves and one whose expression cannot be told, when `feqa batch` runs, then every file has a row in
path order (although they finish in another order), typed values survive a re-run in JSONL and CSV, a
summary line per error code ends the run, `--dry-run` sends nothing, and Ctrl-C (SIGINT to the real
process) stops it within 2 s with a summary and no traceback, and the next run resumes.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import time
from fractions import Fraction
from pathlib import Path

import pytest

from bench.servers import PYTHON
from tests.conftest import ROOT, real_video
from tests.web.test_batch import batch, n_assessments

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def to_flv(src: Path, dst: Path) -> Path:
    """The real clip re-encoded into an FLV container (FLV1 codec), which the service decodes."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w", format="flv") as out:
        v = inp.streams.video[0]
        ost = out.add_stream("flv", rate=30)
        ost.width, ost.height, ost.pix_fmt, ost.bit_rate = v.width, v.height, "yuv420p", 2_000_000
        ost.codec_context.time_base = Fraction(1, 30)
        for i, frame in enumerate(inp.decode(video=0)):
            frame = frame.reformat(format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, 30)
            for packet in ost.encode(frame):
                out.mux(packet)
        for packet in ost.encode():
            out.mux(packet)
    return dst


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("it-folder")
    shutil.copyfile(real_video(), d / "A01_smile.mp4")                      # good, slowest to finish
    (d / "A02_smile.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"junk" * 500)   # refused at upload: fast
    to_flv(real_video(), d / "A03_frown.flv")                               # good, FLV
    (d / "A04_notes.txt").write_text("not a video")                         # unsupported_file
    shutil.copyfile(real_video(), d / "A05_kiss.mp4")                       # no Toronto model served
    shutil.copyfile(real_video(), d / "A06_holiday.mp4")                    # expression_not_recognised
    (d / ".DS_Store").write_bytes(b"\x00")                                 # hidden: no row
    return d


EXPECTED = [("A01_smile.mp4", "succeeded", None), ("A02_smile.mp4", "failed", "not_a_video"),
            ("A03_frown.flv", "succeeded", None), ("A04_notes.txt", "skipped", "unsupported_file"),
            ("A05_kiss.mp4", "failed", "model_unavailable"), ("A06_holiday.mp4", "failed", "expression_not_recognised")]


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_file_gets_a_row_in_input_order_and_types_survive_reruns(web_stack, folder, tmp_path):
    key = web_stack.create_key("it-schedule")
    out = tmp_path / "scores.jsonl"
    first = batch(web_stack, key, str(folder), "--out", str(out), "--concurrency", "3", "--no-progress")
    assert first.returncode == 1, first.stderr + web_stack.logs()
    rows = jsonl(out)
    assert [(Path(r["video"]).name, r["status"], r["error_code"]) for r in rows] == EXPECTED, first.stderr
    by_name = {Path(r["video"]).name: r for r in rows}
    for name in ("A01_smile.mp4", "A03_frown.flv"):
        r = by_name[name]
        assert isinstance(r["abstained"], bool) and isinstance(r["clinical_use"], bool), r
        assert r["score"] is None if r["abstained"] else isinstance(r["score"], float), r
        assert r["model_version"] and r["model_name"].startswith(r["expression"])
    assert by_name["A02_smile.mp4"]["model_version"] == by_name["A01_smile.mp4"]["model_version"]
    assert "InvalidDataError" not in out.read_text() and "Error)" not in out.read_text()
    assert by_name["A02_smile.mp4"]["error_message"].endswith("upload that file.")
    for code in ("not_a_video", "unsupported_file", "model_unavailable", "expression_not_recognised"):
        assert f"feqa batch:   {code}: 1 - " in first.stderr, first.stderr
    assert "2 succeeded (0 from earlier runs)" in first.stderr

    # A re-run keeps the finished rows as they were: same values, same JSON types, same order.
    second = batch(web_stack, key, str(folder), "--out", str(out), "--no-progress")
    assert second.returncode == 1 and "skipping 2" in second.stderr
    again = jsonl(out)
    assert [r for r in again if r["status"] == "succeeded"] == [r for r in rows if r["status"] == "succeeded"]
    assert [Path(r["video"]).name for r in again] == [name for name, _, _ in EXPECTED]

    # CSV: the re-run writes the kept rows back byte for byte.
    out_csv = tmp_path / "scores.csv"
    assert batch(web_stack, key, str(folder), "--out", str(out_csv), "--no-progress").returncode == 1
    kept_before = [line for line in out_csv.read_text().splitlines() if ",succeeded," in line]
    assert batch(web_stack, key, str(folder), "--out", str(out_csv), "--no-progress").returncode == 1
    assert [line for line in out_csv.read_text().splitlines() if ",succeeded," in line] == kept_before
    with open(out_csv, newline="") as f:
        assert [Path(r["video"]).name for r in csv.DictReader(f)] == [name for name, _, _ in EXPECTED]


def test_dry_run_lists_what_would_be_sent_and_sends_nothing(web_stack, folder, tmp_path):
    key = web_stack.create_key("it-dry")
    before = n_assessments(web_stack)
    r = batch(web_stack, key, str(folder), "--out", str(tmp_path / "o.csv"), "--dry-run")
    assert r.returncode == 0, r.stderr
    actions = [(line.split("\t")[0], Path(line.split("\t")[1]).name) for line in r.stdout.splitlines()]
    assert actions == [("send", "A01_smile.mp4"), ("send", "A02_smile.mp4"), ("send", "A03_frown.flv"),
                       ("unsupported_file", "A04_notes.txt"), ("model_unavailable", "A05_kiss.mp4"),
                       ("expression_not_recognised", "A06_holiday.mp4")]
    assert "3 would be sent" in r.stderr and n_assessments(web_stack) == before
    assert not (tmp_path / "o.csv").exists()


def test_ctrl_c_stops_within_2_s_with_a_summary_and_the_next_run_resumes(web_stack, tmp_path):
    key = web_stack.create_key("it-ctrl-c")
    d = tmp_path / "in"
    d.mkdir()
    shutil.copyfile(real_video(), d / "B01_smile.mp4")
    to_flv(real_video(), d / "B02_frown.flv")
    out = tmp_path / "o.csv"
    before = n_assessments(web_stack)
    env = {**os.environ, "FEQA_API_KEY": key}
    proc = subprocess.Popen([PYTHON, "-m", "service.cli", "batch", str(d), "--out", str(out), "--api",
                             web_stack.base_url, "--concurrency", "1", "--poll", "0.3", "--no-progress"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while n_assessments(web_stack) == before and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)                                       # the first video is uploaded: work is in flight
    assert proc.poll() is None, proc.communicate()
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=10)
    took = time.monotonic() - sent
    print(f"feqa batch exited {took:.2f} s after SIGINT")
    assert took < 2.0, (took, err)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "interrupted; run the same command again to resume" in err and "succeeded" in err, err
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [Path(r["video"]).name for r in rows] == ["B01_smile.mp4", "B02_frown.flv"]
    assert "interrupted" in {r["status"] for r in rows}

    resumed = batch(web_stack, key, str(d), "--out", str(out), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr + web_stack.logs()
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["succeeded", "succeeded"]
    assert n_assessments(web_stack) == before + 2      # the interrupted upload was answered by idempotency
