"""RGB encoder: the Former-DFER variant (S-Former = ResNet-18 + spatial transformer, T-Former over clips).

Input frames (B, Tf, H, W, 3) uint8 RGB. Scaling to [0, 1], ImageNet mean/std normalisation and the optional
in-model downsampling (`rgb_size`) happen here so that an exported graph takes raw uint8 frames. Frames are
batched as (B * Tf) real images and regrouped per sample into clips of `clip_len` (the reference fed
channel-mixed pseudo-frames and mixed samples across the batch: defect 1).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.config import ModelConfig
from model.contract import IMAGENET_MEAN, IMAGENET_STD
from model.layers import TransformerLayer


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.down is None else self.down(x)))


def _layer(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1))


class SpatialEncoder(nn.Module):
    """ResNet-18 with a pre-LN transformer over the layer3 tokens, then layer4 and average pooling."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        w = cfg.rgb_widths
        self.conv1 = nn.Conv2d(3, w[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(w[0])
        self.layer1 = _layer(w[0], w[0], 1)
        self.layer2 = _layer(w[0], w[1], 2)
        self.layer3 = _layer(w[1], w[2], 2)
        self.layer4 = _layer(w[2], w[3], 2)
        self.grid = cfg.rgb_size // 16
        self.pos_embed = nn.Parameter(torch.empty(1, self.grid * self.grid, w[2]))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.transformer = nn.Sequential(*(
            TransformerLayer(w[2], cfg.spatial_heads, cfg.spatial_head_dim, cfg.spatial_mlp)
            for _ in range(cfg.spatial_layers)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) normalised images -> (N, w4)."""
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        x = self.layer3(self.layer2(self.layer1(x)))                      # (N, w3, S/16, S/16)
        c, g = x.shape[1], self.grid
        t = x.reshape(-1, c, g * g).permute(0, 2, 1) + self.pos_embed    # (N, g*g, w3), row-major tokens
        t = self.transformer(t)
        x = t.permute(0, 2, 1).reshape(-1, c, g, g)
        return self.layer4(x).mean(dim=(2, 3))


class TemporalEncoder(nn.Module):
    """A CLS token plus position embedding over each clip of frame vectors; returns the CLS output."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.rgb_widths[3]
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.empty(1, cfg.clip_len + 1, d))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.layers = nn.Sequential(*(
            TransformerLayer(d, cfg.temporal_heads, cfg.temporal_head_dim, cfg.temporal_mlp)
            for _ in range(cfg.temporal_layers)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(clips, clip_len, d) -> (clips, d)."""
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat((cls, x), dim=1) + self.pos_embed
        return self.layers(x)[:, 0]


class RGBEncoder(nn.Module):
    mean: torch.Tensor   # buffers
    std: torch.Tensor
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.spatial = SpatialEncoder(cfg)
        self.temporal = TemporalEncoder(cfg)
        self.clip_proj = nn.Linear(cfg.rgb_widths[3], cfg.dim)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def normalise(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, Tf, H, W, 3) uint8 -> (B * Tf, 3, S, S) float32, ImageNet-normalised.

        Box downsampling (factor 224 // rgb_size) runs on the raw values before the normalisation (they
        commute: the normalisation is a per-channel affine map), so the elementwise ops touch 1/f^2 of the
        pixels; the layout change happens on uint8. At full resolution these memory-bound steps cost as
        much as a small network."""
        h, w, f = frames.shape[2], frames.shape[3], self.cfg.frame_size // self.cfg.rgb_size
        x = frames.reshape(-1, h, w, 3).permute(0, 3, 1, 2).float()      # (N, 3, H, W)
        if f > 1:
            x = F.avg_pool2d(x, f)                                        # (N, 3, S, S)
        return (x / 255.0 - self.mean) / self.std

    def frame_features(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, Tf, H, W, 3) uint8 -> (B * Tf, w4)."""
        return self.spatial(self.normalise(frames))

    def clip_features(self, frame_feats: torch.Tensor) -> torch.Tensor:
        """(B * Tf, w4) -> (B * n_clips, w4); clips of consecutive frames of one sample."""
        return self.temporal(frame_feats.reshape(-1, self.cfg.clip_len, frame_feats.shape[-1]))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Per-clip tokens (B, n_clips, dim): Linear per clip (the paper's 'downsample')."""
        clips = self.clip_features(self.frame_features(frames))
        return self.clip_proj(clips.reshape(-1, self.cfg.n_clips, clips.shape[-1]))
