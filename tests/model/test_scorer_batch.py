"""Scorer batching (issue 12): every window of a recording in one call, and graphs with a fixed batch size."""
from __future__ import annotations

import json
import shutil

import numpy as np
import onnx

from model.manifest import sha256_file
from model.scorer import Scorer
from tests.conftest import ROOT

DEMO = ROOT / "models" / "demo"


def _inputs(scorer: Scorer, expression: str, b: int, seed: int = 0):
    c = scorer.contract(expression)
    rng = np.random.default_rng(seed)
    trajs = rng.normal(0, 0.05, (b, 63, c.tp, 5)).astype(np.float32)
    index_t = np.tile((2 * np.arange(c.tp, dtype=np.float32) / c.tp - 1), (b, 1))
    frames = rng.integers(100, 156, (b, c.tf, c.frame_size, c.frame_size, 3), dtype=np.uint8)
    return trajs, index_t, frames


def _copy_with_fixed_batch(tmp_path, name: str, batch: int):
    for ext in (".onnx", ".json"):
        shutil.copy(DEMO / f"{name}{ext}", tmp_path / f"{name}{ext}")
    model = onnx.load(str(tmp_path / f"{name}.onnx"))
    for inp in model.graph.input:
        inp.type.tensor_type.shape.dim[0].dim_value = batch
    onnx.save(model, str(tmp_path / f"{name}.onnx"))
    man = json.loads((tmp_path / f"{name}.json").read_text())
    man["sha256"] = sha256_file(tmp_path / f"{name}.onnx")
    (tmp_path / f"{name}.json").write_text(json.dumps(man))


def test_one_batched_call_equals_one_call_per_window():
    scorer = Scorer(DEMO)
    assert scorer.batch_size("smile") is None                     # the shipped exports take any batch
    trajs, index_t, frames = _inputs(scorer, "smile", 5)
    together = scorer.score("smile", trajs, index_t, frames)
    alone = np.array([scorer.score("smile", trajs[i:i + 1], index_t[i:i + 1], frames[i:i + 1])[0]
                      for i in range(5)])
    assert together.shape == (5,)
    np.testing.assert_allclose(together, alone, atol=1e-4)
    assert np.ptp(together) > 0                                    # different windows, different scores


def test_fixed_batch_graph_is_run_in_chunks(tmp_path):
    _copy_with_fixed_batch(tmp_path, "smile-compact", 2)
    fixed, dynamic = Scorer(tmp_path), Scorer(DEMO)
    assert fixed.batch_size("smile") == 2
    trajs, index_t, frames = _inputs(dynamic, "smile", 5, seed=1)
    np.testing.assert_allclose(fixed.score("smile", trajs, index_t, frames),
                               dynamic.score("smile", trajs, index_t, frames), atol=1e-4)
