"""Small reusable blocks: MLP, stochastic depth, pre-LN self-attention transformer layer."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DropPath(nn.Module):
    """Stochastic depth per sample; identity in eval mode or when p == 0."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Mlp(nn.Module):
    """Linear -> GELU -> Linear. `tanh=True` uses the tanh approximation (Former-DFER's FeedForward)."""

    def __init__(self, dim: int, hidden: int, *, tanh: bool = False, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.approximate = "tanh" if tanh else "none"
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(F.gelu(self.fc1(x), approximate=self.approximate))
        return self.drop(self.fc2(x))


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused qkv projection without bias (q | k | v outer split)."""

    def __init__(self, dim: int, heads: int, head_dim: int, drop: float = 0.0) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.scale = head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * heads * head_dim, bias=False)
        self.out = nn.Linear(heads * head_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        qkv = self.qkv(x).reshape(-1, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]                              # (b, h, n, d)
        attn = (q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)
        y = (attn @ v).transpose(1, 2).reshape(-1, n, self.heads * self.head_dim)
        return self.drop(self.out(y))


class TransformerLayer(nn.Module):
    """Pre-LN layer: x + attn(LN(x)); x + ff(LN(x)), tanh-GELU feed-forward, no final norm."""

    def __init__(self, dim: int, heads: int, head_dim: int, mlp: int, drop: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, head_dim, drop)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = Mlp(dim, mlp, tanh=True, drop=drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ff(self.norm2(x))
