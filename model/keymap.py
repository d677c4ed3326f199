"""Explicit key map from the reference TraMP-Former state_dict layout to this package's module names.

    load_reference_state_dict(model, "model.pth")                 # a whole Quality_Model checkpoint (432 keys)
    load_reference_state_dict(model, "FormerDFER_DFEW.pth")       # s_former.* / t_former.*: the RGB encoder
    load_reference_state_dict(model, "SkateFormer_256_rgb1x1.pth")# stem.* / stages.* ...: trajectory encoder

Strict: every reference key must map to a key of `model` with the same shape, and every key of the part being
loaded (the whole model, or one encoder) must be covered; only classifier heads of the published encoder
checkpoints (`fc.*`, `head.*`, `classifier.*`) are skipped, and they are reported.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

_Rule = tuple[re.Pattern, Callable[[re.Match], str]]


def _r(pattern: str, repl: str | Callable[[re.Match], str]) -> _Rule:
    fn = repl if callable(repl) else (lambda m, t=repl: m.expand(t))
    return re.compile(pattern + r"\Z"), fn


_BLOCK = r"encoder\.stages\.(\d+)\.blocks\.(\d+)\.transformer\."
_TB = r"traj.stages.\1.blocks.\2."
_SPT = r"rgb_encoder\.s_former\.spatial_transformer\.layers\.(\d+)\."
_TPT = r"rgb_encoder\.t_former\.spatial_transformer\.layers\.(\d+)\."   # sic: the T-Former's layers
_PARAM = r"(weight|bias|running_mean|running_var|num_batches_tracked)"

RULES: list[_Rule] = [
    # trajectory encoder
    _r(r"encoder\.joint_person_embedding", "traj.slot_embed"),
    _r(r"encoder\.stem\.(\d)\.(weight|bias)", lambda m: f"traj.stem.{int(m[1]) // 2}.{m[2]}"),
    _r(r"encoder\.stages\.(\d+)\.blocks\.0\.downsample\.reduction\.(weight|bias)", r"traj.stages.\1.merge.conv.\2"),
    _r(r"encoder\.stages\.(\d+)\.blocks\.0\.downsample\.bn\." + _PARAM, r"traj.stages.\1.merge.bn.\2"),
    _r(_BLOCK + r"norm_1\.(weight|bias)", _TB + r"norm1.\3"),
    _r(_BLOCK + r"norm_2\.(weight|bias)", _TB + r"norm2.\3"),
    _r(_BLOCK + r"mapping\.(weight|bias)", _TB + r"expand.\3"),
    _r(_BLOCK + r"gconv", _TB + "adjacency"),
    _r(_BLOCK + r"tconv\.(weight|bias)", _TB + r"tconv.\3"),
    _r(_BLOCK + r"attention\.(\d)\.relative_position_bias_table", _TB + r"attention.\3.bias_table"),
    _r(_BLOCK + r"attention\.(\d)\.relative_position_index", _TB + r"attention.\3.rel_index"),
    _r(_BLOCK + r"proj\.(weight|bias)", _TB + r"proj.\3"),
    _r(_BLOCK + r"mlp\.(fc1|fc2)\.(weight|bias)", _TB + r"mlp.\3.\4"),
    # RGB encoder: S-Former (ResNet-18 + spatial transformer)
    _r(r"rgb_encoder\.s_former\.conv1\.weight", "rgb.spatial.conv1.weight"),
    _r(r"rgb_encoder\.s_former\.bn1\." + _PARAM, r"rgb.spatial.bn1.\1"),
    _r(r"rgb_encoder\.s_former\.layer(\d)\.(\d)\.(conv1|conv2)\.weight", r"rgb.spatial.layer\1.\2.\3.weight"),
    _r(r"rgb_encoder\.s_former\.layer(\d)\.(\d)\.(bn1|bn2)\." + _PARAM, r"rgb.spatial.layer\1.\2.\3.\4"),
    _r(r"rgb_encoder\.s_former\.layer(\d)\.(\d)\.downsample\.0\.weight", r"rgb.spatial.layer\1.\2.down.0.weight"),
    _r(r"rgb_encoder\.s_former\.layer(\d)\.(\d)\.downsample\.1\." + _PARAM, r"rgb.spatial.layer\1.\2.down.1.\3"),
    _r(r"rgb_encoder\.s_former\.pos_embedding", "rgb.spatial.pos_embed"),
    _r(_SPT + r"0\.fn\.norm\.(weight|bias)", r"rgb.spatial.transformer.\1.norm1.\2"),
    _r(_SPT + r"0\.fn\.fn\.to_qkv\.weight", r"rgb.spatial.transformer.\1.attn.qkv.weight"),
    _r(_SPT + r"0\.fn\.fn\.to_out\.0\.(weight|bias)", r"rgb.spatial.transformer.\1.attn.out.\2"),
    _r(_SPT + r"1\.fn\.norm\.(weight|bias)", r"rgb.spatial.transformer.\1.norm2.\2"),
    _r(_SPT + r"1\.fn\.fn\.net\.0\.(weight|bias)", r"rgb.spatial.transformer.\1.ff.fc1.\2"),
    _r(_SPT + r"1\.fn\.fn\.net\.3\.(weight|bias)", r"rgb.spatial.transformer.\1.ff.fc2.\2"),
    # RGB encoder: T-Former
    _r(r"rgb_encoder\.t_former\.cls_token", "rgb.temporal.cls_token"),
    _r(r"rgb_encoder\.t_former\.pos_embedding", "rgb.temporal.pos_embed"),
    _r(_TPT + r"0\.fn\.norm\.(weight|bias)", r"rgb.temporal.layers.\1.norm1.\2"),
    _r(_TPT + r"0\.fn\.fn\.to_qkv\.weight", r"rgb.temporal.layers.\1.attn.qkv.weight"),
    _r(_TPT + r"0\.fn\.fn\.to_out\.0\.(weight|bias)", r"rgb.temporal.layers.\1.attn.out.\2"),
    _r(_TPT + r"1\.fn\.norm\.(weight|bias)", r"rgb.temporal.layers.\1.norm2.\2"),
    _r(_TPT + r"1\.fn\.fn\.net\.0\.(weight|bias)", r"rgb.temporal.layers.\1.ff.fc1.\2"),
    _r(_TPT + r"1\.fn\.fn\.net\.3\.(weight|bias)", r"rgb.temporal.layers.\1.ff.fc2.\2"),
    _r(r"rgb_transform\.(weight|bias)", r"rgb.clip_proj.\1"),
    # fusion and head
    _r(r"fusion\.model\.(\d+)\.norm_q\.(weight|bias)", r"fusion.blocks.\1.norm_q.\2"),
    _r(r"fusion\.model\.(\d+)\.norm_v\.(weight|bias)", r"fusion.blocks.\1.norm_kv.\2"),
    _r(r"fusion\.model\.(\d+)\.norm2\.(weight|bias)", r"fusion.blocks.\1.norm2.\2"),
    _r(r"fusion\.model\.(\d+)\.attn\.([qkv])_map\.weight", r"fusion.blocks.\1.attn.\2.weight"),
    _r(r"fusion\.model\.(\d+)\.attn\.proj\.(weight|bias)", r"fusion.blocks.\1.attn.proj.\2"),
    _r(r"fusion\.model\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)", r"fusion.blocks.\1.mlp.\2.\3"),
    _r(r"evaluator\.layer(\d)\.(weight|bias)", lambda m: f"head.layers.{int(m[1]) - 1}.{m[2]}"),
]

# Which part of our model a reference prefix fills, and the prefix a bare encoder checkpoint lacks.
PARTS = {"encoder.": "traj.", "rgb_encoder.": "rgb.", "rgb_transform.": "rgb.clip_proj.",
         "fusion.": "fusion.", "evaluator.": "head."}
_CLASSIFIER = re.compile(r"(fc|head|classifier|linear)\.")
_TRAJ_BARE = ("stem.", "stages.", "joint_person_embedding")
_RGB_BARE = ("s_former.", "t_former.")


def map_key(ref_key: str) -> str:
    """Our name for one reference key; KeyError when no rule applies."""
    for pattern, fn in RULES:
        m = pattern.match(ref_key)
        if m:
            return fn(m)
    raise KeyError(f"no mapping for reference key {ref_key!r}")


def read_state_dict(source: str | Path | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A reference state dict from a .pth/.pt/.safetensors file or a mapping; unwraps common containers and
    strips `module.` (DataParallel) and `state.` (fixture files) prefixes."""
    if isinstance(source, Mapping):
        sd = dict(source)
    elif str(source).endswith(".safetensors"):
        from safetensors.torch import load_file
        sd = load_file(str(source))
    else:
        sd = torch.load(str(source), map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd.get(wrapper), Mapping):
            sd = dict(sd[wrapper])
    out = {}
    for k, v in sd.items():
        if k.startswith(("input.", "output.")):          # fixture files hold inputs/outputs beside the weights
            continue
        for prefix in ("module.", "state."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def _add_bare_prefix(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if any(k.startswith(_RGB_BARE) for k in sd):
        return {("rgb_encoder." + k if not k.startswith("rgb_") else k): v for k, v in sd.items()}
    if any(k.startswith(_TRAJ_BARE) for k in sd) and not any(k.startswith("encoder.") for k in sd):
        return {"encoder." + k: v for k, v in sd.items()}
    return sd


def convert_state_dict(ref: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Reference layout -> our names. Returns (mapped, skipped classifier keys); raises on anything else."""
    mapped: dict[str, torch.Tensor] = {}
    skipped: list[str] = []
    unknown: list[str] = []
    for k, v in _add_bare_prefix(dict(ref)).items():
        try:
            mapped[map_key(k)] = v
        except KeyError:
            bare = k.split(".", 1)[1] if k.startswith(("encoder.", "rgb_encoder.")) else k
            (skipped if _CLASSIFIER.match(bare) else unknown).append(k)
    if unknown:
        raise KeyError(f"{len(unknown)} reference keys have no mapping: {unknown[:10]}")
    return mapped, skipped


def part_of(key: str) -> str:
    """The part of our model a key belongs to: `traj.`, `rgb.`, `fusion.` or `head.`."""
    return key.split(".")[0] + "."


def expected_keys(own: Mapping[str, torch.Tensor], mapped: Mapping[str, torch.Tensor]) -> set[str]:
    """Keys of `own` that mapped weights must cover: every key of each part they touch. The one exception is
    `rgb.clip_proj` (the reference's `rgb_transform`), which a bare Former-DFER file does not hold: it may be
    left out only as a whole - a file with its bias but not its weight (or the reverse) does not fit."""
    parts = {part_of(k) for k in mapped}
    expected = {k for k in own if part_of(k) in parts}
    clip_proj = {"rgb.clip_proj.weight", "rgb.clip_proj.bias"}
    if "rgb." in parts and not (clip_proj & mapped.keys()):
        expected -= clip_proj
    return expected


def fit_problems(own: Mapping[str, torch.Tensor], mapped: Mapping[str, torch.Tensor]) -> dict[str, list[str]]:
    """What keeps mapped weights from loading strictly: missing keys, keys the model lacks, shape mismatches."""
    return {"missing": sorted(expected_keys(own, mapped) - mapped.keys()),
            "unexpected": sorted(mapped.keys() - own.keys()),
            "shapes": sorted(f"{k}: reference {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                             for k, v in mapped.items() if k in own and v.shape != own[k].shape)}


def load_reference_state_dict(model: nn.Module, source: str | Path | Mapping[str, torch.Tensor]) -> dict:
    """Load reference-layout weights (whole model or one pretrained encoder) strictly; returns a report."""
    mapped, skipped = convert_state_dict(read_state_dict(source))
    own = model.state_dict()
    parts = sorted({part_of(k) for k in mapped})          # traj. / rgb. / fusion. / head.
    bad = fit_problems(own, mapped)
    missing, unexpected, bad_shape = bad["missing"], bad["unexpected"], bad["shapes"]
    if missing or unexpected or bad_shape:
        raise ValueError(f"reference weights do not fit this model: missing {missing[:10]} ({len(missing)}), "
                         f"unexpected {unexpected[:10]} ({len(unexpected)}), shapes {bad_shape[:10]}")
    own.update({k: v.to(own[k].dtype) for k, v in mapped.items()})
    model.load_state_dict(own, strict=True)
    return {"loaded": len(mapped), "parts": parts, "skipped": skipped}
