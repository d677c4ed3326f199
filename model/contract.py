"""The preprocessing contract shared by training and serving.

Every exported model carries its contract in its manifest; extraction reads the contract
to produce inputs, and the scorer refuses inputs that do not match it.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from model.errors import UnknownExpression

PFED5_EXPRESSIONS: tuple[str, ...] = ("sit_at_rest", "smile", "frown", "squeeze_eyes", "clench_teeth")
TORONTO_EXPRESSIONS: tuple[str, ...] = ("blow", "kiss", "brow", "open", "spread")
EXPRESSIONS: tuple[str, ...] = PFED5_EXPRESSIONS + TORONTO_EXPRESSIONS
PROTOCOLS: dict[str, tuple[str, ...]] = {"pfed5": PFED5_EXPRESSIONS, "toronto": TORONTO_EXPRESSIONS}

# Allowed values of the contract's normalisation and padding options (reference first; see worker.landmarks).
COORD_NORMS: tuple[str, ...] = ("first_frame_nose_tip", "first_frame_per_slot", "first_frame_aligned")
SCALE_NORMS: tuple[str, ...] = ("none", "interocular")
FRAME_NORMS: tuple[str, ...] = ("none", "first_frame_diff", "aligned_first_frame_diff")
PADS: tuple[str, ...] = ("loop", "duplicate", "zero", "interpolate")

# Regions in the reference order: left eye, left brow, right eye, right brow, nose, bottom lip, upper lip.
REGIONS: tuple[str, ...] = ("left_eye", "left_brow", "right_eye", "right_brow", "nose", "bottom_lip", "upper_lip")
N_REGIONS = 7
SLOTS_PER_REGION = 9
N_SLOTS = N_REGIONS * SLOTS_PER_REGION  # 63

# The five trajectory channels extraction writes, in this order; a model's contract selects some of them.
FULL_CHANNELS: tuple[str, ...] = ("x", "y", "r", "g", "b")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_expression(name: str) -> str:
    if name not in EXPRESSIONS:
        raise UnknownExpression(
            f"unknown expression {name!r}; expected one of: {', '.join(EXPRESSIONS)}",
            details={"expected": list(EXPRESSIONS)},
        )
    return name


def default_tp(expression: str) -> int:
    """The paper uses Tp=64 for sit at rest (short, still clips) and 128 otherwise."""
    return 64 if expression == "sit_at_rest" else 128


@dataclass(frozen=True)
class PreprocessContract:
    tp: int = 128                     # trajectory steps
    tf: int = 80                      # RGB frames (multiple of 16)
    channels: tuple[str, ...] = FULL_CHANNELS
    landmark_scheme: str = "mediapipe468_63"
    region_order: tuple[str, ...] = REGIONS
    coord_norm: str = "first_frame_nose_tip"   # crop pixels relative to frame 0's nose tip (the reference);
    #                 "first_frame_per_slot": each slot relative to its own frame-0 position (motion only);
    #                 "first_frame_aligned": the same after aligning each frame to frame 0 (head motion removed)
    scale_norm: str = "none"                   # or "interocular"
    rgb_value_range: str = "0-255"
    frame_norm: str = "none"                   # or "first_frame_diff": each frame minus the window's first
    #                 frame, plus 128 (motion only: the face's fixed appearance is removed, as coord_norm does);
    #                 "aligned_first_frame_diff": the same after aligning each crop to the first (head motion out)
    crop_size: int = 256
    frame_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    fps: float = 25.0
    pad: str = "loop"                          # short clips loop (the reference; or "duplicate", "zero",
    #                 "interpolate": the paper's padding ablation); long clips keep the latter portion
    extra: dict = field(default_factory=dict)

    @property
    def cp(self) -> int:
        return len(self.channels)

    def to_dict(self) -> dict:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> PreprocessContract:
        known = {f for f in cls.__dataclass_fields__}
        kw: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known}
        return cls(**kw)

    def sha256(self) -> str:
        """Hash of the contract: a feature cache keyed on it re-extracts when it changes."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def with_(self, **kw: Any) -> PreprocessContract:
        return replace(self, **kw)


def contract_for(expression: str, **overrides: Any) -> PreprocessContract:
    check_expression(expression)
    return PreprocessContract(tp=default_tp(expression), **overrides)
