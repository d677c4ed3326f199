"""`feqa batch` input discovery and output handling (no server needed)."""
from __future__ import annotations

import argparse
from pathlib import Path

from model.contract import EXPRESSIONS, PFED5_EXPRESSIONS
from service.cli_batch import (
    RowWriter,
    add_arguments,
    collect_jobs,
    is_done,
    jobs_from_folder,
    jobs_from_manifest,
    parse_name,
    read_rows,
    run,
)


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_given_the_three_naming_conventions_then_expression_and_patient_are_found(tmp_path):
    touch(tmp_path / "P0042_sit_at_rest.mp4")
    touch(tmp_path / "smile" / "P0043.MOV")
    touch(tmp_path / "P0044" / "clench_teeth.webm")
    touch(tmp_path / "holiday.mp4")
    touch(tmp_path / "notes.txt")
    jobs = {j.video.name: (j.expression, j.patient_ref) for j in jobs_from_folder(tmp_path, EXPRESSIONS)}
    assert jobs == {"P0042_sit_at_rest.mp4": ("sit_at_rest", "P0042"), "P0043.MOV": ("smile", "P0043"),
                    "clench_teeth.webm": ("clench_teeth", "P0044"), "holiday.mp4": (None, None),
                    "notes.txt": (None, None)}   # every file gets a row; notes.txt as unsupported_file


def test_given_a_protocol_then_videos_of_the_other_protocol_are_left_out(tmp_path):
    assert parse_name(tmp_path / "p1_blow.mp4", tmp_path, PFED5_EXPRESSIONS) == (None, None)
    assert parse_name(tmp_path / "p1_frown.mp4", tmp_path, PFED5_EXPRESSIONS) == ("frown", "p1")
    for name in ("p1_blow.mp4", "p1_frown.mp4", "p1_grin.mp4"):
        touch(tmp_path / "in" / name)
    args = parse([str(tmp_path / "in"), "--out", "o.csv", "--protocol", "pfed5"])
    assert sorted((j.video.name, j.expression) for j in collect_jobs(args)) == [
        ("p1_frown.mp4", "frown"), ("p1_grin.mp4", None)]  # unrecognised stays: it is reported, not hidden


def test_given_a_manifest_then_relative_paths_resolve_against_its_folder(tmp_path):
    (tmp_path / "m.csv").write_text("video,expression,patient_ref\nclips/a.mp4,smile,P1\n/abs/b.mp4,grin,\n")
    jobs = jobs_from_manifest(tmp_path / "m.csv", EXPRESSIONS)
    assert [(j.video, j.expression, j.patient_ref) for j in jobs] == [
        (tmp_path / "clips" / "a.mp4", "smile", "P1"), (Path("/abs/b.mp4"), None, None)]


def test_given_a_rows_file_when_read_back_then_done_means_succeeded_with_the_current_version(tmp_path):
    for fmt in ("csv", "jsonl"):
        out = tmp_path / f"out.{fmt}"
        w = RowWriter(out, fmt)
        w.write({"video": "a.mp4", "expression": "smile", "status": "succeeded", "model_version": "1.0", "score": 1.5})
        w.write({"video": "b.mp4", "expression": "smile", "status": "failed", "model_version": "1.0"})
        w.close()
        rows = read_rows(out, fmt)
        assert [r["video"] for r in rows] == ["a.mp4", "b.mp4"]
        assert rows[0]["score"] == 1.5
        assert is_done(rows[0], {"smile": "1.0"}) and not is_done(rows[0], {"smile": "1.1"})
        assert not is_done(rows[1], {"smile": "1.0"})


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_given_a_missing_input_or_an_unreachable_api_then_exit_status_is_2(tmp_path, capsys):
    assert run(parse([str(tmp_path / "nope"), "--out", str(tmp_path / "o.csv")])) == 2
    touch(tmp_path / "v" / "p_smile.mp4")
    args = parse([str(tmp_path / "v"), "--out", str(tmp_path / "o.csv"), "--api", "http://127.0.0.1:9",
                  "--retries", "0"])
    assert run(args) == 2
    assert "cannot read the models" in capsys.readouterr().err
    assert len(collect_jobs(args)) == 1


def test_given_typed_rows_when_written_and_read_back_then_numbers_and_booleans_keep_their_types(tmp_path):
    from service.cli_batch import FIELDS

    row = {"video": "/v/a.mp4", "expression": "smile", "patient_ref": "0042", "status": "succeeded",
           "score": 3.2721, "score_rounded": 3, "abstained": False, "clinical_use": False, "quality_scorable": True,
           "quality_reasons": ["too_dark", "head_turned"], "model_version": "1.0"}
    for fmt in ("csv", "jsonl"):
        out = tmp_path / f"out.{fmt}"
        w = RowWriter(out, fmt, 1)
        w.put(0, row)
        w.close()
        first_text = out.read_text()
        back = read_rows(out, fmt)[0]
        assert {k: back[k] for k in row} == row, fmt   # "0042" stays a string, 3 an int, False a bool
        again = RowWriter(out, fmt, 1)                          # a re-run writes the kept row back
        again.finish([back])
        assert out.read_text() == first_text, fmt
    assert list(read_rows(out, "jsonl")[0]) == FIELDS
    # an output written by an older version (every value a string) is read back typed too
    old = tmp_path / "old.jsonl"
    old.write_text('{"video": "a", "score": "3.2721", "abstained": "False", "score_rounded": "3"}\n')
    assert read_rows(old, "jsonl")[0] == {"video": "a", "score": 3.2721, "abstained": False, "score_rounded": 3}


def test_given_rows_finishing_out_of_order_then_the_file_keeps_input_order(tmp_path):
    out = tmp_path / "o.jsonl"
    w = RowWriter(out, "jsonl", 3)
    w.put(2, {"video": "c"})
    assert out.read_text() == ""                                # nothing after a gap is written early
    w.put(0, {"video": "a"})
    assert [r["video"] for r in read_rows(out, "jsonl")] == ["a"]
    w.put(1, {"video": "b"})
    assert [r["video"] for r in read_rows(out, "jsonl")] == ["a", "b", "c"]


def test_given_an_unreachable_api_a_dry_run_still_lists_the_inputs_and_exits_2(tmp_path, capsys):
    touch(tmp_path / "v" / "p_smile.mp4")
    touch(tmp_path / "v" / "notes.txt")
    args = parse([str(tmp_path / "v"), "--out", str(tmp_path / "o.csv"), "--api", "http://127.0.0.1:9",
                  "--retries", "0", "--dry-run"])
    assert run(args) == 2
    out = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in out] == ["unsupported_file", "send"]   # path order: notes, p_smile
    assert not (tmp_path / "o.csv").exists()
