"""Given compact models exported to ONNX, when the Scorer loads and runs them, then it matches PyTorch,
verifies checksums and refuses inputs that break the manifest's contract."""
from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
import torch

from model.config import get_config
from model.errors import ContractError, ModelUnavailable, UnknownExpression
from model.export import export_model, export_untrained, random_inputs, sha256_file
from model.network import TrampFormer
from model.scorer import ModelIntegrityError, Scorer


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("models")
    paths = export_untrained(out, expressions=("smile",), seed=3, check=True)      # with the self-check
    paths += export_untrained(out, expressions=("sit_at_rest",), seed=3)
    assert [p.name for p in paths] == ["smile-compact-untrained.onnx", "sit_at_rest-compact-untrained.onnx"]
    return out


@pytest.fixture(scope="module")
def scorer(model_dir):
    s = Scorer(model_dir)
    s.warmup()
    return s


def _inputs(tp=128, tf=32, batch=3, seed=5):
    trajs, index_t, frames = random_inputs(get_config("compact", tp=tp, tf=tf), batch=batch, seed=seed)
    return trajs.numpy(), index_t.numpy(), frames.numpy()


def test_manifest_and_metadata(model_dir):
    m = json.loads((model_dir / "smile-compact-untrained.json").read_text())
    assert m["sha256"] == sha256_file(model_dir / "smile-compact-untrained.onnx")
    assert m["trained_on"] == "untrained" and m["clinical_use"] is False
    assert m["contract"]["tp"] == 128 and m["contract"]["tf"] == 32 and m["config"]["name"] == "compact"
    assert m["export_check"]["max_abs_vs_torch"] <= 1e-4
    assert json.loads((model_dir / "sit_at_rest-compact-untrained.json").read_text())["contract"]["tp"] == 64
    proto = onnx.load(str(model_dir / "smile-compact-untrained.onnx"), load_external_data=False)
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["expression"] == "smile" and props["trained_on"] == "untrained"
    assert json.loads(props["contract"]) == m["contract"] and "sha256" not in props
    assert [i.name for i in proto.graph.input] == ["trajs", "index_t", "frames"]
    assert proto.graph.output[0].name == "score"


def test_scorer_matches_pytorch_at_another_batch_size(scorer):
    torch.manual_seed(3)
    model = TrampFormer(get_config("compact", expression="smile")).eval()
    trajs, index_t, frames = _inputs(batch=3)
    with torch.no_grad():
        ref = model(torch.from_numpy(trajs), torch.from_numpy(index_t), torch.from_numpy(frames)).numpy()
    out = scorer.score("smile", trajs, index_t, frames)
    assert out.shape == (3,) and out.dtype == np.float32
    assert np.abs(out - ref).max() < 1e-4
    assert scorer.expressions() == ["sit_at_rest", "smile"]
    assert scorer.contract("sit_at_rest").tp == 64


@pytest.mark.parametrize("case, match", [
    ("tp", "trajs shape"), ("channels", "trajs shape"), ("traj_dtype", "trajs dtype"),
    ("tf", "frames shape"), ("frame_size", "frames shape"), ("frame_dtype", "frames dtype"),
    ("index_shape", "index_t shape"), ("batch", "batch size"), ("nan", "trajs values"),
])
def test_scorer_refuses_contract_mismatch(scorer, case, match):
    trajs, index_t, frames = _inputs(batch=2)
    if case == "tp":
        trajs, index_t = _inputs(tp=64, batch=2)[:2]
    elif case == "channels":
        trajs = trajs[..., :4]
    elif case == "traj_dtype":
        trajs = trajs.astype(np.float64)
    elif case == "tf":
        frames = frames[:, :16]
    elif case == "frame_size":
        frames = frames[:, :, :112, :112]
    elif case == "frame_dtype":
        frames = frames.astype(np.float32)
    elif case == "index_shape":
        index_t = index_t[:, :64]
    elif case == "batch":
        frames = frames[:1]
    elif case == "nan":
        trajs = trajs.copy()
        trajs[0, 0, 0, 0] = np.nan
    with pytest.raises(ContractError, match=match) as err:
        scorer.score("smile", trajs, index_t, frames)
    assert err.value.code == "contract_mismatch"


def test_unknown_and_missing_expressions(scorer):
    trajs, index_t, frames = _inputs(batch=1)
    with pytest.raises(UnknownExpression):
        scorer.score("wink", trajs, index_t, frames)
    with pytest.raises(ModelUnavailable, match="no model for 'frown'"):
        scorer.score("frown", trajs, index_t, frames)


def test_tampered_model_is_refused_at_load(model_dir, tmp_path):
    for suffix in (".onnx", ".json"):
        shutil.copy(model_dir / f"smile-compact-untrained{suffix}", tmp_path)
    with open(tmp_path / "smile-compact-untrained.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelIntegrityError, match="sha256"):
        Scorer(tmp_path)


def test_xy_trajectory_model_selects_channels_and_needs_no_frames(tmp_path):
    cfg = get_config("compact", cp=2, streams="trajectory", tp=64)
    torch.manual_seed(0)
    model = TrampFormer(cfg).eval()
    export_model(model, cfg, tmp_path, "blow-xy", "blow", "0.1", training={"description": "test"},
                 trained_on="untrained")
    trajs, index_t, _ = _inputs(tp=64, batch=2)
    out = Scorer(tmp_path).score("blow", trajs, index_t, None)
    with torch.no_grad():
        ref = model(torch.from_numpy(trajs[..., :2].copy()), torch.from_numpy(index_t), None).numpy()
    assert np.abs(out - ref).max() < 1e-4


def test_int8_export_stays_close_to_fp32(tmp_path):
    from model.bench import randomise_norms
    from model.quantize import calibration_samples
    cfg = get_config("compact", tp=64, tf=16)
    torch.manual_seed(0)
    model = TrampFormer(cfg).eval()
    randomise_norms(model)
    fp32 = export_model(model, cfg, tmp_path, "fp32", "sit_at_rest", "0.1", trained_on="untrained", check=False)
    path = export_model(model, cfg, tmp_path, "int8", "sit_at_rest", "0.1", trained_on="untrained",
                        precision="int8", calibration=calibration_samples(fp32, n=1))
    m = json.loads(path.with_suffix(".json").read_text())
    assert m["precision"] == "int8" and m["export_check"]["max_abs_vs_torch"] <= m["export_check"]["atol"]
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_only_clinically_trained_models_can_be_marked_for_clinical_use(tmp_path):
    cfg = get_config("compact", tp=64, tf=16, streams="trajectory")
    with pytest.raises(ValueError, match="clinical"):
        export_model(TrampFormer(cfg), cfg, tmp_path, "x", "smile", "0.1", trained_on="simulated",
                     clinical_use=True)
    assert not list(tmp_path.iterdir())


def test_scorer_loads_and_scores_without_torch(model_dir):
    """A worker image without torch: model.scorer (checksums included) must not import it."""
    import subprocess
    import sys

    code = ("import sys\nimport model.scorer as ms\n"
            "assert 'torch' not in sys.modules, 'import model.scorer loaded torch'\n"
            "s = ms.Scorer(sys.argv[1]); s.warmup(); print(s.expressions())\n"
            "bad = [m for m in ('torch', 'model.export', 'model.network') if m in sys.modules]\n"
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code, str(model_dir)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "['sit_at_rest', 'smile']" in r.stdout
