"""Given a tiny TraMP-Former and a learnable synthetic task, when the loop trains a few steps, then the loss
falls; checkpoints resume where they stopped; augmentations keep shapes and meaning."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from model.config import get_config
from model.loss import BMCLoss
from training.loop import TrainConfig, TrainItem, augment, collate, load_model, train

TINY = dict(streams="both", tp=32, tf=16, frame_size=32, rgb_size=32, traj_channels=(32, 32), traj_depths=(1, 1),
            dim=32, rgb_widths=(8, 8, 16, 32), temporal_layers=1, fusion_blocks=1, fusion_heads=2, fusion_mlp=64,
            head_hidden=(16,), spatial_heads=2, spatial_head_dim=8, spatial_mlp=32, temporal_heads=2,
            temporal_head_dim=8, temporal_mlp=32, traj_attn_drop=0.0, traj_drop_path=0.0)


def tiny_cfg():
    return get_config("compact", **TINY)


def synthetic_items(n: int, seed: int = 0) -> list[TrainItem]:
    """Score 0-4 drives the motion amplitude of the mouth slots and the frame brightness."""
    rng = np.random.default_rng(seed)
    items = []
    t = np.linspace(0, 2 * np.pi, 32, dtype=np.float32)
    for i in range(n):
        s = float(i % 5)
        trajs = rng.normal(0, 1, (63, 32, 5)).astype(np.float32)
        trajs[45:, :, 1] += (1 + 2 * s) * np.sin(t)[None]
        trajs[..., 2:] = 100 + 20 * s
        frames = np.full((16, 32, 32, 3), 40 + 40 * s, np.uint8)
        items.append(TrainItem(trajs, np.linspace(-1, 1, 32, dtype=np.float32), frames, s, str(i)))
    return items


def full_loss(model, items) -> float:
    model.eval()
    with torch.no_grad():
        pred = model(*collate([(it.trajs, it.index_t, it.frames) for it in items], model.cfg.channels))
    return float(BMCLoss(1.0, learnable=False)(pred, torch.tensor([it.score for it in items])))


def test_loss_falls_when_training_a_tiny_model(tmp_path):
    # given
    items = synthetic_items(20)
    cfg = TrainConfig(epochs=4, optimizer="adam", lr=3e-3, repeat=2, batch_size=4, threads=1, seed=0,
                      random_crop=False, lr_step=100)
    torch.manual_seed(cfg.seed)
    from model.network import TrampFormer

    before = full_loss(TrampFormer(tiny_cfg()), items)  # same seed -> the same initial weights as train()
    # when
    res = train(tiny_cfg(), items, items[:10], cfg, tmp_path, progress=False, log=lambda *_: None)
    # then
    model, ck = load_model(tmp_path / "last.pt")
    after = full_loss(model, items)
    assert after < 0.7 * before, (before, after)
    assert res["history"][-1]["loss"] < res["history"][0]["loss"]
    assert ck["epoch"] == 3 and ck["model_args"]["tp"] == 32


def test_training_resumes_from_last_checkpoint(tmp_path):
    items = synthetic_items(10)
    cfg = TrainConfig(epochs=1, optimizer="sgd", repeat=1, threads=1, random_crop=False)
    train(tiny_cfg(), items, items[:5], cfg, tmp_path, progress=False, log=lambda *_: None)
    cfg.epochs = 2
    logs = []
    res = train(tiny_cfg(), items, items[:5], cfg, tmp_path, progress=False, log=logs.append)
    assert any("resumed" in str(m) for m in logs)
    assert [h["epoch"] for h in res["history"]] == [0, 1]


def test_flip_mirrors_trajectories_and_frames_together():
    item = synthetic_items(1)[0]
    item.frames[:, :, :16] = 0
    cfg = TrainConfig(p_reverse=0.0, p_flip=1.0, random_crop=False)
    trajs, index_t, frames = augment(item, cfg, np.random.default_rng(0), uses_rgb=True)
    # the left eye's x (slot 0) becomes minus the right eye's x (slot 18)
    np.testing.assert_allclose(trajs[0, :, 0], -item.trajs[18, :, 0])
    assert frames[:, :, 16:].max() == 0 and frames[:, :, :16].min() > 0
    np.testing.assert_array_equal(index_t, item.index_t)


def test_time_reversal_keeps_index_t():
    item = synthetic_items(1)[0]
    cfg = TrainConfig(p_reverse=1.0, p_flip=0.0, random_crop=True)
    trajs, index_t, frames = augment(item, cfg, np.random.default_rng(0), uses_rgb=True)
    np.testing.assert_allclose(trajs[:, 0], item.trajs[:, -1])
    np.testing.assert_array_equal(index_t, item.index_t)
    assert frames.shape == item.frames.shape


def test_random_crop_keeps_the_reference_scale_at_any_frame_size():
    from training.loop import random_crop

    frames = np.zeros((2, 64, 64, 3), np.uint8)
    frames[:, :, 32:] = 200                                   # right half bright
    out = random_crop(frames, np.random.default_rng(1))
    assert out.shape == frames.shape
    # 64 -> 73 then a 64 window: the bright edge moves by at most 73 - 64 + (73 - 64) / 2 pixels, not 4x as
    # a 256 upscale of 64-pixel frames would
    cols = np.where(out[0, 32, :, 0] > 100)[0]
    assert 28 <= cols.min() <= 46 and cols.max() == 63


def test_trajectory_input_scale_is_the_same_as_scaling_the_input():
    from model.network import TrampFormer

    torch.manual_seed(0)
    a = TrampFormer(get_config("compact", **{**TINY, "streams": "trajectory"})).eval()
    b = TrampFormer(get_config("compact", **{**TINY, "streams": "trajectory", "traj_input_scale": 100.0})).eval()
    b.load_state_dict(a.state_dict())
    x, t = torch.randn(2, 63, 32, 5) * 0.05, torch.linspace(-1, 1, 32).repeat(2, 1)
    with torch.no_grad():
        torch.testing.assert_close(b(x, t, None), a(100 * x, t, None))
        assert not torch.allclose(b(x, t, None), a(x, t, None))


def test_calibration_is_fitted_on_validation_and_folded_into_the_head():
    from model.network import TrampFormer
    from training.train import apply_calibration, fit_calibration

    y = [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]
    cal = fit_calibration(y, [10.0 + v / 2 for v in y])
    assert abs(cal["scale"] - 2.0) < 1e-9 and abs(cal["bias"] + 20.0) < 1e-9 and "validation" in cal["fitted_on"]
    assert cal["guard"] == "none" and cal["n"] == 10
    flipped = fit_calibration(y, [4.0 - v for v in y])                                   # never flips the ranking
    assert (flipped["scale"], flipped["bias"], flipped["guard"]) == (1.0, 0.0, "slope_not_positive")
    torch.manual_seed(0)
    model = TrampFormer(tiny_cfg()).eval()
    item = synthetic_items(3)
    inputs = collate([(it.trajs, it.index_t, it.frames) for it in item], model.cfg.channels)
    with torch.no_grad():
        raw = model(*inputs)
        apply_calibration(model, cal)
        torch.testing.assert_close(model(*inputs), 2.0 * raw - 20.0, rtol=1e-5, atol=1e-4)


def test_ema_follows_the_weights_the_optimiser_changes_in_place():
    from model.network import TrampFormer
    from training.loop import _Ema

    torch.manual_seed(0)
    model = TrampFormer(tiny_cfg())
    ema = _Ema(model, 0.9)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)                                     # in place, as an optimiser step does
    ema.update()
    for k, v in ema.model.state_dict().items():
        if v.dtype.is_floating_point and k in dict(model.named_parameters()):
            torch.testing.assert_close(v, 0.9 * before[k] + 0.1 * (before[k] + 1.0))


def test_resume_refuses_a_changed_contract_manifest_or_recipe_and_names_it(tmp_path):
    import pytest

    from training.loop import ResumeRefused

    items = synthetic_items(8)
    cfg = TrainConfig(epochs=1, optimizer="sgd", repeat=1, threads=1, random_crop=False, max_steps=1)
    meta = {"contract": {"tp": 32, "coord_norm": "first_frame_nose_tip"}}
    quiet = dict(progress=False, log=lambda *_: None)
    train(tiny_cfg(), items, items[:5], cfg, tmp_path, meta=meta, **quiet)
    with pytest.raises(ResumeRefused, match="preprocessing contract") as exc:
        train(tiny_cfg(), items, items[:5], cfg, tmp_path, meta={"contract": {**meta["contract"],
                                                                              "coord_norm": "first_frame_aligned"}},
              **quiet)
    assert "manifest" not in str(exc.value) and "recipe" not in str(exc.value)
    with pytest.raises(ResumeRefused, match="manifest"):
        train(tiny_cfg(), items[1:], items[:5], cfg, tmp_path, meta=meta, **quiet)
    with pytest.raises(ResumeRefused, match="recipe"):
        train(tiny_cfg(), items, items[:5], TrainConfig(**{**cfg.__dict__, "lr": 0.5}), tmp_path, meta=meta,
              **quiet)
    # more epochs, another device or thread count: the same run, resumed
    more = TrainConfig(**{**cfg.__dict__, "epochs": 2, "threads": 2, "max_steps": 2})
    res = train(tiny_cfg(), items, items[:5], more, tmp_path, meta=meta, **quiet)
    assert [h["epoch"] for h in res["history"]] == [0, 1]


def test_device_selection_and_autocast_policy():
    import pytest

    from training.loop import DeviceError, autocast_dtype, resolve_device

    assert str(resolve_device("auto", cuda_available=False, device_count=0)) == "cpu"
    assert str(resolve_device("auto", cuda_available=True, device_count=2)) == "cuda:0"
    assert str(resolve_device("cuda", cuda_available=True, device_count=1)) == "cuda:0"
    assert str(resolve_device("CUDA:1", cuda_available=True, device_count=2)) == "cuda:1"
    assert str(resolve_device("cpu", cuda_available=True, device_count=2)) == "cpu"
    for spec, avail, n, said in (("cuda", False, 0, "no CUDA device"), ("cuda:2", True, 2, "only 2"),
                                 ("cuda:x", True, 1, "cuda:N"), ("tpu", True, 1, "expected auto")):
        with pytest.raises(DeviceError, match=said):
            resolve_device(spec, cuda_available=avail, device_count=n)
    cuda, cpu = torch.device("cuda:0"), torch.device("cpu")
    assert autocast_dtype(cuda, True, bf16_supported=True) is torch.bfloat16
    assert autocast_dtype(cuda, True, bf16_supported=False) is None          # fp16 is not used (no scaler)
    assert autocast_dtype(cuda, False, bf16_supported=True) is None
    assert autocast_dtype(cpu, True, bf16_supported=True) is None


def test_loader_workers_build_the_same_batches_whatever_their_number(tmp_path):
    items = synthetic_items(12)
    base = dict(epochs=1, optimizer="adam", lr=1e-3, repeat=1, batch_size=4, threads=1, seed=3)
    states = []
    for w in (1, 2):
        res = train(tiny_cfg(), items, items[:4], TrainConfig(**base, loader_workers=w, prefetch=2),
                    tmp_path / f"w{w}", progress=False, log=lambda *_: None)
        states.append(load_model(res["last_path"])[0].state_dict())
    for k, v in states[0].items():
        torch.testing.assert_close(v, states[1][k], rtol=0, atol=0)


def test_calibration_is_guarded_on_small_or_flat_validation_sets():
    from training.train import CALIBRATION_SLOPE_RANGE, MIN_CALIBRATION_CLIPS, fit_calibration

    lo, hi = CALIBRATION_SLOPE_RANGE
    y = [0, 1, 2, 3, 4, 1, 2, 3]
    # a barely trained model: raw outputs within 0.01 of each other; least squares wants a slope of 400
    nearly_flat = [5.0 + v / 400 for v in y]
    cal = fit_calibration(y, nearly_flat)
    assert cal["guard"] == "slope_clamped" and cal["fitted_scale"] == pytest.approx(400.0)
    assert cal["scale"] == hi
    assert np.mean(cal["scale"] * np.array(nearly_flat) + cal["bias"]) == pytest.approx(np.mean(y))
    tiny = [1e6 * v for v in y]                                                   # huge raw units: clamped up
    assert fit_calibration(y, tiny)["scale"] == lo
    # too few clips: identity, saying so
    few = fit_calibration(y[:MIN_CALIBRATION_CLIPS - 1], [10.0 + v / 2 for v in y[:MIN_CALIBRATION_CLIPS - 1]])
    assert (few["scale"], few["bias"], few["guard"], few["n"]) == (1.0, 0.0, "too_few_clips", 7)
    assert "fewer than 8" in few["fitted_on"]
    # no spread in the scores or the predictions: identity
    assert fit_calibration([2] * 9, list(range(9)))["guard"] == "no_spread"
    assert fit_calibration(list(range(9)), [3.0] * 9)["guard"] == "no_spread"


def test_the_shipped_demo_calibrations_lie_inside_the_guard():
    """The bounds do not touch the demo models: each manifest's fitted slope is inside the range, so refitting
    it under the guard gives the same calibration."""
    import json

    from tests.conftest import ROOT
    from training.train import CALIBRATION_SLOPE_RANGE, MIN_CALIBRATION_CLIPS

    manifests = sorted((ROOT / "models" / "demo").glob("*-*.json"))
    assert manifests
    for path in manifests:
        cal = json.loads(path.read_text())["metrics"]["calibration"]
        assert CALIBRATION_SLOPE_RANGE[0] * 2 <= cal["scale"] <= CALIBRATION_SLOPE_RANGE[1] / 2, path.name
        n = int(cal["fitted_on"].split("(")[1].split()[0])
        assert n >= MIN_CALIBRATION_CLIPS, path.name
