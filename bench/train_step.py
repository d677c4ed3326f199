"""Training step time and peak memory of the `paper` and `compact` configs, on the CPU or a CUDA device.

    .venv/bin/python -m bench.train_step                       # both configs, CPU, batch 2, 2 steps each
    .venv/bin/python -m bench.train_step --device cuda --batch 4 --steps 5 --json out.json

One training step = forward, BMC loss, backward and an SGD step (the paper recipe's optimiser) on random inputs
of the config's sizes (`model.export.random_inputs`), exactly the work `training.loop.train` does per batch
minus augmentation. Each config runs in a fresh process, so its peak memory is its own: on the CPU the peak
resident set size of that process (`ru_maxrss`, model and interpreter included) and its growth over the
process's size before the first step; on CUDA `torch.cuda.max_memory_allocated`. The first step is reported
apart (allocation, kernel selection); the step time is the median of the others. On CUDA the step runs under
bf16 autocast where the device supports it, as `feqa train --device cuda` does.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def measure(config: str, device: str, batch: int, steps: int, threads: int, expression: str = "smile") -> dict:
    """Run `steps` training steps of one config in this process; returns timings and peak memory."""
    import numpy as np
    import torch

    from model.config import get_config
    from model.export import random_inputs
    from model.loss import BMCLoss
    from model.network import TrampFormer, count_params
    from training.loop import TrainConfig, autocast_dtype, make_optimizer, resolve_device

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    dev = resolve_device(device)
    amp = autocast_dtype(dev, True)
    cfg = get_config(config, expression=expression)
    model = TrampFormer(cfg).to(dev).train()
    loss_fn = BMCLoss(1.0, learnable=True).to(dev)
    opt = make_optimizer(model, loss_fn, TrainConfig())
    inputs = [t.to(dev) for t in random_inputs(cfg, batch=batch, seed=0)]
    target = torch.arange(batch, dtype=torch.float32, device=dev) % 5
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    rss_before = _rss_mb()
    times = []
    for _ in range(steps):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        with torch.autocast(device_type=dev.type, dtype=amp or torch.float32, enabled=amp is not None):
            pred = model(*inputs)
        loss = loss_fn(pred.float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        times.append(time.perf_counter() - t0)
    out = {"config": config, "expression": expression, "tp": cfg.tp, "tf": cfg.tf, "frame_size": cfg.frame_size,
           "params_m": round(count_params(model) / 1e6, 2), "device": str(dev), "batch": batch, "steps": steps,
           "threads": threads, "autocast": "bf16" if amp is not None else "off",
           "first_step_s": round(times[0], 3),
           "step_s": round(float(np.median(times[1:] if len(times) > 1 else times)), 3)}
    if dev.type == "cuda":
        out["device_name"] = torch.cuda.get_device_name(dev)
        out["peak_memory_mb"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
        out["memory_kind"] = "torch.cuda.max_memory_allocated"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        out["peak_memory_mb"] = round(peak, 1)
        out["growth_mb"] = round(peak - rss_before, 1)
        out["memory_kind"] = "peak RSS of the process (ru_maxrss)"
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default="paper,compact")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=2, help="training steps per config (the first is reported apart)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", help="also write the rows here")
    p.add_argument("--one", help=argparse.SUPPRESS)          # internal: measure one config in this process
    a = p.parse_args(argv)
    if a.one:
        print(json.dumps(measure(a.one, a.device, a.batch, a.steps, a.threads)))
        return 0
    rows = []
    for config in [c for c in a.configs.split(",") if c]:
        proc = subprocess.run([sys.executable, "-m", "bench.train_step", "--one", config, "--device", a.device,
                               "--batch", str(a.batch), "--steps", str(a.steps), "--threads", str(a.threads)],
                              capture_output=True, text=True, cwd=ROOT)
        if proc.returncode:
            print(f"{config}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            return 1
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"{'config':8s} {'device':8s} {'batch':>5s} {'params M':>8s} {'first s':>8s} {'step s':>8s} "
          f"{'peak MB':>9s}  memory")
    for r in rows:
        print(f"{r['config']:8s} {r['device']:8s} {r['batch']:5d} {r['params_m']:8.2f} {r['first_step_s']:8.3f} "
              f"{r['step_s']:8.3f} {r['peak_memory_mb']:9.1f}  {r['memory_kind']}"
              + (f" (+{r['growth_mb']} MB over the process before the first step)" if "growth_mb" in r else "")
              + (f" [{r['device_name']}, autocast {r['autocast']}]" if "device_name" in r else ""))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
