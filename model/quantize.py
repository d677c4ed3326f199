"""int8 quantisation of the RGB encoder inside an exported TraMP-Former graph (onnxruntime.quantization).

The RGB encoder holds 93% of the `paper` model's FLOPs (310.8 of 333.5 GFLOPs) and the fp32 floor on the
2-core CPU is about 0.73 s per sample, above the 0.5 s target. Static QDQ quantisation (per-channel int8
weights, uint8 activations calibrated on sample inputs) turns its Conv and weight MatMul nodes into VNNI
int8 kernels; the trajectory encoder, fusion and head stay fp32. Dynamic quantisation was measured too: its
ConvInteger kernels are several times slower than fp32 convolutions on this CPU, so it is not used for Conv.
The score drift against fp32 must be measured per model (`model.bench` reports it).

`quantize_int8(..., parts=("rgb", "traj"))` also quantises the trajectory encoder (its convolutions and weight
MatMuls; "traj_all" adds the attention products). Measured with `python -m bench.paper_int8` on the reference
fixture weights (batch 1, 2 threads, process CPU seconds, one run under load): fp32 2.83, int8 RGB 1.93, int8
RGB + trajectory 2.03, + attention 2.12: the trajectory encoder's small MatMuls gain less than its added
quantise/dequantise steps cost, so only the RGB encoder is quantised by default (export precision "int8").
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

QUANT_OPS = ("Conv", "MatMul", "Add", "MaxPool", "Relu")


_RESNET_PREFIXES = ("/rgb/spatial/layer", "/rgb/spatial/MaxPool", "/rgb/spatial/Relu")


def traj_nodes(path: str | Path, all_matmuls: bool = False) -> list[str]:
    """The trajectory encoder's Conv nodes and its MatMuls by a weight (the projections and MLPs); with
    `all_matmuls` also the attention products of two activations."""
    import onnx
    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {i.name for i in graph.initializer}
    return [n.name for n in graph.node if n.name.startswith("/traj/") and n.op_type in ("Conv", "MatMul")
            and (all_matmuls or n.op_type == "Conv" or any(i in weights for i in n.input))]


def rgb_nodes(path: str | Path) -> list[str]:
    """The RGB encoder's Conv nodes and MatMuls by a weight, plus the ResNet's residual Adds, ReLUs and max-pool
    so that int8 tensors flow between convolutions without dequantising (the legacy exporter names nodes by
    module path). The attention products of two activations stay fp32: quantised, they lose onnxruntime's
    MatMul+scale fusion and add quantise steps (fixture weights, one run: 0.63x fp32 CPU against 0.67x with
    them quantised, drift 2.0e-4 against 7.6e-4)."""
    import onnx
    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {i.name for i in graph.initializer}
    keep = []
    for n in graph.node:
        if n.op_type == "Conv" and n.name.startswith("/rgb/"):
            keep.append(n.name)
        elif n.op_type == "MatMul" and n.name.startswith("/rgb/") and any(i in weights for i in n.input):
            keep.append(n.name)
        elif n.op_type in ("Add", "MaxPool", "Relu") and n.name.startswith(_RESNET_PREFIXES):
            keep.append(n.name)
    return keep


class _Reader:
    """CalibrationDataReader over dicts of named input arrays."""

    def __init__(self, samples: Iterable[dict[str, np.ndarray]]) -> None:
        self._it: Iterator[dict[str, np.ndarray]] = iter(samples)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def calibration_samples(path: str | Path, n: int = 4, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Random inputs matching the graph (batch 1). Real clips calibrate better: pass your own samples."""
    import onnxruntime as ort
    rng = np.random.default_rng(seed)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = []
    for _ in range(n):
        feed = {}
        for i in sess.get_inputs():
            shape = [1 if not isinstance(d, int) else d for d in i.shape]
            if i.name == "frames":
                # smooth random images: per-frame colour fields rather than white noise
                base = rng.integers(0, 256, size=(*shape[:2], 1, 1, 3))
                feed[i.name] = np.clip(base + rng.normal(0, 20, size=shape), 0, 255).astype(np.uint8)
            elif i.name == "index_t":
                feed[i.name] = np.tile(2 * np.arange(shape[1], dtype=np.float32) / shape[1] - 1, (shape[0], 1))
            else:
                feed[i.name] = (rng.normal(0, 30, size=shape)).astype(np.float32)
        out.append(feed)
    return out


def quantize_rgb_int8(src: str | Path, dst: str | Path,
                      samples: Iterable[dict[str, np.ndarray]] | None = None) -> Path:
    return quantize_int8(src, dst, samples, parts=("rgb",))


def quantize_int8(src: str | Path, dst: str | Path, samples: Iterable[dict[str, np.ndarray]] | None = None,
                  parts: tuple[str, ...] = ("rgb", "traj")) -> Path:
    """Static int8 (QDQ) of the chosen encoders: "rgb" (the ResNet and the RGB transformer), "traj" (the
    trajectory encoder's convolutions and weight MatMuls), "traj_all" (also its attention products)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    samples = list(samples) if samples is not None else calibration_samples(src)
    nodes: list[str] = []
    if "rgb" in parts:
        nodes += rgb_nodes(src)
    if "traj" in parts or "traj_all" in parts:
        nodes += traj_nodes(src, all_matmuls="traj_all" in parts)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)      # silences its generic "consider pre-processing" advice
    try:
        quantize_static(
            str(src), str(dst), _Reader(samples), quant_format=QuantFormat.QDQ,
            nodes_to_quantize=nodes, op_types_to_quantize=list(QUANT_OPS), per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True, "DedicatedQDQPair": True})
    finally:
        root.setLevel(level)
    return Path(dst)
