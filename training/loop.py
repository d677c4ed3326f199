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
from model.contract import FULL_CHANNELS
from model.loss import BMCLoss
from model.network import TrampFormer, checkpoint, from_checkpoint


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
    device: str = "cpu"             # auto | cpu | cuda | cuda:N (resolve_device)
    amp: bool = True                # bf16 autocast on CUDA devices that support it (never on the CPU)
    loader_workers: int = 0         # > 0: batches built (augmented, collated) in DataLoader worker processes
    prefetch: int = 2               # batches each loader worker prepares ahead
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


# Settings that do not change what is learned from which data: a run may resume with other values of these
# (another device, more epochs, more loader processes). Everything else of the recipe is hashed.
RESUMABLE_FIELDS = ("epochs", "max_steps", "threads", "device", "amp", "loader_workers", "prefetch")


class ResumeRefused(ValueError):
    """`last.pt` was written for other data, another preprocessing contract or another recipe."""


class DeviceError(ValueError):
    """A --device that is not there."""


# --------------------------------------------------------------------------------------------- device
def resolve_device(spec: str = "auto", *, cuda_available: bool | None = None,
                   device_count: int | None = None) -> torch.device:
    """`auto` (CUDA when present, else the CPU), `cpu`, `cuda` (= cuda:0) or `cuda:N`; DeviceError otherwise."""
    spec = (spec or "auto").strip().lower()
    avail = torch.cuda.is_available() if cuda_available is None else cuda_available
    count = (torch.cuda.device_count() if avail else 0) if device_count is None else device_count
    if spec == "auto":
        return torch.device("cuda:0" if avail and count > 0 else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        idx_s = spec.partition(":")[2] or "0"
        if not idx_s.isdigit():
            raise DeviceError(f"--device {spec!r}: give cuda or cuda:N with N a device number")
        if not avail or count == 0:
            raise DeviceError(f"--device {spec}: no CUDA device is available here (use --device cpu or auto)")
        if int(idx_s) >= count:
            raise DeviceError(f"--device {spec}: only {count} CUDA device(s) here (cuda:0..cuda:{count - 1})")
        return torch.device(f"cuda:{int(idx_s)}")
    raise DeviceError(f"--device {spec!r}: expected auto, cpu, cuda or cuda:N")


def autocast_dtype(device: torch.device, amp: bool = True, *, bf16_supported: bool | None = None):
    """bf16 on a CUDA device that supports it (the model's float inputs stay fp32), else None (no autocast)."""
    if not amp or device.type != "cuda":
        return None
    ok = torch.cuda.is_bf16_supported() if bf16_supported is None else bf16_supported
    return torch.bfloat16 if ok else None


def _model_device(model: torch.nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


# --------------------------------------------------------------------------------------------- hashes
def _sha(obj) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def run_hashes(model_cfg: ModelConfig, cfg: TrainConfig, train_items: Sequence, val_items: Sequence,
               contract: dict | None) -> dict:
    """sha256 of what a checkpoint was trained from: the manifest (training and validation clips with their
    scores), the preprocessing contract, and the recipe (model config + training settings except
    RESUMABLE_FIELDS)."""
    rows = [["train", it.key, float(it.score)] for it in train_items] + \
           [["val", it.key, float(it.score)] for it in val_items]
    recipe = {k: v for k, v in asdict(cfg).items() if k not in RESUMABLE_FIELDS}
    return {"manifest": _sha(rows), "contract": _sha(contract), "recipe": _sha({"model": model_cfg.to_dict(),
                                                                              "train": recipe})}


def check_resume(ck: dict, hashes: dict, path: Path) -> list[str]:
    """Raise ResumeRefused naming what changed; returns warnings (a checkpoint that predates hash records)."""
    old = ck.get("hashes")
    if not old:
        return [f"{path} records no manifest/contract/recipe hashes (written by an older version): resuming "
                "unchecked; use --restart to start over"]
    changed = [k for k in ("manifest", "contract", "recipe") if old.get(k) != hashes.get(k)]
    if changed:
        what = {"manifest": "manifest (the training/validation clips or their scores)",
                "contract": "preprocessing contract", "recipe": "recipe (model config or training settings)"}
        raise ResumeRefused(f"{path}: not resuming: the {' and the '.join(what[k] for k in changed)} changed "
                            "since this checkpoint was written; use --restart to start over, or another --out")
    return []


# --------------------------------------------------------------------------------------------- data
@dataclass
class TrainItem:
    trajs: np.ndarray      # (63, Tp, 5) float32
    index_t: np.ndarray    # (Tp,) float32
    frames: np.ndarray     # (Tf, 224, 224, 3) uint8
    score: float
    key: str = ""
    pool: str = ""         # windows of one whole recording share a pool: each epoch draws one of them


def augment(item: TrainItem, cfg: TrainConfig, rng: np.random.Generator, uses_rgb: bool) -> tuple[np.ndarray, ...]:
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
def predict(model: TrampFormer, items: Sequence[TrainItem], batch_size: int = 8) -> np.ndarray:
    model.eval()
    dev = _model_device(model)
    out = []
    for i in range(0, len(items), batch_size):
        chunk = [(it.trajs, it.index_t, it.frames) for it in items[i:i + batch_size]]
        x = [t.to(dev, non_blocking=True) for t in collate(chunk, model.cfg.channels)]
        out.append(model(*x).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


class _EpochBatches(torch.utils.data.Dataset):
    """One epoch's batches for DataLoader workers: batch i is augmented with its own generator seeded by
    (seed, epoch, i), so the data do not depend on how many workers build them or in what order."""

    def __init__(self, items, batches, cfg: TrainConfig, epoch: int, uses_rgb: bool, channels) -> None:
        self.items, self.batches, self.cfg, self.epoch = items, batches, cfg, epoch
        self.uses_rgb, self.channels = uses_rgb, channels

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int):
        rng = np.random.default_rng([self.cfg.seed, self.epoch, i])
        b = self.batches[i]
        trajs, index_t, frames = collate([augment(self.items[j], self.cfg, rng, self.uses_rgb) for j in b],
                                         self.channels)
        return trajs, index_t, frames, torch.tensor([self.items[j].score for j in b], dtype=torch.float32)


def spearman(y_true: Sequence[float], y_pred: Sequence[float]) -> float:
    from scipy.stats import spearmanr

    if len(y_true) < 2 or np.std(y_pred) == 0 or np.std(y_true) == 0:
        return 0.0
    return float(spearmanr(y_true, y_pred).statistic)


def val_metrics(model: TrampFormer, items: Sequence[TrainItem]) -> dict:
    pred = predict(model, items)
    y = np.array([it.score for it in items], np.float32)
    return {"spearman": spearman(y, pred), "mae": float(np.abs(pred - y).mean()) if len(y) else float("nan")}


# --------------------------------------------------------------------------------------------- state
def _rng_state(rng: np.random.Generator) -> dict:
    st = {"numpy": rng.bit_generator.state, "torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(rng: np.random.Generator, st: dict) -> None:
    rng.bit_generator.state = st["numpy"]
    torch.set_rng_state(st["torch"])
    random.setstate(st["python"])
    if st.get("cuda") is not None and torch.cuda.is_available() and len(st["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(st["cuda"])


def save_checkpoint(path: Path, model: TrampFormer, loss: BMCLoss, opt, sched, epoch: int, step: int,
                    rng: np.random.Generator, cfg: TrainConfig, history: list, best: dict, meta: dict,
                    ema_state: dict | None = None, hashes: dict | None = None) -> None:
    ck = {"ema_state": ema_state} if ema_state is not None else {}
    ck = {**ck, "hashes": hashes} if hashes else ck
    ck = {**ck, "loss_state": loss.state_dict(),
          "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": epoch, "step": step,
          "rng": _rng_state(rng), "train_config": asdict(cfg), "history": history, "best": best, **meta}
    ck = checkpoint(model, **ck)   # model_args + state_dict as model.network writes them, and the rest
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
def train(model_cfg: ModelConfig, train_items: Sequence[TrainItem], val_items: Sequence[TrainItem], cfg: TrainConfig,
          out_dir: str | Path, *, meta: dict | None = None, resume: bool = True, progress: bool = True,
          init_state: dict | None = None, log=print) -> dict:
    """Train one model; writes `last.pt` (every epoch, resumable) and `best.pt` (best validation metric)
    into out_dir. Returns {"best": ..., "history": [...], "best_path": ...}."""
    from tqdm import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    amp_dtype = autocast_dtype(device, cfg.amp)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = TrampFormer(model_cfg)
    if init_state:
        model.load_state_dict(init_state, strict=False)
    model.to(device)
    ema = _Ema(model, cfg.ema) if cfg.ema > 0 else None
    loss_fn = BMCLoss(cfg.sigma_init, learnable=cfg.learn_sigma).to(device)
    opt = make_optimizer(model, loss_fn, cfg)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_step, gamma=cfg.lr_gamma)
    hashes = run_hashes(model_cfg, cfg, train_items, val_items, (meta or {}).get("contract"))
    meta = {"meta": meta or {}}
    history: list = []
    best: dict = {"epoch": -1, "spearman": -2.0, "mae": float("inf")}
    start_epoch, step = 0, 0
    last = out / "last.pt"
    if resume and last.exists():
        ck = torch.load(last, map_location="cpu", weights_only=False)
        if ModelConfig.from_dict(ck["model_args"]) != model_cfg:
            raise ResumeRefused(f"{last}: not resuming: it was trained with another model config; use --restart "
                                "to start over, or another --out")
        for w in check_resume(ck, hashes, last):
            log(w)
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
    units = sampling_units(train_items)
    n = len(units)
    if device.type == "cuda":
        log(f"training on {device} ({torch.cuda.get_device_name(device)}), autocast "
            f"{'bf16' if amp_dtype is not None else 'off'}, {cfg.loader_workers} loader workers")
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        order = np.concatenate([rng.permutation(n) for _ in range(cfg.repeat)])
        order = np.array([units[u][0] if len(units[u]) == 1 else units[u][int(rng.integers(len(units[u])))]
                          for u in order], np.int64)
        batches = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        batches = [b for b in batches if len(b) >= 2]   # BMC needs at least two samples to contrast
        t0, losses = time.time(), []
        bar = tqdm(_batch_source(train_items, batches, cfg, epoch, rng, uses_rgb, model_cfg.channels, device),
                   total=len(batches), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False)
        for trajs, index_t, frames, target in bar:
            trajs, index_t, target = (t.to(device, non_blocking=True) for t in (trajs, index_t, target))
            frames = frames.to(device, non_blocking=True) if uses_rgb else None
            with torch.autocast(device_type=device.type, dtype=amp_dtype or torch.float32,
                                enabled=amp_dtype is not None):
                pred = model(trajs, index_t, frames)
            loss = loss_fn(pred.float(), target)
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
                            meta, hashes=hashes)
        save_checkpoint(last, model, loss_fn, opt, sched, epoch, step, rng, cfg, history, best, meta,
                        ema_state=ema.model.state_dict() if ema is not None else None, hashes=hashes)
        if cfg.max_steps and step >= cfg.max_steps:
            break
    return {"best": best, "history": history, "best_path": str(out / "best.pt"), "last_path": str(last)}


def _batch_source(items, batches, cfg: TrainConfig, epoch: int, rng: np.random.Generator, uses_rgb: bool,
                  channels, device: torch.device):
    """(trajs, index_t, frames, target) per batch: built here from the run's generator (loader_workers 0, the
    reference behaviour, bit-exact on resume), or in DataLoader worker processes with prefetch and pinned memory
    (each batch with its own (seed, epoch, batch) generator, so resume and worker count do not change the data)."""
    if cfg.loader_workers <= 0:
        for b in batches:
            batch = [augment(items[i], cfg, rng, uses_rgb) for i in b]
            trajs, index_t, frames = collate(batch, channels)
            yield trajs, index_t, frames, torch.tensor([items[i].score for i in b], dtype=torch.float32)
        return
    loader = torch.utils.data.DataLoader(_EpochBatches(items, batches, cfg, epoch, uses_rgb, channels),
                                         batch_size=None, shuffle=False, num_workers=cfg.loader_workers,
                                         prefetch_factor=max(1, cfg.prefetch), pin_memory=device.type == "cuda")
    yield from loader


def sampling_units(items: Sequence[TrainItem]) -> list[list[int]]:
    """What one epoch visits: every item without a pool on its own, and each pool (the candidate windows of
    one whole recording, drawn by the random-window rule) once, as one of its windows picked at random."""
    units: list[list[int]] = []
    pools: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        if not it.pool:
            units.append([i])
        elif it.pool in pools:
            pools[it.pool].append(i)
        else:
            pools[it.pool] = [i]
            units.append(pools[it.pool])
    return units


def _better(vm: dict, best: dict, key: str) -> bool:
    if key == "mae":
        return vm["mae"] < best["mae"]
    s = vm["spearman"] if vm["spearman"] == vm["spearman"] else -2.0
    return s > best["spearman"] or (s == best["spearman"] and vm["mae"] < best["mae"])


def load_model(path: str | Path) -> tuple[TrampFormer, dict]:
    ck = torch.load(path, map_location="cpu", weights_only=False)
    return from_checkpoint(ck).eval(), ck
