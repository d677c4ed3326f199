"""TraMP-Former: trajectory encoder + RGB encoder + TraMP fusion + MLP head.

    score = model(trajs (B, 63, Tp, Cp) float32, index_t (B, Tp) float32, frames (B, Tf, 224, 224, 3) uint8)
    -> (B,) float32

Streams: `both` fuses; `rgb` / `trajectory` skip the fusion and feed the head directly.
Fusion modes: `pooled` (paper: one RGB token queries one trajectory token, the attention is inert) and
`tokens` (per-clip RGB tokens query trajectory region x segment tokens).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from model.config import ModelConfig, get_config
from model.fusion import Head, TraMPFusion
from model.rgb import RGBEncoder
from model.trajectory import TrajectoryEncoder


class TrampFormer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.traj = TrajectoryEncoder(cfg) if cfg.uses_trajectory else None
        self.rgb = RGBEncoder(cfg) if cfg.uses_rgb else None
        self.fusion = (TraMPFusion(cfg.dim, cfg.fusion_blocks, cfg.fusion_heads, cfg.fusion_mlp)
                       if cfg.streams == "both" and cfg.fusion_blocks > 0 else None)
        head_in = cfg.traj_channels[-1] if cfg.streams == "trajectory" else cfg.dim
        self.head = Head(head_in, cfg.head_hidden)

    def traj_tokens(self, trajs: torch.Tensor, index_t: torch.Tensor) -> torch.Tensor:
        """(B, Nk, D): one pooled token, or region x segment tokens in tokens mode."""
        assert self.traj is not None, "a model without the trajectory stream"
        x = self.traj(trajs, index_t)                                     # (B, T_last, 63, C)
        if self.cfg.fusion_mode == "tokens" and self.fusion is not None:
            return self.traj.region_segment_tokens(x)
        return self.traj.pool(x).unsqueeze(1)

    def rgb_tokens(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, Nq, D): the mean of the per-clip tokens, or the clip tokens in tokens mode."""
        assert self.rgb is not None, "a model without the RGB stream"
        clips = self.rgb(frames)                                          # (B, n_clips, D)
        if self.cfg.fusion_mode == "tokens" and self.fusion is not None:
            return clips
        return clips.mean(dim=1, keepdim=True)

    def embedding(self, trajs: torch.Tensor | None, index_t: torch.Tensor | None,
                  frames: torch.Tensor | None) -> torch.Tensor:
        """The (B, D) vector fed to the head."""
        if self.cfg.streams == "trajectory":
            assert self.traj is not None and trajs is not None and index_t is not None
            return self.traj.pool(self.traj(trajs, index_t))
        assert frames is not None, "the RGB stream needs frames"
        rgb = self.rgb_tokens(frames)
        if self.cfg.streams == "rgb":
            return rgb.mean(dim=1)
        assert trajs is not None and index_t is not None, "the trajectory stream needs trajs and index_t"
        traj = self.traj_tokens(trajs, index_t)
        if self.fusion is not None:
            rgb = self.fusion(rgb, traj)
        return rgb.mean(dim=1)

    def forward(self, trajs: torch.Tensor | None, index_t: torch.Tensor | None,
                frames: torch.Tensor | None) -> torch.Tensor:
        return self.head(self.embedding(trajs, index_t, frames)).squeeze(-1)

    def model_args(self) -> dict:
        return self.cfg.to_dict()


def build_model(config: str | ModelConfig = "paper", **overrides: Any) -> TrampFormer:
    cfg = config if isinstance(config, ModelConfig) else get_config(config, **overrides)
    if isinstance(config, ModelConfig) and overrides:
        cfg = cfg.with_(**overrides)
    return TrampFormer(cfg)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def from_checkpoint(ckpt: dict) -> TrampFormer:
    """Rebuild from {"model_args": ..., "state_dict": ...} as written by `checkpoint()`."""
    model = TrampFormer(ModelConfig.from_dict(ckpt["model_args"]))
    model.load_state_dict(ckpt["state_dict"], strict=True)
    return model


def checkpoint(model: TrampFormer, **extra: Any) -> dict:
    return {"model_args": model.model_args(), "state_dict": model.state_dict(), **extra}
