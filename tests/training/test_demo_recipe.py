"""Given the demo recipe, when the demo models are built and exported, then the ten tasks (PFED5 and Toronto
NeuroFace) are in it, each manifest names its own score scale and says simulated / not for clinical use, and
the shipped Toronto demo models are on the Toronto raters' scale."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from model.contract import PFED5_EXPRESSIONS, TORONTO_EXPRESSIONS
from model.scales import MDS_UPDRS, TORONTO, scale_for_manifest
from training.loop import TrainConfig, train
from training.train import (
    DEMO_EXPRESSIONS,
    DEMO_TRAIN,
    DEMO_TRAIN_TORONTO,
    export_demo,
    expression_metrics,
    run_demo,
)

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_recipe_builds_every_pfed5_and_toronto_task():
    import inspect

    assert set(DEMO_EXPRESSIONS) == set(PFED5_EXPRESSIONS) | set(TORONTO_EXPRESSIONS)
    assert inspect.signature(run_demo).parameters["expressions"].default == DEMO_EXPRESSIONS
    assert inspect.signature(run_demo).parameters["recordings"].default is True
    assert DEMO_TRAIN_TORONTO["epochs"] >= 4 and DEMO_TRAIN["epochs"] >= DEMO_TRAIN_TORONTO["epochs"]


def test_toronto_metrics_count_grades_from_one():
    m = expression_metrics("kiss", [1, 2, 3, 4, 5], [1.1, 2.2, 2.9, 4.4, 4.8])
    assert m["accuracy"] == 1.0 and m["scale"] == TORONTO.name and m["confusion"][4][4] == 1
    assert expression_metrics("smile", [0, 4], [0.2, 3.9])["scale"] == MDS_UPDRS.name


def test_exported_demo_manifests_name_their_scale_and_say_simulated(tmp_path):
    from tests.training.test_loop import synthetic_items, tiny_cfg

    items = synthetic_items(8)
    res = train(tiny_cfg(), items, items[:4], TrainConfig(epochs=1, max_steps=1, threads=1, random_crop=False),
                tmp_path / "run", progress=False, log=lambda *_: None)
    r = {"best_path": res["best_path"], "val_best": res["best"], "n_train": 8, "n_val": 4, "calibration": None,
         "test": {"spearman": 0.5, "mae": 1.0, "y_true": [1], "y_pred": [1]},
         "test_recordings": {"spearman": 0.4, "n_recordings": 2, "y_true": [1], "y_pred": [1]}}
    export_demo({"kiss": r, "smile": r}, tmp_path / "demo", "simulated", TrainConfig(), log=lambda *_: None)
    for task, scale in (("kiss", TORONTO), ("smile", MDS_UPDRS)):
        m = json.loads((tmp_path / "demo" / f"{task}-compact.json").read_text())
        assert m["scale"] == scale.name and scale_for_manifest(m) == scale
        assert m["trained_on"] == "simulated" and m["clinical_use"] is False
        assert m["metrics"]["whole_recordings"]["spearman"] == 0.4


def test_retraining_a_subset_keeps_the_other_rows_of_the_previous_report(tmp_path):
    from training.train import carry_previous

    prev = {"timings_s": {"total_s": 1620.0}, "variants": {"fused-pooled": {"per_expression": {
        "smile": {"spearman": 0.9, "mae": 0.5, "accuracy": 0.6, "y_true": [0], "y_pred": [0]},
        "kiss": {"spearman": 0.1, "mae": 2.0, "accuracy": 0.1}}}}}
    (tmp_path / "REPORT.json").write_text(json.dumps(prev))
    report = {"variants": {"fused-pooled": {"per_expression": {
        "kiss": {"spearman": 0.7, "mae": 0.8, "accuracy": 0.4, "whole_recordings": {"spearman": 0.6}}}}}}
    carry_previous(report, tmp_path / "REPORT.json", "fused-pooled", ["smile"])
    v = report["variants"]["fused-pooled"]
    assert list(v["per_expression"]) == ["smile", "kiss"] and v["carried_from_previous_build"] == ["smile"]
    assert v["per_expression"]["smile"]["carried_from_previous_build"] is True
    assert v["per_expression"]["kiss"]["spearman"] == 0.7                  # the new row wins
    assert v["mean_spearman"] == pytest.approx(0.8) and v["mean_spearman_toronto"] == pytest.approx(0.7)
    assert v["mean_spearman_toronto_whole_recordings"] == pytest.approx(0.6)
    assert "mean_spearman_pfed5_whole_recordings" not in v                 # not measured for every PFED5 row


@pytest.mark.parametrize("task", TORONTO_EXPRESSIONS)
def test_the_shipped_toronto_demo_models_are_on_the_toronto_scale(task):
    path = ROOT / "models" / "demo" / f"{task}-compact.json"
    m = json.loads(path.read_text())
    assert m["expression"] == task and m["scale"] == "toronto_neuroface"
    assert m["trained_on"] == "simulated" and m["clinical_use"] is False
    assert (ROOT / "models" / "demo" / f"{task}-compact.onnx").stat().st_size > 10_000
