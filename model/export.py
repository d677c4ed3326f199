"""ONNX export with a self-check and a sidecar manifest.

    path = export_model(model, cfg, out_dir, "smile-compact", "smile", "1.0.0",
                        training={"dataset": "simulated patients", ...}, metrics={"spearman": 0.7},
                        trained_on="simulated")

writes `<name>.onnx` (opset 17, dynamic batch axis, inputs trajs / index_t / frames, output score, eval mode,
uint8 frames normalised inside the graph) and `<name>.json` (the manifest). The same fields except the file's
own sha256 are stored as ONNX metadata_props. The export checks itself: onnx.checker, then onnxruntime
against PyTorch on fresh random inputs (1e-4 max abs for fp32).
"""
from __future__ import annotations

import datetime as _dt
import json
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.config import ModelConfig, get_config
from model.contract import FULL_CHANNELS, PFED5_EXPRESSIONS, PreprocessContract, check_expression
from model.manifest import sha256_file  # noqa: F401  (re-exported: callers import it from here)
from model.network import TrampFormer, count_params
from model.scales import default_scale, get_scale

OPSET = 17
INPUT_NAMES = ("trajs", "index_t", "frames")
OUTPUT_NAME = "score"
FP32_ATOL = 1e-4


def contract_for_config(cfg: ModelConfig, **overrides: Any) -> PreprocessContract:
    return PreprocessContract(tp=cfg.tp, tf=cfg.tf, channels=cfg.channels, frame_size=cfg.frame_size, **overrides)


def random_inputs(cfg: ModelConfig, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Plausible random inputs: x,y ~ N(0, 30) px, RGB 0..255, looped index_t, uint8 frames."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.randn(batch, 63, cfg.tp, 2, generator=g) * 30
    rgb = torch.rand(batch, 63, cfg.tp, 3, generator=g) * 255
    trajs = torch.cat((xy, rgb), dim=-1)[..., _channel_index(cfg.channels)].contiguous()
    index_t = (2 * torch.arange(cfg.tp, dtype=torch.float32) / cfg.tp - 1).repeat(batch, 1)
    frames = torch.randint(0, 256, (batch, cfg.tf, cfg.frame_size, cfg.frame_size, 3), generator=g,
                           dtype=torch.uint8)
    return trajs, index_t, frames


def _channel_index(channels: Iterable[str]) -> list[int]:
    return [FULL_CHANNELS.index(c) for c in channels]


def export_onnx(model: TrampFormer, path: str | Path, *, opset: int = OPSET) -> Path:
    """Plain export (legacy TorchScript exporter: dependable on torch 2.13 for this graph)."""
    path = Path(path)
    model = model.eval()
    args = random_inputs(model.cfg, batch=2)
    dyn = {n: {0: "batch"} for n in (*INPUT_NAMES, OUTPUT_NAME)}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)    # the legacy exporter is chosen on purpose
        torch.onnx.export(model, args, str(path), input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
                          dynamic_axes=dyn, opset_version=opset, do_constant_folding=True, dynamo=False)
    return path


def ort_session(path: str | Path, threads: int = 1) -> Any:
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_feeds(session: Any, trajs: Any, index_t: Any, frames: Any) -> dict[str, np.ndarray]:
    """Only the inputs the graph declares (a single-stream model may drop the unused ones)."""
    arrays = {"trajs": trajs, "index_t": index_t, "frames": frames}
    return {i.name: np.ascontiguousarray(arrays[i.name].numpy() if isinstance(arrays[i.name], torch.Tensor)
                                         else arrays[i.name]) for i in session.get_inputs()}


def check_onnx(path: str | Path, model: TrampFormer, *, atol: float = FP32_ATOL, seed: int = 1,
               batch: int = 2) -> float:
    """onnx.checker, then onnxruntime vs PyTorch on fresh random inputs; returns the max abs difference."""
    import onnx
    onnx.checker.check_model(str(path))
    inputs = random_inputs(model.cfg, batch=batch, seed=seed)
    with torch.no_grad():
        ref = model.eval()(*inputs).numpy()
    sess = ort_session(path, threads=2)
    out = sess.run([OUTPUT_NAME], ort_feeds(sess, *inputs))[0]
    if out.shape != ref.shape:
        raise AssertionError(f"onnxruntime output shape {out.shape} != PyTorch {ref.shape}")
    diff = float(np.abs(out - ref).max())
    if not diff <= atol:
        raise AssertionError(f"onnxruntime differs from PyTorch by {diff:.3g} > {atol:g} on random inputs")
    return diff


class ModelExists(ValueError):
    """Another model of the same name and version is already in the output folder."""


def check_no_clash(out_dir: str | Path, name: str, version: str) -> None:
    """Refuse to overwrite a model of the same name and version (another version of the name may be replaced)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return
    for js in sorted(out_dir.glob("*.json")):
        try:
            m = json.loads(js.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(m, dict) and m.get("name") == name and str(m.get("version")) == str(version):
            raise ModelExists(f"{js} already holds model {name} version {version}; give another --version or "
                              "--name, or another --out")


def build_manifest(cfg: ModelConfig, name: str, expression: str, version: str, *, contract: PreprocessContract,
                   training: Any, trained_on: str, clinical_use: bool, metrics: dict | None, params: int,
                   precision: str = "fp32", extra: dict | None = None, scale: str | None = None,
                   provenance: dict | None = None) -> dict:
    """The sidecar manifest. `scale` names the score scale (model.scales: `mds_updrs_3_2` for PFED5
    expressions, `toronto_neuroface` for Toronto NeuroFace tasks; default: the expression's protocol);
    `provenance` records the dataset and split sizes, init files, code version and recipe of a trained model."""
    scale_name = get_scale(scale).name if scale else default_scale(expression).name
    return {
        "name": name, "version": version, "expression": expression, "format": "onnx", "opset": OPSET,
        "scale": scale_name, **({"provenance": provenance} if provenance else {}),
        "inputs": {"trajs": ["batch", 63, cfg.tp, cfg.cp, "float32"], "index_t": ["batch", cfg.tp, "float32"],
                   "frames": ["batch", cfg.tf, cfg.frame_size, cfg.frame_size, 3, "uint8"]},
        "outputs": {"score": ["batch", "float32"]},
        "config": cfg.to_dict(), "contract": contract.to_dict(), "params": params, "precision": precision,
        "training_data": training, "trained_on": trained_on, "clinical_use": bool(clinical_use),
        "metrics": metrics or {}, "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__, **(extra or {}),
    }


def _write_metadata(path: Path, manifest: dict) -> None:
    import onnx
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for k, v in manifest.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v if isinstance(v, str) else json.dumps(v, sort_keys=True)
    onnx.save(proto, str(path))


def export_model(model: TrampFormer, cfg: ModelConfig, out_dir: str | Path, name: str, expression: str,
                 version: str, *, training: Any = None, metrics: dict | None = None, trained_on: str = "simulated",
                 clinical_use: bool = False, contract: PreprocessContract | None = None, check: bool = True,
                 precision: str = "fp32", calibration: list[dict[str, np.ndarray]] | None = None,
                 scale: str | None = None, provenance: dict | None = None) -> Path:
    """Export `<out_dir>/<name>.onnx` plus the `<name>.json` manifest; returns the .onnx path.

    precision "int8" quantises the RGB encoder's convolutions and matmuls (model.quantize) after the fp32
    export, calibrated on `calibration` (a list of input dicts; real clips are better than the default
    random ones); its check compares against PyTorch fp32 with the tolerance recorded in the manifest.
    """
    check_expression(expression)
    if clinical_use and not trained_on.startswith("clinical:"):
        raise ValueError(f"clinical_use=True needs a model trained on clinical data, not trained_on={trained_on!r}")
    if cfg != model.cfg:
        raise ValueError("cfg does not match the model's own configuration")
    contract = contract or contract_for_config(cfg)
    if (contract.tp, contract.tf, contract.cp) != (cfg.tp, cfg.tf, cfg.cp):
        raise ValueError(f"contract (tp={contract.tp}, tf={contract.tf}, cp={contract.cp}) does not match "
                         f"the model (tp={cfg.tp}, tf={cfg.tf}, cp={cfg.cp})")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path, json_path = out_dir / f"{name}.onnx", out_dir / f"{name}.json"
    model = model.eval()
    extra: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(model, Path(tmp) / "fp32.onnx")
        if precision == "int8":
            from model.quantize import quantize_rgb_int8
            quantize_rgb_int8(fp32, onnx_path, calibration)
            extra["quantized"] = "int8 static QDQ: RGB encoder Conv/MatMul (+ ResNet Add/ReLU/MaxPool)"
        elif precision == "fp32":
            fp32.replace(onnx_path)
        else:
            raise ValueError(f"precision must be fp32 or int8, got {precision!r}")
    manifest = build_manifest(cfg, name, expression, version, contract=contract, training=training,
                              trained_on=trained_on, clinical_use=clinical_use, metrics=metrics,
                              params=count_params(model), precision=precision, extra=extra, scale=scale,
                              provenance=provenance)
    if check:
        atol = FP32_ATOL if precision == "fp32" else 0.05
        manifest["export_check"] = {"max_abs_vs_torch": check_onnx(onnx_path, model, atol=atol), "atol": atol}
    _write_metadata(onnx_path, manifest)
    manifest["sha256"] = sha256_file(onnx_path)
    json_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return onnx_path


def export_untrained(out_dir: str | Path, expressions: Iterable[str] = PFED5_EXPRESSIONS, config: str = "compact",
                     *, seed: int = 0, version: str = "0.0.0+untrained", check: bool = False) -> list[Path]:
    """Randomly initialised models (one per expression) for tests and wiring: trained_on "untrained",
    clinical_use false. Sit at rest gets Tp=64 as in the paper."""
    paths = []
    for expression in expressions:
        cfg = get_config(config, expression=expression)
        torch.manual_seed(seed)
        model = TrampFormer(cfg).eval()
        paths.append(export_model(
            model, cfg, out_dir, f"{expression}-{config}-untrained", expression, version,
            training={"description": "none: random initialisation (seed %d)" % seed}, metrics={},
            trained_on="untrained", clinical_use=False, check=check))
    return paths
