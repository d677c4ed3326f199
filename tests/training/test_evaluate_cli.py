"""Given predictions, when metrics are computed, then rho/MAE/accuracy/confusion are right; the training
commands are registered with the `feqa` CLI and parse their switches."""
from __future__ import annotations

import numpy as np
import pytest

from service.cli import build_parser
from training.evaluate import plot_report, regression_metrics, summarise


def test_regression_metrics_known_values():
    m = regression_metrics([0, 1, 2, 3, 4], [0.2, 0.9, 2.6, 2.9, 4.4])
    assert abs(m["spearman"] - 1.0) < 1e-9
    assert abs(m["mae"] - np.mean([0.2, 0.1, 0.6, 0.1, 0.4])) < 1e-9
    assert m["accuracy"] == 0.8                    # 2.6 rounds to 3
    assert m["confusion"][2][3] == 1 and np.trace(np.array(m["confusion"])) == 4


def test_constant_predictions_give_zero_rho_not_nan():
    assert regression_metrics([0, 1, 2], [1.0, 1.0, 1.0])["spearman"] == 0.0


def test_report_mean_is_the_arithmetic_mean_of_expressions_and_plots_are_written(tmp_path):
    def test(y, p):
        return {**regression_metrics(y, p), "y_true": y, "y_pred": p}

    res = {"fused-tokens": {"smile": {"test": test([0, 1, 2, 3], [0, 1, 2, 3])},
                            "frown": {"test": test([0, 1, 2, 3], [3, 2, 1, 0])}}}
    rep = summarise(res)
    assert abs(rep["variants"]["fused-tokens"]["mean_spearman"]) < 1e-9
    paths = plot_report(rep, tmp_path)
    assert all(p.exists() and p.stat().st_size > 1000 for p in paths)


def test_training_commands_are_registered():
    p = build_parser()
    a = p.parse_args(["train", "--demo", "--out", "models"])
    assert a.demo and a.out == "models"
    a = p.parse_args(["train", "--manifest", "m.csv", "--streams", "rgb", "--cp", "2", "--fusion-mode", "pooled",
                      "--tp", "64", "--folds", "3"])
    assert (a.streams, a.cp, a.fusion_mode, a.tp, a.folds) == ("rgb", 2, "pooled", 64, 3)
    from training.cli_train import _contract

    assert _contract(a) == {}                                   # the reference contract unless asked
    a = p.parse_args(["train", "--manifest", "m.csv", "--pad", "zero", "--coord-norm", "first_frame_aligned",
                      "--frame-norm", "aligned_first_frame_diff", "--scale-norm", "interocular"])
    assert _contract(a) == {"pad": "zero", "coord_norm": "first_frame_aligned",
                            "frame_norm": "aligned_first_frame_diff", "scale_norm": "interocular"}
    with pytest.raises(SystemExit):
        p.parse_args(["train", "--pad", "mirror"])
    a = p.parse_args(["simulate", "--out", "x", "--identities", "4", "--per-severity", "1"])
    assert (a.identities, a.per_severity) == (4, 1)
    a = p.parse_args(["export", "ck.pt", "--out", "d", "--from-reference", "--expression", "smile"])
    assert a.from_reference and a.expression == "smile"
    a = p.parse_args(["evaluate", "a.pt", "b.pt", "--manifest", "m.csv"])
    assert a.checkpoints == ["a.pt", "b.pt"]


def test_toronto_metrics_use_the_raters_1_to_5_scale_without_clipping_to_0_4():
    from model.scales import MDS_UPDRS, TORONTO
    from training.evaluate import scale_metrics

    y, p = [1.0, 2.5, 5.0, 4.6], [1.2, 2.4, 4.9, 5.3]
    m = scale_metrics(y, p, TORONTO)
    assert m["labels"] == [1, 2, 3, 4, 5] and m["scale"] == "toronto_neuroface"
    # 2.5 rounds half up to 3 (as model.scales grades), 5.3 is clipped to 5 only for the rounded class
    assert m["confusion"][4][4] == 2 and m["confusion"][2][1] == 1 and m["accuracy"] == 0.75
    assert abs(m["mae"] - np.mean([0.2, 0.1, 0.1, 0.7])) < 1e-9
    on_updrs = scale_metrics(y, p, MDS_UPDRS)
    assert on_updrs["labels"] == [0, 1, 2, 3, 4] and on_updrs["confusion"] != m["confusion"]
    assert m["spearman_pct"] == round(100 * m["spearman"], 2)
