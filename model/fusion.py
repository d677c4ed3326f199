"""TraMP fusion blocks and the regression head.

Query = RGB tokens, key/value = trajectory tokens (the same in every block; only the query stream is updated).
K and V share one LayerNorm (as the reference code does), q/k/v projections have no bias, exact-GELU MLP.
"""
from __future__ import annotations

import torch
from torch import nn

from model.layers import Mlp


class CrossAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """x (B, Nq, D) queries over p (B, Nk, D) -> (B, Nq, D)."""
        nq, nk, d = x.shape[1], p.shape[1], x.shape[2]
        h = self.heads
        q = self.q(x).reshape(-1, nq, h, d // h).transpose(1, 2)         # (B, h, Nq, d/h)
        k = self.k(p).reshape(-1, nk, h, d // h).transpose(1, 2)
        v = self.v(p).reshape(-1, nk, h, d // h).transpose(1, 2)
        attn = (q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)    # softmax over the keys
        return self.proj((attn @ v).transpose(1, 2).reshape(-1, nq, d))


class TraMPBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp: int) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = CrossAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp)

    def forward(self, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        p = self.norm_kv(p)
        x = x + self.attn(self.norm_q(x), p)
        return x + self.mlp(self.norm2(x))


class TraMPFusion(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, mlp: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(TraMPBlock(dim, heads, mlp) for _ in range(depth))

    def forward(self, rgb: torch.Tensor, traj: torch.Tensor) -> torch.Tensor:
        """rgb (B, Nq, D) queries, traj (B, Nk, D) keys/values -> updated rgb tokens (B, Nq, D)."""
        for blk in self.blocks:
            rgb = blk(rgb, traj)
        return rgb


class Head(nn.Module):
    """Linear -> ReLU -> ... -> Linear(1); no output activation."""

    def __init__(self, dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        widths = (dim, *hidden, 1)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, lin in enumerate(self.layers):
            x = lin(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x
