"""One configuration dataclass for the whole network (nanoGPT style).

A checkpoint stores `asdict(cfg)` as its model arguments, so `ModelConfig.from_dict(ckpt["model_args"])`
rebuilds the network exactly. Two named configurations: `paper` (the reference sizes, 25.17 M parameters)
and `compact` (< 3 M parameters, the demo models the service ships).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from model.contract import FULL_CHANNELS

STREAMS = ("both", "rgb", "trajectory")
FUSION_MODES = ("pooled", "tokens")
CHANNEL_SETS = {2: FULL_CHANNELS[:2], 3: FULL_CHANNELS[2:], 5: FULL_CHANNELS}   # x, y / r, g, b / all five


@dataclass(frozen=True)
class ModelConfig:
    name: str = "paper"
    # Inputs
    tp: int = 128                    # trajectory steps (64 / 128 / 256)
    tf: int = 80                     # RGB frames fed to the model (multiple of clip_len)
    cp: int = 5                      # trajectory channels: 2 = x,y; 3 = R,G,B; 5 = both
    streams: str = "both"            # both | rgb | trajectory
    # Trajectory encoder (SkateFormer variant)
    traj_stem: tuple[int, ...] = (10, 15)
    traj_channels: tuple[int, ...] = (128, 256, 256, 256)
    traj_depths: tuple[int, ...] = (2, 2, 2, 2)
    traj_heads: int = 4
    traj_local_frames: int = 8       # frames per local window (partition types 1 and 2)
    traj_max_frames: int = 256       # bias tables are sized for this many frames
    traj_drop_path: float = 0.2
    traj_attn_drop: float = 0.5
    traj_input_scale: float = 1.0    # trajectories are multiplied by this before the stem (1 = the reference)
    # RGB encoder (Former-DFER variant)
    frame_size: int = 224            # size of the frames at the model input
    rgb_size: int = 224              # size inside the model (224 // rgb_size = average-pool factor)
    clip_len: int = 16
    rgb_widths: tuple[int, ...] = (64, 128, 256, 512)
    spatial_layers: int = 1
    spatial_heads: int = 8
    spatial_head_dim: int = 32
    spatial_mlp: int = 512
    temporal_layers: int = 3
    temporal_heads: int = 8
    temporal_head_dim: int = 64
    temporal_mlp: int = 1024
    # Fusion and head
    dim: int = 256
    fusion_blocks: int = 3
    fusion_heads: int = 8
    fusion_mlp: int = 1024
    fusion_mode: str = "pooled"      # pooled (paper: one token per stream) | tokens
    traj_segments: int = 4           # tokens mode: time segments of the last trajectory stage
    head_hidden: tuple[int, ...] = (128, 64)

    def __post_init__(self) -> None:
        if self.streams not in STREAMS:
            raise ValueError(f"streams must be one of {STREAMS}, got {self.streams!r}")
        if self.fusion_mode not in FUSION_MODES:
            raise ValueError(f"fusion_mode must be one of {FUSION_MODES}, got {self.fusion_mode!r}")
        if self.cp not in CHANNEL_SETS:
            raise ValueError(f"cp must be 2, 3 or 5, got {self.cp}")
        if self.tf % self.clip_len:
            raise ValueError(f"tf={self.tf} must be a multiple of clip_len={self.clip_len}")
        if self.tp % (self.traj_local_frames * 2 ** (len(self.traj_channels) - 1)):
            raise ValueError(f"tp={self.tp} must be a multiple of {self.traj_local_frames} x 2^(stages-1)")
        if self.global_frames > self.traj_max_frames // self.traj_local_frames:
            raise ValueError(f"tp={self.tp} too long for bias tables sized for {self.traj_max_frames} frames")
        if any(c % 32 or c % (8 * self.traj_heads) for c in self.traj_channels):
            raise ValueError("trajectory channels must be multiples of 32 (8 G-conv groups of C/4) and of "
                             "8 x traj_heads")
        if self.frame_size % self.rgb_size or self.rgb_size % 16:
            raise ValueError("rgb_size must divide frame_size and be a multiple of 16 (the layer3 token grid)")
        if self.streams == "both" and self.fusion_blocks < 1:
            raise ValueError("a two-stream model needs at least one fusion block")
        if self.streams == "both" and self.traj_channels[-1] != self.dim:
            raise ValueError("the last trajectory stage must have `dim` channels")

    @property
    def global_frames(self) -> int:
        """Frames per global (strided) window: the last stage's length (16 for Tp=128, 8 for Tp=64)."""
        return self.tp // 2 ** (len(self.traj_channels) - 1)

    @property
    def channels(self) -> tuple[str, ...]:
        return CHANNEL_SETS[self.cp]

    @property
    def n_clips(self) -> int:
        return self.tf // self.clip_len

    @property
    def uses_rgb(self) -> bool:
        return self.streams in ("both", "rgb")

    @property
    def uses_trajectory(self) -> bool:
        return self.streams in ("both", "trajectory")

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        kw: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known}
        return cls(**kw)

    def with_(self, **kw: Any) -> ModelConfig:
        return replace(self, **kw)


PAPER = ModelConfig()

COMPACT = ModelConfig(
    name="compact",
    tf=32,
    traj_channels=(32, 64, 128, 128),
    traj_depths=(1, 1, 1, 1),
    traj_heads=1,                    # attention-matrix work scales with heads; it dominates at small widths
    rgb_size=112,
    rgb_widths=(16, 32, 64, 128),
    spatial_heads=2,
    spatial_head_dim=32,
    spatial_mlp=128,
    temporal_layers=2,
    temporal_heads=4,
    temporal_head_dim=32,
    temporal_mlp=256,
    dim=128,
    fusion_heads=4,
    fusion_mlp=256,
    fusion_mode="tokens",
    head_hidden=(64, 32),
)

CONFIGS: dict[str, ModelConfig] = {"paper": PAPER, "compact": COMPACT}


def get_config(name: str, expression: str | None = None, **overrides: Any) -> ModelConfig:
    """A named configuration; `sit_at_rest` gets Tp=64 as in the paper unless `tp` is given."""
    if name not in CONFIGS:
        raise KeyError(f"unknown model config {name!r}; expected one of {sorted(CONFIGS)}")
    if expression == "sit_at_rest":
        overrides.setdefault("tp", 64)
    return replace(CONFIGS[name], **overrides)
