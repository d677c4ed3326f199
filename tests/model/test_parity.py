"""Given the reference weights and inputs of ../shared/reference/fixtures, when our modules run them,
then every stored output is reproduced (1e-5 max abs; 1e-4 for the large embed/stage1/frame maps)."""
from __future__ import annotations

import pytest
import torch

from model.flops import FlopCounter
from model.keymap import load_reference_state_dict
from model.network import build_model
from tests.model.conftest import fixture_file, max_abs, reference_state

TOL, TOL_MAP = 1e-5, 1e-4
WEIGHT_FILES = ("trajectory_encoder_tp128.safetensors", "rgb_encoder.safetensors", "fusion_head.safetensors")


@pytest.fixture(scope="module")
def paper():
    model = build_model("paper").eval()
    report = load_reference_state_dict(model, reference_state(*WEIGHT_FILES))
    assert report["loaded"] == 432 and report["skipped"] == []
    return model


@pytest.fixture(scope="module")
def traj_fx():
    return fixture_file("trajectory_encoder_tp128.safetensors")


@pytest.fixture(scope="module")
def full_run(paper):
    """One forward pass of the whole paper model on the full-model fixture, capturing the intermediates."""
    rgb_fx = fixture_file("rgb_encoder.safetensors")
    full = fixture_file("full_model.safetensors")
    seen: dict[str, torch.Tensor] = {}
    hooks = [mod.register_forward_hook(lambda _m, _i, out, key=key: seen.__setitem__(key, out))
             for key, mod in (("frame", paper.rgb.spatial), ("clip", paper.rgb.temporal),
                              ("clip_tokens", paper.rgb), ("traj_map", paper.traj), ("fused", paper.fusion))]
    frames = rgb_fx["input.rgb_uint8"].permute(0, 1, 3, 4, 2).contiguous()   # (N,T,C,H,W) -> (N,T,H,W,C)
    try:
        with torch.inference_mode(), FlopCounter(paper) as fc:
            seen["score"] = paper(full["input.trajs"], full["input.index_t"], frames)
        seen["flops"], seen["flops_by_part"] = fc.total, dict(fc.by_module)
    finally:
        for h in hooks:
            h.remove()
    return seen, rgb_fx, full


def test_trajectory_tp128_maps_and_features(paper, traj_fx):
    with torch.inference_mode():
        maps = paper.traj.forward_maps(traj_fx["input.trajs"], traj_fx["input.index_t"])
    bctv = [m.permute(0, 3, 1, 2) for m in maps]                          # ours (B,T,V,C) -> reference (B,C,T,V)
    assert max_abs(bctv[0], traj_fx["output.embed"]) < TOL_MAP
    assert max_abs(bctv[1], traj_fx["output.stage1"]) < TOL_MAP
    assert max_abs(bctv[4], traj_fx["output.stage4"]) < TOL
    assert max_abs(paper.traj.pool(maps[4]), traj_fx["output.features"]) < TOL


def test_trajectory_batch_of_two_with_index_above_one(paper, traj_fx):
    assert traj_fx["input.index_t_b2"].max() > 1
    with torch.inference_mode():
        feats = paper.traj.pool(paper.traj(traj_fx["input.trajs_b2"], traj_fx["input.index_t_b2"]))
    assert max_abs(feats, traj_fx["output.features_b2"]) < TOL


def test_trajectory_tp64_loads_tp128_weights(traj_fx):
    fx = fixture_file("trajectory_encoder_tp64.safetensors")
    model = build_model("paper", tp=64, streams="trajectory").eval()
    load_reference_state_dict(model, {k: v for k, v in traj_fx.items() if k.startswith("state.encoder.")})
    with torch.inference_mode():
        last = model.traj(fx["input.trajs"], fx["input.index_t"])
    assert max_abs(last.permute(0, 3, 1, 2), fx["output.stage4"]) < TOL
    assert max_abs(model.traj.pool(last), fx["output.features"]) < TOL


def test_fusion_blocks_fused_and_score(paper):
    fx = fixture_file("fusion_head.safetensors")
    x, p = fx["input.rgb_token"], fx["input.traj_token"]
    with torch.inference_mode():
        for i, blk in enumerate(paper.fusion.blocks):
            x = blk(x, p)
            assert max_abs(x, fx[f"output.block{i}"]) < TOL
        fused = x.mean(1)
        score = paper.head(fused)
    assert max_abs(fused, fx["output.fused"]) < TOL
    assert max_abs(score, fx["output.score"]) < TOL


def test_fusion_multi_token(paper):
    fx = fixture_file("fusion_head.safetensors")
    with torch.inference_mode():
        tokens = paper.fusion(fx["input.multi_rgb_tokens"], fx["input.multi_traj_tokens"])
        score = paper.head(tokens.mean(1))
    assert max_abs(tokens, fx["output.multi_fused_tokens"]) < TOL
    assert max_abs(score, fx["output.multi_score"]) < TOL


def test_rgb_frame_clip_and_token(full_run):
    seen, rgb_fx, _ = full_run
    assert max_abs(seen["frame"], rgb_fx["output.frame_features"]) < TOL_MAP
    assert max_abs(seen["clip"], rgb_fx["output.clip_features"]) < TOL
    assert max_abs(seen["clip_tokens"].mean(1), rgb_fx["output.rgb_token"]) < TOL


def test_full_model_score(paper, full_run):
    seen, _, full = full_run
    assert max_abs(paper.traj.pool(seen["traj_map"]).unsqueeze(1), full["output.traj_feats"]) < TOL
    assert max_abs(seen["clip_tokens"].mean(1, keepdim=True), full["output.rgb_feats"]) < TOL
    assert max_abs(seen["fused"].mean(1), full["output.fused"]) < TOL
    assert seen["score"].shape == (1,)
    assert max_abs(seen["score"], full["output.score"].reshape(1)) < TOL


def test_flop_count_matches_the_reference_figure(full_run):
    """333.5 GFLOPs per sample, 310.8 of them in the RGB encoder (IMPLEMENTATION_NOTES)."""
    seen, _, _ = full_run
    assert abs(seen["flops"] / 1e9 - 333.5) < 0.1
    assert abs(seen["flops_by_part"]["rgb"] / 1e9 - 310.8) < 0.1
