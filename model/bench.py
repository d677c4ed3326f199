"""`feqa bench model`: speed of the `paper` and `compact` networks in PyTorch eager and onnxruntime (CPU).

Per configuration: parameters, FLOPs per sample, ms per sample at batch 1 and 8 in PyTorch eager and in
onnxruntime, achieved GFLOP/s, beside an onnxruntime MatMul peak (2048^2 fp32, 1 and 2 threads) measured in
the same run. `--int8` adds the paper model with its RGB encoder quantised (model.quantize) and the score
drift against fp32. Weights are random (seeded): speed does not depend on them. On a shared machine the
numbers are noisy; the minimum over `--reps` runs is reported.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--configs", nargs="+", default=["paper", "compact"])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="onnxruntime/torch threads")
    p.add_argument("--reps", type=int, default=2, help="timed runs per measurement (min is reported)")
    p.add_argument("--no-eager", action="store_true", help="skip the PyTorch eager timings")
    p.add_argument("--int8", action="store_true", help="also time the paper model with an int8 RGB encoder")
    p.add_argument("--json", type=Path, help="write the results here")


def _time(fn: Callable[[], object], reps: int) -> float:
    return _time2(fn, reps)[0]


def _time2(fn: Callable[[], object], reps: int) -> tuple[float, float]:
    """(best wall seconds, best process CPU seconds). On a shared machine the CPU time is the steadier
    figure: with one thread it is the work done, whatever else runs beside it."""
    fn()                                                       # warm-up (allocation, lazy init)
    wall = cpu = float("inf")
    for _ in range(reps):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall, cpu = min(wall, time.perf_counter() - t), min(cpu, time.process_time() - c)
    return wall, cpu


def matmul_peak(threads: int, n: int = 2048, reps: int = 3) -> float:
    """GFLOP/s of one fp32 n x n MatMul in onnxruntime."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "mm",
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in "ab"],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    onnx.checker.check_model(proto)
    return 2 * n ** 3 / _time(lambda: sess.run(None, {"a": a, "b": a}), reps) / 1e9


def _ort_times(path: Path, cfg: Any, batches: list[int], threads: int, reps: int, flops: int) -> dict:
    from model.export import ort_feeds, ort_session, random_inputs
    out = {}
    for th in sorted({1, threads}):
        sess = ort_session(path, th)
        for b in batches:
            feeds = ort_feeds(sess, *random_inputs(cfg, batch=b))
            s, c = _time2(partial(sess.run, None, feeds), reps)
            out[f"b{b}_t{th}"] = {"ms_per_sample": 1000 * s / b, "cpu_ms_per_sample": 1000 * c / b,
                                  "gflops_per_s": flops * b / s / 1e9}
    return out


def randomise_norms(model: Any, seed: int = 1000) -> None:
    """Give every BatchNorm non-trivial statistics, as trained weights have. With BN at its initial values
    every folded conv bias is zero, the exporter merges the identical initialisers, and the int8 fusion then
    leaves those convolutions in fp32: a benchmark artefact that trained models do not have."""
    import torch
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                assert m.weight is not None and m.bias is not None
                assert m.running_mean is not None and m.running_var is not None
                m.weight.copy_(1 + 0.1 * torch.randn(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))


def bench_config(name: str, args: argparse.Namespace) -> dict:
    import torch

    from model.export import export_onnx, random_inputs
    from model.flops import count_flops
    from model.network import build_model, count_params
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model = build_model(name).eval()
    randomise_norms(model)
    cfg = model.cfg
    flops, parts = count_flops(model, *random_inputs(cfg, batch=1))
    res: dict[str, Any] = {"config": name, "params": count_params(model), "gflops_per_sample": flops / 1e9,
           "gflops_by_part": {k: v / 1e9 for k, v in parts.items()}, "tp": cfg.tp, "tf": cfg.tf,
           "rgb_size": cfg.rgb_size}
    if not args.no_eager:
        res["torch_eager"] = {}
        for b in args.batches:
            inputs = random_inputs(cfg, batch=b)
            with torch.inference_mode():
                s = _time(partial(model, *inputs), args.reps)
            res["torch_eager"][f"b{b}"] = {"ms_per_sample": 1000 * s / b, "gflops_per_s": flops * b / s / 1e9}
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, Path(tmp) / f"{name}.onnx")
        res["onnxruntime"] = _ort_times(path, cfg, args.batches, args.threads, args.reps, flops)
        if args.int8 and name == "paper":
            res["onnxruntime_int8_rgb"] = _int8(path, Path(tmp), cfg, args, flops)
    return res


def _int8(path: Path, tmp: Path, cfg: Any, args: argparse.Namespace, flops: int) -> dict:
    from model.export import ort_feeds, ort_session, random_inputs
    from model.quantize import calibration_samples, quantize_rgb_int8
    qpath = quantize_rgb_int8(path, tmp / "int8.onnx", calibration_samples(path, n=2))
    out = _ort_times(qpath, cfg, [1], args.threads, args.reps, flops)
    out["fp32_same_run"] = _ort_times(path, cfg, [1], args.threads, args.reps, flops)
    ref, q = ort_session(path, args.threads), ort_session(qpath, args.threads)
    diffs = []
    for seed in range(3):
        inputs = random_inputs(cfg, batch=1, seed=100 + seed)
        diffs.append(float(np.abs(ref.run(None, ort_feeds(ref, *inputs))[0]
                                  - q.run(None, ort_feeds(q, *inputs))[0]).max()))
    out["score_drift_vs_fp32_max_abs"] = max(diffs)
    return out


def _print_times(label: str, times: dict) -> None:
    for key, t in times.items():
        if isinstance(t, dict) and "ms_per_sample" in t:
            print(f"  {label:24s} {key:>6s}: {t['ms_per_sample']:8.1f} ms/sample  {t['gflops_per_s']:6.0f} GFLOP/s"
                  + (f"  (CPU {t['cpu_ms_per_sample']:.1f} ms)" if "cpu_ms_per_sample" in t else ""))


def _print(res: dict) -> None:
    print(f"onnxruntime MatMul 2048^2 fp32 peak: {res['matmul_peak_gflops']['1']:.0f} GFLOP/s (1 thread), "
          f"{res['matmul_peak_gflops']['2']:.0f} GFLOP/s (2 threads); load average {res['loadavg']}")
    for r in res["configs"]:
        print(f"\n[{r['config']}] params {r['params'] / 1e6:.2f} M, {r['gflops_per_sample']:.1f} GFLOPs/sample "
              f"(" + ", ".join(f"{k} {v:.1f}" for k, v in r["gflops_by_part"].items()) + ")")
        _print_times("torch eager", r.get("torch_eager", {}))
        _print_times("onnxruntime fp32", r.get("onnxruntime", {}))
        if "onnxruntime_int8_rgb" in r:
            q = r["onnxruntime_int8_rgb"]
            _print_times("onnxruntime int8 RGB", q)
            _print_times("  fp32, same moment", q["fp32_same_run"])
            print(f"  int8 score drift vs fp32 (max abs, random inputs): {q['score_drift_vs_fp32_max_abs']:.2e}")


def main(args: argparse.Namespace) -> dict:
    res = {"threads": args.threads, "loadavg": list(os.getloadavg()),
           "matmul_peak_gflops": {str(t): matmul_peak(t) for t in (1, 2)}, "configs": []}
    for name in args.configs:
        res["configs"].append(bench_config(name, args))
    _print(res)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return res


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser)
    main(parser.parse_args())
