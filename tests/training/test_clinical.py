"""Given small datasets in the exact PFED5 and Toronto NeuroFace layouts built from real videos, when an ML
engineer runs `feqa train`, `feqa evaluate` and `feqa export` and serves the model, then bad rows are refused
with their line numbers, failing clips are listed with reason codes, validation is stratified, calibration is
fitted on validation and recorded, evaluation uses the model's own scale, cross-validation keeps folds apart,
resuming with changed data or recipe is refused, and the exported manifest says where the model came from."""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from model import messages
from model.scales import scale_for_manifest
from tests.conftest import ROOT
from tests.training.conftest import feqa, tiny_args
from training.datasets import read_pfed5, read_toronto


# --------------------------------------------------------------------------------------------- layouts
def test_pfed5_rows_are_checked_and_refused_with_line_numbers(layouts):
    pf = layouts[0]
    samples, issues = read_pfed5(pf.root, pf.train_csv, split="train")
    refused = {i.line: i.reason for i in issues}
    assert refused == {k: v for k, v in pf.bad_lines.items() if v != "no_face"}     # no_face: at extraction
    assert len(samples) == 8 * 2 + 1                                                  # + the face-less clip
    s = next(x for x in samples if x.clip_id == "12-100011_1_001")
    assert (s.subject, s.expression, s.score, s.line) == ("001", "smile", 1.0, 1)
    test, test_issues = read_pfed5(pf.root, pf.test_csv, split="test")                # the spreadsheet form
    assert not test_issues and len(test) == 4 and {x.subject for x in test} == {"009", "010"}
    assert {x.expression for x in test} == {"smile", "frown"}


def test_toronto_rows_are_checked_and_refused_with_line_numbers(layouts):
    tl = layouts[1]
    samples, issues = read_toronto(tl.root, tl.repetitions, tl.scores)
    assert {i.line: i.reason for i in issues} == tl.bad_lines
    blow = [s for s in samples if s.expression == "blow"]
    assert len(blow) == 12 and {s.group for s in blow} == {"ALS", "stroke", "healthy"}
    s = next(x for x in blow if x.clip_id == "S001_02_NSM_BLOW_color#rep2")
    assert (s.start, s.end) == (24, 47)                         # table's 1-based 25..48 -> 0-based 24..47
    assert s.score == pytest.approx((5 + 5) / 2)                # mean of the two raters' overall scores


# --------------------------------------------------------------------------------------------- PFED5 run
def test_train_pfed5_lists_failures_validates_stratified_and_calibrates(pfed5_run, layouts):
    out, report = pfed5_run
    pf = layouts[0]
    # bad rows and failing clips, with line numbers and reason codes, in the report
    got = {(i["line"], i["reason"]) for i in report["issues"] if i["source"] == pf.train_csv.name}
    assert got == set(pf.bad_lines.items())
    assert report["dataset"] == "pfed5" and report["tables"][0]["sha256"]
    for e in ("smile", "frown"):
        per = report["expressions"][e]
        assert per["scale"] == "mds_updrs_3_2"
        assert per["validation"]["method"].startswith("subjects stratified")
        val_subjects = set(per["validation"]["subjects"])
        assert len(val_subjects) == 3 and per["n_val"] == 3 and per["n_train"] == 5
        # the test split's clips, each listed with its id, on calibrated scores
        assert {p["clip"][-3:] for p in per["predictions"]} == {"009", "010"}
        ck = torch.load(per["checkpoints"][0], map_location="cpu", weights_only=False)
        cal = ck["calibration"]
        assert cal == per["calibration"] and "validation" in cal["fitted_on"]
        # 3 validation clips are too few for a slope: fitted on training + validation clips, and recorded so
        assert cal["fallback"] == "training_and_validation" and cal["validation_clips"] == 3
        assert cal["n"] == 8 and cal["guard"] in ("none", "slope_clamped", "slope_not_positive", "no_spread")
        assert 1e-3 <= cal["scale"] <= 10.0        # a 1-epoch tiny model fits slopes like 200: clamped to 10
        for p in per["predictions"]:
            assert p["pred"] == pytest.approx(cal["scale"] * p["raw"] + cal["bias"], abs=1e-3)
        assert ck["evaluation"]["test"]["n"] == 2 and ck["meta"]["scale"] == "mds_updrs_3_2"
        assert ck["meta"]["provenance"]["sizes"] == {"train": per["n_train"], "val": 3, "test": 2}
        assert set(ck["meta"]["provenance"]["validation_subjects"]) == val_subjects
        assert set(ck["hashes"]) == {"manifest", "contract", "recipe"}
    s = report["summary"]
    assert s["paper"]["mean"] == 71.86 and s["paper"]["per_expression"]["smile"] == 72.25
    assert s["mean_spearman_pct"] == pytest.approx(np.mean(list(s["per_expression_spearman_pct"].values())))
    assert "PFED5 test split" in report["data_label"]
    assert sorted(p.rsplit("/", 1)[-1] for p in report["plots"]) == ["confusion.png", "predicted_vs_true.png",
                                                                   "spearman_by_expression.png"]
    assert (out / "runs.jsonl").read_text().count("\n") == 1


def test_evaluate_pfed5_reproduces_the_calibrated_test_metrics(pfed5_run, layouts, work, tmp_path):
    out, report = pfed5_run
    pf = layouts[0]
    rc = feqa("evaluate", out / "smile" / "best.pt", out / "frown" / "best.pt", "--dataset", "pfed5",
              "--data-root", pf.root, "--test-csv", pf.test_csv, "--work", work,      # the test split alone
              "--workers", "1", "--quiet", "--out", tmp_path)
    assert rc == 0
    (rdir,) = (tmp_path / "reports").iterdir()
    ev = json.loads((rdir / "report.json").read_text())
    for e in ("smile", "frown"):
        a, b = ev["expressions"][e]["test"], report["expressions"][e]["test"]
        for k in ("n", "spearman", "mae", "accuracy"):
            assert a[k] == pytest.approx(b[k], abs=1e-4), (e, k)
        assert a["confusion"] == b["confusion"]
        assert a["labels"] == [0, 1, 2, 3, 4]
    assert (rdir / "confusion.png").stat().st_size > 1000


def test_evaluate_split_test_without_a_split_column_is_an_error(pfed5_run, layouts, work, tmp_path, capsys):
    out, _ = pfed5_run
    pf = layouts[0]
    samples, _ = read_pfed5(pf.root, pf.test_csv)
    manifest = tmp_path / "m.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["video", "subject", "expression", "score"])
        w.writerows([s.video, s.subject, s.expression, s.score] for s in samples)
    rc = feqa("evaluate", out / "smile" / "best.pt", "--manifest", manifest, "--split", "test", "--work", work,
              "--quiet", "--out", tmp_path / "ev")
    assert rc == 2 and "no split column" in capsys.readouterr().err
    assert feqa("evaluate", out / "smile" / "best.pt", "--manifest", manifest, "--split", "all", "--work", work,
                "--quiet", "--workers", "1", "--out", tmp_path / "ev") == 0


def test_export_names_its_provenance_refuses_a_clash_and_serves(pfed5_run, tmp_path, capsys):
    from model.scorer import Scorer
    from tests.conftest import real_video
    from worker.pipeline import assess

    out, report = pfed5_run
    models = tmp_path / "models"
    ck = out / "smile" / "best.pt"
    assert feqa("export", ck, "--out", models, "--name", "smile-clinic", "--version", "1.2.0") == 0
    m = json.loads((models / "smile-clinic.json").read_text())
    assert (m["name"], m["version"], m["scale"]) == ("smile-clinic", "1.2.0", "mds_updrs_3_2")
    assert m["trained_on"] == "clinical:pfed5" and m["clinical_use"] is False
    prov = m["provenance"]
    assert prov["dataset"] == "pfed5" and prov["sizes"]["test"] == 2 and prov["tables"][0]["sha256"]
    assert prov["git_commit"] is None or len(prov["git_commit"]) >= 40
    assert prov["recipe"]["train"]["epochs"] == 1 and prov["recipe"]["model"]["dim"] == 32
    assert m["metrics"]["test"]["spearman"] == pytest.approx(report["expressions"]["smile"]["test"]["spearman"])
    assert m["metrics"]["calibration"] == report["expressions"]["smile"]["calibration"]
    td = m["training_data"]                       # what every served result carries about its model
    assert td["dataset"] == "PFED5" and td["sizes"] == prov["sizes"] and td["git_commit"] == prov["git_commit"]
    assert td["test_metrics"]["spearman_pct"] == report["expressions"]["smile"]["test"]["spearman_pct"]
    # the same name and version again: refused, the first model kept
    capsys.readouterr()
    assert feqa("export", ck, "--out", models, "--name", "smile-clinic", "--version", "1.2.0") == 2
    assert "already holds model smile-clinic version 1.2.0" in capsys.readouterr().err
    # served: the Scorer loads it; its graph outputs the calibrated score; the pipeline scores a real video
    from model.export import random_inputs
    from training.loop import load_model

    scorer = Scorer(models)
    assert scorer.expressions() == ["smile"]
    assert scale_for_manifest(scorer.manifest("smile")).name == "mds_updrs_3_2"
    model, ckd = load_model(ck)
    trajs, index_t, frames = random_inputs(model.cfg, batch=2)
    with torch.no_grad():
        raw = model(trajs, index_t, frames).numpy()
    cal = ckd["calibration"]
    np.testing.assert_allclose(scorer.score("smile", trajs.numpy(), index_t.numpy(), frames.numpy()),
                               cal["scale"] * raw + cal["bias"], rtol=1e-4, atol=1e-3 * max(1, abs(cal["scale"])))
    result = assess(real_video(), "smile", scorer)
    assert result["model"]["name"] == "smile-clinic" and not result["abstained"]
    assert result["model"]["training_data"]["dataset"] == "PFED5"
    assert 0.0 <= result["score"] <= 4.0


# --------------------------------------------------------------------------------------------- Toronto run
def test_train_toronto_folds_keep_checkpoints_apart_and_score_on_the_raters_scale(toronto_run, layouts):
    out, report = toronto_run
    assert report["skipped"] == {"kiss": "1 usable training clips (need at least 4)"}
    assert report["skipped_codes"] == {"kiss": "too_few_clips"}
    per = report["expressions"]["blow"]
    assert per["scale"] == "toronto_neuroface"
    folds = [f for f in per["folds"] if "checkpoint" in f]
    assert len(folds) == 3 and len({f["checkpoint"] for f in folds}) == 3
    tested = [set(f["test_subjects"]) for f in folds]
    assert set.union(*tested) == {"A001", "A002", "S001", "S002", "N001", "N002"}
    assert sum(len(t) for t in tested) == 6                               # disjoint held-out subjects
    for f in folds:
        ck = torch.load(f["checkpoint"], map_location="cpu", weights_only=False)
        assert set(ck["evaluation"]["test_subjects"]) == set(f["test_subjects"])
        assert ck["cross_validation"]["mean_fold_spearman_pct"] == per["mean_fold_spearman_pct"]
        # validation from the training subjects of the fold, never a whole diagnosis group
        val = f["validation"]
        assert not set(val["subjects"]) & set(f["test_subjects"])
        for g in val["counts"]["val"]["per_group"]:
            assert val["counts"]["train"]["per_group"].get(g, 0) > 0, (g, val)
        assert f["test"]["labels"] == [1, 2, 3, 4, 5]
    # every prediction carries its clip id and fold; the pooled metrics are of all of them
    preds = per["predictions"]
    assert per["pooled"]["n"] == len(preds) and all("#rep" in p["clip"] for p in preds)
    assert {p["fold"] for p in preds} == {0, 1, 2}
    assert any(p["true"] == 5.0 for p in preds)                        # a score above 4 is not clipped
    rhos = [f["test"]["spearman"] for f in folds]
    assert per["mean_fold_spearman_pct"] == pytest.approx(100 * np.mean(rhos), abs=0.01)
    assert report["summary"]["paper"]["mean"] == 53.84
    assert "Toronto NeuroFace held-out subjects of each fold" in report["data_label"]
    tl = layouts[1]
    assert {(i["line"], i["reason"]) for i in report["issues"] if i["reason"] in ("bad_range",
                                                                                 "frame_count_mismatch")} \
        == set(tl.bad_lines.items())


def test_evaluate_toronto_run_folder_tests_each_fold_on_its_own_subjects(toronto_run, layouts, work, tmp_path):
    out, report = toronto_run
    tl = layouts[1]
    rc = feqa("evaluate", out, "--dataset", "toronto", "--data-root", tl.root, "--repetitions", tl.repetitions,
              "--scores", tl.scores, "--work", work, "--workers", "1", "--quiet", "--out", tmp_path)
    assert rc == 0
    (rdir,) = (tmp_path / "reports").iterdir()
    ev = json.loads((rdir / "report.json").read_text())["expressions"]["blow"]
    assert len(ev["parts"]) == 3 and all(p["evaluated_on"].endswith("held-out subjects") for p in ev["parts"])
    assert ev["mean_fold_spearman_pct"] == pytest.approx(report["expressions"]["blow"]["mean_fold_spearman_pct"],
                                                         abs=0.01)
    assert sorted(p["clip"] for p in ev["predictions"]) == sorted(
        p["clip"] for p in report["expressions"]["blow"]["predictions"])


def test_toronto_export_manifest_names_the_raters_scale(toronto_run, tmp_path):
    out, _ = toronto_run
    assert feqa("export", out / "blow" / "fold1" / "best.pt", "--out", tmp_path, "--name", "blow-tnf",
                "--version", "0.0.1") == 0
    m = json.loads((tmp_path / "blow-tnf.json").read_text())
    scale = scale_for_manifest(m)
    assert m["scale"] == "toronto_neuroface" and (scale.low, scale.high) == (1, 5)
    assert m["provenance"]["fold"] == 1 and len(m["metrics"]["cross_validation"]["folds"]) == 3
    assert len(m["training_data"]["cross_validation"]["per_fold_spearman_pct"]) == 3


# --------------------------------------------------------------------------------------------- resume
def test_resume_is_refused_when_the_data_or_recipe_changed(layouts, work, tmp_path, capsys):
    pf = layouts[0]
    out = tmp_path / "run"
    args = ["train", "--dataset", "pfed5", "--data-root", pf.root, "--expressions", "smile", "--out", out,
            *tiny_args(work)]
    assert feqa(*args, "--split-csv", pf.train_csv) == 0
    first = torch.load(out / "smile" / "last.pt", map_location="cpu", weights_only=False)
    fewer = tmp_path / "fewer.csv"
    fewer.write_text("".join(pf.train_csv.read_text().splitlines(keepends=True)[2:]))
    capsys.readouterr()
    assert feqa(*args, "--split-csv", fewer) == 2
    err = capsys.readouterr().err
    assert "not resuming" in err and "manifest" in err and "recipe" not in err and "--restart" in err
    assert feqa(*args, "--split-csv", pf.train_csv, "--lr", "0.01") == 2
    err = capsys.readouterr().err
    assert "recipe" in err and "manifest" not in err
    # unchanged: resumes (nothing left to train at 1 epoch); --restart starts over with the new data
    assert feqa(*args, "--split-csv", pf.train_csv) == 0
    assert feqa(*args, "--split-csv", fewer, "--restart") == 0
    again = torch.load(out / "smile" / "last.pt", map_location="cpu", weights_only=False)
    assert again["hashes"]["manifest"] != first["hashes"]["manifest"]
    assert again["hashes"]["recipe"] == first["hashes"]["recipe"]


# --------------------------------------------------------------------------------------------- bad data
def test_nothing_usable_is_one_clear_message_without_traceback(tmp_path):
    root = tmp_path / "frames"
    root.mkdir()
    split = tmp_path / "split.csv"
    split.write_text("12-100011_1_001,2,24,x,1\n12-100012_2_001,9,24,x,2\nnot-an-id,1,24,x,1\n")
    proc = subprocess.run([sys.executable, "-m", "service.cli", "train", "--dataset", "pfed5", "--data-root",
                           str(root), "--split-csv", str(split), "--out", str(tmp_path / "o"), "--work",
                           str(tmp_path / "w"), "--quiet", "--device", "cpu"], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    err = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "nothing usable" in err[0] and "missing_frames" in err[0] and "bad_row" in err[0]
    assert messages.message("nothing_usable")["what_to_do"] in proc.stderr    # plain words under the error line


# --------------------------------------------------------------------------------------------- --init
def test_init_files_and_their_sha256_are_recorded_in_checkpoint_and_manifest(layouts, work, tmp_path, capsys):
    from safetensors.torch import save_file

    from model.manifest import sha256_file

    pf = layouts[0]
    g = torch.Generator().manual_seed(5)
    head = tmp_path / "head_reference_layout.safetensors"        # evaluator.* keys, the tiny model's head shapes
    save_file({"evaluator.layer1.weight": torch.randn(16, 32, generator=g), "evaluator.layer1.bias": torch.zeros(16),
               "evaluator.layer2.weight": torch.randn(1, 16, generator=g), "evaluator.layer2.bias": torch.zeros(1)},
              str(head))
    out = tmp_path / "run"
    args = ["train", "--dataset", "pfed5", "--data-root", pf.root, "--split-csv", pf.train_csv, "--expressions",
            "smile", "--out", out, *tiny_args(work)]
    capsys.readouterr()
    assert feqa(*args, "--init", head) == 0
    log = capsys.readouterr().out
    assert "part head.       4 loaded,    0 random" in log and "(all random)" in log
    ck = torch.load(out / "smile" / "best.pt", map_location="cpu", weights_only=False)
    init = ck["meta"]["init"]
    assert init["mode"] == "strict" and init["files"][0]["sha256"] == sha256_file(head)
    assert init["parts"]["head."] == {"loaded": 4, "random": 0, "random_tensors": []}
    assert feqa("export", out / "smile" / "best.pt", "--out", tmp_path / "m", "--name", "s", "--version", "1") == 0
    m = json.loads((tmp_path / "m" / "s.json").read_text())
    assert m["provenance"]["init"]["files"] == [{"path": str(head), "sha256": sha256_file(head)}]
    assert m["training_data"]["init_files"] == m["provenance"]["init"]["files"]
    # a reference file that does not fit this config: refused before training, one message
    capsys.readouterr()
    from tests.conftest import FIXTURES

    assert feqa(*args, "--restart", "--init", FIXTURES / "fusion_head.safetensors") == 2
    assert "does not fit the compact config strictly" in capsys.readouterr().err


def test_train_from_a_generic_manifest_calibrates_and_tests_its_split_too(layouts, work, tmp_path):
    from dataclasses import replace

    from training.datasets import write_manifest

    pf = layouts[0]
    tr, _ = read_pfed5(pf.root, pf.train_csv, "train")
    te, _ = read_pfed5(pf.root, pf.test_csv, "test")
    manifest = write_manifest([replace(s, group=s.subject) for s in tr + te if s.expression == "frown"],
                              tmp_path / "m.csv")
    out = tmp_path / "run"
    assert feqa("train", "--manifest", manifest, "--val-fraction", "0.4", "--out", out, *tiny_args(work)) == 0
    (rdir,) = (out / "reports").iterdir()
    per = json.loads((rdir / "report.json").read_text())["expressions"]["frown"]
    assert per["scale"] == "mds_updrs_3_2" and per["n_test"] == 2 and per["validation"]["counts"]["val"]["clips"]
    ck = torch.load(per["checkpoints"][0], map_location="cpu", weights_only=False)
    assert ck["calibration"] == per["calibration"] and ck["evaluation"]["test"]["n"] == 2
