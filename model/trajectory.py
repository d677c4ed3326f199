"""Trajectory encoder: the SkateFormer variant of TraMP-Former.

Input trajs (B, V=63, T=Tp, Cp) in the reference layout and index_t (B, Tp). Internally the stages keep
(B, T, V, C) so the per-token Linears run without permutes. Joint v = region * 9 + slot.

Quirks kept on purpose so that reference weights load and give the same numbers:
* attention scale is num_heads ** -0.5 (0.5), not head_dim ** -0.5;
* types 1 and 3 use a *tiled* relative bias: token a = n*9 + l gets table[(a % S) - (a' % S) + S - 1];
* type 3/4 tables are sized for traj_max_frames // 8 windows and only rows [:2M-1] are used.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from model.config import ModelConfig
from model.contract import N_REGIONS, N_SLOTS, SLOTS_PER_REGION
from model.layers import DropPath, Mlp

V = N_SLOTS   # 63 = N_REGIONS x SLOTS_PER_REGION (model.contract)
GCONV_GROUPS = 8


def _rel_index(size: int) -> torch.Tensor:
    """i - j + size - 1: the reference's relative_position_index buffer."""
    ar = torch.arange(size)
    return ar[:, None] - ar[None, :] + size - 1


class PartitionAttention(nn.Module):
    bias_gather: torch.Tensor   # a buffer
    """Self-attention inside one Skate partition type (1..4) with a learned relative temporal bias.

    kind 1: local frames x one region;        kind 2: local frames x same slot in all regions;
    kind 3: strided frames x one region;      kind 4: strided frames x same slot in all regions.
    """

    def __init__(self, kind: int, heads: int, frames: int, window: int, s_table: int, attn_drop: float) -> None:
        super().__init__()
        self.kind, self.heads = kind, heads
        self.frames = frames                # T of the stage
        self.window = window                # S: frames per window (local: consecutive; global: strided)
        self.scale = heads ** -0.5          # reference quirk (see module doc)
        rows = 2 * s_table - 1
        shape = (rows, heads) if kind in (1, 3) else (rows, N_REGIONS, N_REGIONS, heads)
        self.bias_table = nn.Parameter(torch.empty(shape))
        nn.init.trunc_normal_(self.bias_table, std=0.02)
        self.register_buffer("rel_index", _rel_index(s_table))          # kept for key compatibility
        self.register_buffer("bias_gather", self._gather_index(), persistent=False)
        self.attn_drop = nn.Dropout(attn_drop)

    def _gather_index(self) -> torch.Tensor:
        s = self.window
        if self.kind in (1, 3):            # tokens a = n * 9 + l; tiled bias (reference quirk)
            a = torch.arange(s * SLOTS_PER_REGION) % s
            return (a[:, None] - a[None, :] + s - 1).reshape(-1)
        n = torch.arange(s).repeat_interleave(N_REGIONS)                 # tokens a = n * 7 + k
        k = torch.arange(N_REGIONS).repeat(s)
        idx = ((n[:, None] - n[None, :] + s - 1) * N_REGIONS + k[:, None]) * N_REGIONS + k[None, :]
        return idx.reshape(-1)

    def bias(self) -> torch.Tensor:
        n = self.bias_gather.numel()
        tokens = int(math.isqrt(n))
        b = self.bias_table.reshape(-1, self.heads).index_select(0, self.bias_gather)
        return b.reshape(tokens, tokens, self.heads).permute(2, 0, 1)     # (h, n, n)

    def partition(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, V, C) -> (windows, tokens, C)."""
        t, c, s = self.frames, x.shape[-1], self.window
        if self.kind == 1:
            x = x.reshape(-1, t // s, s, N_REGIONS, SLOTS_PER_REGION, c).permute(0, 1, 3, 2, 4, 5)
        elif self.kind == 2:
            x = x.reshape(-1, t // s, s, N_REGIONS, SLOTS_PER_REGION, c).permute(0, 1, 4, 2, 3, 5)
        elif self.kind == 3:
            x = x.reshape(-1, s, t // s, N_REGIONS, SLOTS_PER_REGION, c).permute(0, 2, 3, 1, 4, 5)
        else:
            x = x.reshape(-1, s, t // s, N_REGIONS, SLOTS_PER_REGION, c).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(-1, x.shape[3] * x.shape[4], c)

    def reverse(self, y: torch.Tensor) -> torch.Tensor:
        """(windows, tokens, C) -> (B, T, V, C)."""
        t, c, s = self.frames, y.shape[-1], self.window
        if self.kind == 1:
            y = y.reshape(-1, t // s, N_REGIONS, s, SLOTS_PER_REGION, c).permute(0, 1, 3, 2, 4, 5)
        elif self.kind == 2:
            y = y.reshape(-1, t // s, SLOTS_PER_REGION, s, N_REGIONS, c).permute(0, 1, 3, 4, 2, 5)
        elif self.kind == 3:
            y = y.reshape(-1, t // s, N_REGIONS, s, SLOTS_PER_REGION, c).permute(0, 3, 1, 2, 4, 5)
        else:
            y = y.reshape(-1, t // s, SLOTS_PER_REGION, s, N_REGIONS, c).permute(0, 3, 1, 4, 2, 5)
        return y.reshape(-1, t, V, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, V, 3c) -> (B, T, V, c)."""
        w = self.partition(x)                                             # (B_, n, 3c)
        n = w.shape[1]
        qkv = w.reshape(-1, n, 3, self.heads, w.shape[-1] // (3 * self.heads)).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]                                  # (B_, h, n, d)
        attn = (q * self.scale) @ k.transpose(-2, -1) + self.bias().unsqueeze(0)
        attn = self.attn_drop(attn.softmax(dim=-1))
        y = (attn @ v).transpose(1, 2).reshape(-1, n, w.shape[-1] // 3)
        return self.reverse(y)


class SkateBlock(nn.Module):
    """LN -> Linear C->2C -> [G-conv C/4 | T-conv C/4 | 4 partition attentions 3C/8 -> C/8 each] -> proj."""

    def __init__(self, dim: int, frames: int, cfg: ModelConfig, drop_path: float) -> None:
        super().__init__()
        self.dim = dim
        self.norm1 = nn.LayerNorm(dim)
        self.expand = nn.Linear(dim, 2 * dim)
        # one learned 63x63 adjacency per group, identity at init (reference init not published)
        self.adjacency = nn.Parameter(torch.eye(V).repeat(GCONV_GROUPS, 1, 1))
        self.tconv = nn.Conv2d(dim // 4, dim // 4, (7, 1), padding=(3, 0), groups=GCONV_GROUPS)
        self.attention = nn.ModuleList(
            PartitionAttention(kind, cfg.traj_heads, frames,
                               cfg.traj_local_frames if kind in (1, 2) else cfg.global_frames,
                               cfg.traj_local_frames if kind in (1, 2)
                               else cfg.traj_max_frames // cfg.traj_local_frames,
                               cfg.traj_attn_drop)
            for kind in (1, 2, 3, 4)
        )
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 2 * dim)
        self.drop_path = DropPath(drop_path)

    def _gconv(self, g: torch.Tensor) -> torch.Tensor:
        t, c = g.shape[1], g.shape[-1]
        g = g.permute(0, 3, 1, 2).reshape(-1, GCONV_GROUPS, c // GCONV_GROUPS, t, V)
        g = g @ self.adjacency.transpose(1, 2).unsqueeze(1)              # y[..., v] = sum_u x[..., u] A[v, u]
        return g.reshape(-1, c, t, V).permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, V, C) -> (B, T, V, C)."""
        c4, c8 = self.dim // 4, 3 * self.dim // 8
        f = self.expand(self.norm1(x))                                    # (B, T, V, 2C)
        parts = [self._gconv(f[..., :c4]),
                 self.tconv(f[..., c4:2 * c4].permute(0, 3, 1, 2)).permute(0, 2, 3, 1)]
        for i, attn in enumerate(self.attention):
            lo = 2 * c4 + i * c8
            parts.append(attn(f[..., lo:lo + c8]))
        x = x + self.drop_path(self.proj(torch.cat(parts, dim=-1)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerge(nn.Module):
    """Temporal downsampling: Conv2d (7,1) stride (2,1) then BatchNorm, on (B, C, T, V)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, (7, 1), stride=(2, 1), padding=(3, 0))
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)


class Stage(nn.Module):
    def __init__(self, cin: int, cout: int, frames: int, depth: int, cfg: ModelConfig,
                 drop_paths: list[float], merge: bool) -> None:
        super().__init__()
        self.merge = PatchMerge(cin, cout) if merge else None
        self.blocks = nn.ModuleList(SkateBlock(cout, frames, cfg, dp) for dp in drop_paths[:depth])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merge is not None:
            x = self.merge(x)
        for blk in self.blocks:
            x = blk(x)
        return x


class TrajectoryEncoder(nn.Module):
    freq: torch.Tensor   # a buffer
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        widths = (cfg.cp, *cfg.traj_stem, cfg.traj_channels[0])
        self.stem = nn.ModuleList(nn.Conv2d(a, b, 1) for a, b in zip(widths[:-1], widths[1:], strict=True))
        d0 = cfg.traj_channels[0]
        self.slot_embed = nn.Parameter(torch.empty(d0, V))
        nn.init.trunc_normal_(self.slot_embed, std=0.02)
        self.register_buffer("freq", torch.exp(torch.arange(0, d0, 2, dtype=torch.float32)
                                               * -(math.log(10000.0) / d0)), persistent=False)
        total = sum(cfg.traj_depths)
        dps = torch.linspace(0, cfg.traj_drop_path, total).tolist()
        self.stages = nn.ModuleList()
        cin, start = d0, 0
        for s, (cout, depth) in enumerate(zip(cfg.traj_channels, cfg.traj_depths, strict=True)):
            frames = cfg.tp // 2 ** s
            self.stages.append(Stage(cin, cout, frames, depth, cfg, dps[start:start + depth], merge=s > 0))
            cin, start = cout, start + depth

    def embed(self, trajs: torch.Tensor, index_t: torch.Tensor) -> torch.Tensor:
        """Stem plus skate-embedding: (B, V, T, Cp), (B, T) -> (B, T, V, C0)."""
        x = trajs.permute(0, 3, 2, 1)                                     # (B, Cp, T, V)
        if self.cfg.traj_input_scale != 1.0:   # e.g. interocular-unit coordinates (~0.1) to unit size
            x = x * self.cfg.traj_input_scale
        for i, conv in enumerate(self.stem):
            x = conv(x)
            if i < len(self.stem) - 1:
                x = nn.functional.gelu(x)
        ang = index_t.unsqueeze(-1) * self.freq                           # (B, T, C0/2)
        te = torch.stack((ang.sin(), ang.cos()), dim=-1).flatten(2)      # sin even, cos odd channels
        x = x + te.permute(0, 2, 1).unsqueeze(-1) * self.slot_embed.unsqueeze(1)
        return x.permute(0, 2, 3, 1)

    def forward_maps(self, trajs: torch.Tensor, index_t: torch.Tensor) -> list[torch.Tensor]:
        """Embedding and every stage output, each (B, T, V, C)."""
        maps = [self.embed(trajs, index_t)]
        for stage in self.stages:
            maps.append(stage(maps[-1]))
        return maps

    def forward(self, trajs: torch.Tensor, index_t: torch.Tensor) -> torch.Tensor:
        """The last stage map (B, T_last, V, C)."""
        x = self.embed(trajs, index_t)
        for stage in self.stages:
            x = stage(x)
        return x

    @staticmethod
    def pool(x: torch.Tensor) -> torch.Tensor:
        """E_p: mean over time and slots, (B, C)."""
        return x.mean(dim=(1, 2))

    def region_segment_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens mode: the last stage pooled per region and time segment, (B, segments * 7, C)."""
        t, c, g = x.shape[1], x.shape[-1], self.cfg.traj_segments
        x = x.reshape(-1, g, t // g, N_REGIONS, SLOTS_PER_REGION, c).mean(dim=(2, 4))
        return x.reshape(-1, g * N_REGIONS, c)
