"""The training loop: one model, one expression; seeded, resumable, with validation-based model selection.

Paper recipe (the default): SGD momentum 0.9, lr 1e-3 divided by 10 every 40 epochs, batch 4, 100 epochs,
the training list repeated 5x per epoch, BMC loss with a learnable sigma (its own lr 1e-2), trajectory time
reversal p=0.5 (index_t kept), RGB random 224 crop of the 256 crop and horizontal flip with the trajectories
mirrored (x -> -x, left/right slot groups swapped).
"""
from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from model.config import ModelConfig
from model.loss import BMCLoss
from model.network import TrampFormer

FULL_CHANNELS = ("x", "y", "r", "g", "b")


@dataclass
class TrainConfig:
    epochs: int = 100
    optimizer: str = "sgd"          # sgd | adam | adamw
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_step: int = 40               # epochs between lr drops
    lr_gamma: float = 0.1
    batch_size: int = 4
    repeat: int = 5                 # the training list is repeated this many times per epoch
    sigma_init: float = 1.0
    sigma_lr: float = 1e-2
    learn_sigma: bool = True
    p_reverse: float = 0.5
    p_flip: float = 0.5
    random_crop: bool = True        # random 224 of the 256 crop (frames are upscaled 224 -> 256 first)
    grad_clip: float = 0.0
    seed: int = 0
    threads: int = 2
    max_steps: int = 0              # stop after this many optimiser steps in total (0 = no limit; tests)
    select_on: str = "spearman"     # validation metric for model selection
    color_jitter: float = 0.0       # > 0: per-clip colour, brightness and contrast change of the RGB frames
    ema: float = 0.0                # > 0: validate, select and save an exponential moving average of the weights
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


# --------------------------------------------------------------------------------------------- data
@dataclass
class Item:
    trajs: np.ndarray      # (63, Tp, 5) float32
    index_t: np.ndarray    # (Tp,) float32
    frames: np.ndarray     # (Tf, 224, 224, 3) uint8
    score: float
    key: str = ""


def augment(item: Item, cfg: TrainConfig, rng: np.random.Generator, uses_rgb: bool) -> tuple[np.ndarray, ...]:
    from worker.landmarks import mirror_frames, mirror_trajs, reverse_time

    trajs, frames = item.trajs, item.frames
    if rng.random() < cfg.p_reverse:
        trajs = reverse_time(trajs)
    if rng.random() < cfg.p_flip:
        trajs = mirror_trajs(trajs, x_channel=0)
        frames = mirror_frames(frames) if uses_rgb else frames
    if uses_rgb and cfg.random_crop:
        frames = random_crop(frames, rng)
    if uses_rgb and cfg.color_jitter > 0:
        frames = color_jitter(frames, rng, cfg.color_jitter)
    return trajs, item.index_t, frames


def color_jitter(frames: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """One appearance change for the whole clip (so the motion is untouched): per-channel gain, brightness,
    contrast around the clip mean, and grey with probability 0.2. Keeps the network from scoring by
    what a face looks like."""
    f = frames.astype(np.float32)
    if rng.random() < 0.2:
        f = np.repeat(f.mean(-1, keepdims=True), 3, -1)
    gain = np.exp(rng.uniform(-strength, strength, 3) * 0.5 + rng.uniform(-strength, strength))
    mean = f.mean()
    f = (f - mean) * np.exp(rng.uniform(-strength, strength)) + mean
    return np.clip(f * gain, 0, 255).astype(np.uint8)


def random_crop(frames: np.ndarray, rng: np.random.Generator, big: int | None = None) -> np.ndarray:
    """The reference crops 224 out of the 256 face crop; extraction hands over the 224 resize, so resize the
    frames back up by 256/224 and take a random window of the original size (the same scale relation at any
    frame size: 64 -> 73 for the demo's 64-pixel frames)."""
    import cv2

    size = frames.shape[1]
    big = big or int(round(size * 256 / 224))
    y0, x0 = rng.integers(0, big - size + 1, 2)
    out = np.empty_like(frames)
    for i, f in enumerate(frames):
        out[i] = cv2.resize(f, (big, big), interpolation=cv2.INTER_LINEAR)[y0:y0 + size, x0:x0 + size]
    return out


def collate(batch: Sequence[tuple], channels: Sequence[str]) -> tuple[torch.Tensor, ...]:
    idx = [FULL_CHANNELS.index(c) for c in channels]
    trajs = torch.from_numpy(np.stack([b[0][..., idx] for b in batch]).astype(np.float32))
    index_t = torch.from_numpy(np.stack([b[1] for b in batch]).astype(np.float32))
    frames = torch.from_numpy(np.stack([b[2] for b in batch]))
    return trajs, index_t, frames


# --------------------------------------------------------------------------------------------- model + optim
def make_optimizer(model: TrampFormer, loss: BMCLoss, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": cfg.lr}]
    if cfg.learn_sigma:
        groups.append({"params": [loss.noise_sigma], "lr": cfg.sigma_lr, "weight_decay": 0.0})
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")


@torch.no_grad()
def predict(model: TrampFormer, items: Sequence[Item], batch_size: int = 8) -> np.ndarray:
    model.eval()
    out = []
    for i in range(0, len(items), batch_size):
        chunk = [(it.trajs, it.index_t, it.frames) for it in items[i:i + batch_size]]
        out.append(model(*collate(chunk, model.cfg.channels)).numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def spearman(y_true: Sequence[float], y_pred: Sequence[float]) -> float:
    from scipy.stats import spearmanr

    if len(y_true) < 2 or np.std(y_pred) == 0 or np.std(y_true) == 0:
        return 0.0
    return float(spearmanr(y_true, y_pred).statistic)


def val_metrics(model: TrampFormer, items: Sequence[Item]) -> dict:
    pred = predict(model, items)
    y = np.array([it.score for it in items], np.float32)
    return {"spearman": spearman(y, pred), "mae": float(np.abs(pred - y).mean()) if len(y) else float("nan")}


# --------------------------------------------------------------------------------------------- state
def _rng_state(rng: np.random.Generator) -> dict:
    return {"numpy": rng.bit_generator.state, "torch": torch.get_rng_state(), "python": random.getstate()}


def _set_rng_state(rng: np.random.Generator, st: dict) -> None:
    rng.bit_generator.state = st["numpy"]
    torch.set_rng_state(st["torch"])
    random.setstate(st["python"])


def save_checkpoint(path: Path, model: TrampFormer, loss: BMCLoss, opt, sched, epoch: int, step: int,
                    rng: np.random.Generator, cfg: TrainConfig, history: list, best: dict, meta: dict,
                    ema_state: dict | None = None) -> None:
    ck = {"ema_state": ema_state} if ema_state is not None else {}
    ck = {**ck, "model_args": model.model_args(), "state_dict": model.state_dict(), "loss_state": loss.state_dict(),
          "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": epoch, "step": step,
          "rng": _rng_state(rng), "train_config": asdict(cfg), "history": history, "best": best, **meta}
    tmp = path.with_suffix(".tmp")
    torch.save(ck, tmp)
    tmp.replace(path)


class _Ema:
    """Exponential moving average of the weights (buffers copied): a smoother model to validate and keep.
    Bound to one model: the tensor pairs are collected once (state_dict tensors share storage with the
    parameters, which the optimiser updates in place), not rebuilt every step."""

    def __init__(self, model: TrampFormer, decay: float) -> None:
        import copy

        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        pairs = list(zip(self.model.state_dict().values(), model.state_dict().values(), strict=True))
        self._float = [(e, p) for e, p in pairs if e.dtype.is_floating_point]
        self._other = [(e, p) for e, p in pairs if not e.dtype.is_floating_point]

    @torch.no_grad()
    def update(self) -> None:
        ema, live = [e for e, _ in self._float], [p for _, p in self._float]
        torch._foreach_mul_(ema, self.decay)
        torch._foreach_add_(ema, live, alpha=1 - self.decay)
        for e, p in self._other:
            e.copy_(p)

    def load(self, state: dict) -> None:
        self.model.load_state_dict(state)


# --------------------------------------------------------------------------------------------- train
def train(model_cfg: ModelConfig, train_items: Sequence[Item], val_items: Sequence[Item], cfg: TrainConfig,
          out_dir: str | Path, *, meta: dict | None = None, resume: bool = True, progress: bool = True,
          init_state: dict | None = None, log=print) -> dict:
    """Train one model; writes `last.pt` (every epoch, resumable) and `best.pt` (best validation metric)
    into out_dir. Returns {"best": ..., "history": [...], "best_path": ...}."""
    from tqdm import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = TrampFormer(model_cfg)
    if init_state:
        model.load_state_dict(init_state, strict=False)
    ema = _Ema(model, cfg.ema) if cfg.ema > 0 else None
    loss_fn = BMCLoss(cfg.sigma_init, learnable=cfg.learn_sigma)
    opt = make_optimizer(model, loss_fn, cfg)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_step, gamma=cfg.lr_gamma)
    meta = {"meta": meta or {}}
    history: list = []
    best: dict = {"epoch": -1, "spearman": -2.0, "mae": float("inf")}
    start_epoch, step = 0, 0
    last = out / "last.pt"
    if resume and last.exists():
        ck = torch.load(last, map_location="cpu", weights_only=False)
        if ModelConfig.from_dict(ck["model_args"]) != model_cfg:
            raise ValueError(f"{last} was trained with another model config; use a fresh --out or --no-resume")
        model.load_state_dict(ck["state_dict"])
        if ema is not None:
            ema.load(ck.get("ema_state") or ck["state_dict"])
        loss_fn.load_state_dict(ck["loss_state"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        _set_rng_state(rng, ck["rng"])
        start_epoch, step, history, best = ck["epoch"] + 1, ck["step"], ck["history"], ck["best"]
        log(f"resumed from {last} at epoch {start_epoch}")
    uses_rgb = model_cfg.uses_rgb
    n = len(train_items)
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        order = np.concatenate([rng.permutation(n) for _ in range(cfg.repeat)])
        batches = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        batches = [b for b in batches if len(b) >= 2]   # BMC needs at least two samples to contrast
        t0, losses = time.time(), []
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False)
        for b in bar:
            batch = [augment(train_items[i], cfg, rng, uses_rgb) for i in b]
            trajs, index_t, frames = collate(batch, model_cfg.channels)
            target = torch.tensor([train_items[i].score for i in b], dtype=torch.float32)
            loss = loss_fn(model(trajs, index_t, frames if uses_rgb else None), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            if ema is not None:
                ema.update()
            losses.append(float(loss.detach()))
            step += 1
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", sigma=f"{float(loss_fn.noise_sigma.detach()):.3f}")
            if cfg.max_steps and step >= cfg.max_steps:
                break
        sched.step()
        judged = ema.model if ema is not None else model
        vm = val_metrics(judged, val_items) if val_items else {"spearman": float("nan"), "mae": float("nan")}
        rec = {"epoch": epoch, "step": step, "loss": float(np.mean(losses)) if losses else float("nan"),
               "sigma": float(loss_fn.noise_sigma.detach()), "lr": opt.param_groups[0]["lr"],
               "val_spearman": vm["spearman"], "val_mae": vm["mae"], "seconds": round(time.time() - t0, 1)}
        history.append(rec)
        log(json.dumps(rec))
        if _better(vm, best, cfg.select_on) or not val_items:
            best = {"epoch": epoch, **vm}
            save_checkpoint(out / "best.pt", judged, loss_fn, opt, sched, epoch, step, rng, cfg, history, best,
                            meta)
        save_checkpoint(last, model, loss_fn, opt, sched, epoch, step, rng, cfg, history, best, meta,
                        ema_state=ema.model.state_dict() if ema is not None else None)
        if cfg.max_steps and step >= cfg.max_steps:
            break
    return {"best": best, "history": history, "best_path": str(out / "best.pt"), "last_path": str(last)}


def _better(vm: dict, best: dict, key: str) -> bool:
    if key == "mae":
        return vm["mae"] < best["mae"]
    s = vm["spearman"] if vm["spearman"] == vm["spearman"] else -2.0
    return s > best["spearman"] or (s == best["spearman"] and vm["mae"] < best["mae"])


def load_model(path: str | Path) -> tuple[TrampFormer, dict]:
    ck = torch.load(path, map_location="cpu", weights_only=False)
    model = TrampFormer(ModelConfig.from_dict(ck["model_args"]))
    model.load_state_dict(ck["state_dict"], strict=True)
    return model.eval(), ck
