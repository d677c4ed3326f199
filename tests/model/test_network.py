"""Given the named and varied configurations, when the network runs, then shapes, sizes and wiring hold."""
from __future__ import annotations

import pytest
import torch

from model.config import get_config
from model.export import random_inputs
from model.flops import count_flops
from model.keymap import convert_state_dict, load_reference_state_dict, map_key
from model.network import TrampFormer, build_model, checkpoint, count_params, from_checkpoint

SMALL = dict(tf=16)          # one RGB clip keeps the variant tests fast


def _run(cfg, batch=2, seed=0):
    torch.manual_seed(seed)
    model = TrampFormer(cfg).eval()
    with torch.no_grad():
        return model, model(*random_inputs(cfg, batch=batch, seed=seed))


def test_paper_size_matches_reference():
    model = build_model("paper")
    assert abs(count_params(model) - 25.17e6) < 0.05e6
    assert abs(count_params(model.traj) - 4.56e6) < 0.01e6
    assert abs(count_params(model.fusion) - 2.37e6) < 0.01e6


def test_paper_for_sit_at_rest_uses_tp64():
    assert get_config("paper", expression="sit_at_rest").tp == 64
    assert get_config("paper", expression="smile").tp == 128


def test_compact_budget_and_contract():
    model = build_model("compact").eval()
    cfg = model.cfg
    assert count_params(model) <= 3e6
    flops, parts = count_flops(model, *random_inputs(cfg, batch=1))
    assert flops <= 10e9 and parts["rgb"] > 0 and parts["traj"] > 0
    assert (cfg.tp, cfg.cp, cfg.frame_size, cfg.tf) == (128, 5, 224, 32)
    assert cfg.streams == "both" and cfg.fusion_mode == "tokens"


@pytest.mark.parametrize("tp", [64, 128, 256])
def test_trajectory_lengths(tp):
    model, out = _run(get_config("compact", tp=tp, **SMALL))
    assert out.shape == (2,) and torch.isfinite(out).all()


@pytest.mark.parametrize("cp", [2, 3, 5])
def test_trajectory_channel_sets(cp):
    model, out = _run(get_config("compact", cp=cp, streams="trajectory"))
    assert model.traj.stem[0].in_channels == cp
    assert out.shape == (2,) and torch.isfinite(out).all()


@pytest.mark.parametrize("streams", ["rgb", "trajectory", "both"])
def test_streams(streams):
    model, out = _run(get_config("compact", streams=streams, **SMALL))
    assert (model.fusion is None) == (streams != "both")
    assert (model.rgb is None) == (streams == "trajectory") and (model.traj is None) == (streams == "rgb")
    assert out.shape == (2,) and torch.isfinite(out).all()


def test_frame_count_sets_the_number_of_clip_tokens():
    cfg = get_config("compact", tf=48, streams="rgb", rgb_size=112)
    torch.manual_seed(0)
    model = TrampFormer(cfg).eval()
    with torch.no_grad():
        tokens = model.rgb(random_inputs(cfg, batch=1)[2])
    assert tokens.shape == (1, 3, cfg.dim) and torch.isfinite(tokens).all()


@pytest.mark.parametrize("bad", [dict(tf=20), dict(cp=4), dict(streams="audio"), dict(fusion_mode="x"),
                                 dict(tp=100), dict(rgb_size=56), dict(fusion_blocks=0)])
def test_invalid_configs_are_refused(bad):
    with pytest.raises(ValueError):
        get_config("compact", **bad)


@pytest.mark.parametrize("mode, alive", [("pooled", False), ("tokens", True)])
def test_query_path_is_inert_only_in_pooled_mode(mode, alive):
    """Defect 2: with one key token the softmax is 1 and q/k get no gradient; tokens mode fixes it."""
    cfg = get_config("compact", fusion_mode=mode, tp=64, **SMALL)
    torch.manual_seed(0)
    model = TrampFormer(cfg)
    trajs, index_t, frames = random_inputs(cfg, batch=2)
    with torch.no_grad():                  # the encoders' tokens as the model builds them; grads from there on
        rgb, traj = model.rgb_tokens(frames), model.traj_tokens(trajs, index_t)
    assert traj.shape[1] == (1 if mode == "pooled" else cfg.traj_segments * 7)
    model.head(model.fusion(rgb, traj).mean(1)).sum().backward()
    attn = model.fusion.blocks[0].attn
    grad = attn.q.weight.grad.abs().sum() + attn.k.weight.grad.abs().sum()
    assert (grad > 0).item() is alive


def test_batch_items_do_not_mix():
    """Defect 1: every sample's frames stay with that sample; batch-of-2 rows equal single-sample runs."""
    cfg = get_config("compact", tp=64, **SMALL)
    model, out = _run(cfg)
    inputs = random_inputs(cfg, batch=2, seed=0)
    with torch.no_grad():
        for i in range(2):
            single = model(*(x[i:i + 1] for x in inputs))
            assert torch.allclose(single, out[i:i + 1], atol=1e-5)


def test_checkpoint_round_trip():
    cfg = get_config("compact", tp=64, **SMALL)
    model, out = _run(cfg)
    again = from_checkpoint(checkpoint(model)).eval()
    assert again.cfg == cfg
    with torch.no_grad():
        assert torch.equal(again(*random_inputs(cfg, batch=2, seed=0)), out)


def _ref_like(model: TrampFormer) -> dict:
    """Reference-layout weights built by inverting the key map on our own state (no fixtures needed)."""
    from tests.model.conftest import FIXTURES
    path = FIXTURES / "state_dict_keys.tsv"
    if not path.exists():
        pytest.skip(f"reference fixtures not found at {FIXTURES} (set FEQA_SHARED); CI always has them")
    own = model.state_dict()
    keys = [line.split("\t")[0] for line in path.read_text().splitlines()[1:]]
    return {k: own[map_key(k)].clone() for k in keys}


@pytest.fixture(scope="module")
def paper_and_ref():
    model = build_model("paper")
    return model, _ref_like(model)


def test_key_map_covers_all_432_reference_keys(paper_and_ref):
    model, ref = paper_and_ref
    assert len(ref) == 432
    mapped, skipped = convert_state_dict(ref)
    assert set(mapped) == set(model.state_dict()) and skipped == []


def test_missing_unknown_and_misshapen_keys_are_refused(paper_and_ref):
    model, ref = paper_and_ref
    missing = dict(ref)
    missing.pop("fusion.model.1.norm_v.weight")
    with pytest.raises(ValueError, match="missing"):
        load_reference_state_dict(model, missing)
    with pytest.raises(KeyError, match="no mapping"):
        load_reference_state_dict(model, {**ref, "encoder.extra_thing": torch.zeros(1)})
    xy = build_model("paper", cp=2)
    with pytest.raises(ValueError, match="shapes"):
        load_reference_state_dict(xy, ref)


def test_published_encoder_checkpoints_load_with_classifier_skipped(paper_and_ref):
    """FormerDFER_DFEW.pth holds s_former.* / t_former.* (+ a DFEW classifier); SkateFormer_256_rgb1x1.pth
    holds the bare encoder keys (+ a head)."""
    model, ref = paper_and_ref
    dfer = {k[len("rgb_encoder."):]: v for k, v in ref.items() if k.startswith("rgb_encoder.")}
    dfer["module.fc.weight"] = torch.zeros(7, 512)
    skate = {k[len("encoder."):]: v for k, v in ref.items() if k.startswith("encoder.")}
    skate["head.weight"] = torch.zeros(7, 256)
    fresh = build_model("paper")
    r1 = load_reference_state_dict(fresh, dfer)
    r2 = load_reference_state_dict(fresh, skate)
    assert r1["parts"] == ["rgb."] and r1["skipped"] == ["rgb_encoder.fc.weight"]
    assert r2["parts"] == ["traj."] and r2["skipped"] == ["encoder.head.weight"]
    own, new = model.state_dict(), fresh.state_dict()
    assert all(torch.equal(own[k], new[k]) for k in own if k.startswith(("traj.", "rgb.spatial", "rgb.temporal")))
