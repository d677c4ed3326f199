"""The `paper` network on the CPU at batch 1: fp32 beside int8 variants, with the score drift against fp32.

    .venv/bin/python -m bench.paper_int8 [--parts rgb rgb+traj rgb+traj_all] [--threads 2] [--reps 3]
    make bench                                   (section "paper_int8")

The weights are the reference fixture weights (../shared/reference/fixtures: the official TraMP-Former code's
seeded model with perturbed norms, loaded through model.keymap), so the drift is measured on the fixture's own
input clip (63x128 trajectories, 80 frames) as well as on random inputs. int8 variants (model.quantize, static
QDQ calibrated on two random samples): "rgb" = the RGB encoder, "rgb+traj" = also the trajectory encoder's
convolutions and weight MatMuls, "rgb+traj_all" = also its attention products. Per variant: wall seconds per
sample (min, median over --reps) and process CPU seconds (all threads; steadier on a shared machine).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("FEQA_SHARED", ROOT.parent / "shared")) / "reference" / "fixtures"


def _fixture_model():
    import torch
    from safetensors.torch import load_file

    from model.keymap import load_reference_state_dict
    from model.network import build_model

    torch.manual_seed(0)
    model = build_model("paper").eval()
    sd = {}
    for f in ("trajectory_encoder_tp128", "rgb_encoder", "fusion_head"):
        sd.update({k: v for k, v in load_file(FIXTURES / f"{f}.safetensors").items() if k.startswith("state.")})
    load_reference_state_dict(model, sd)
    full, rgb = load_file(FIXTURES / "full_model.safetensors"), load_file(FIXTURES / "rgb_encoder.safetensors")
    feed = {"trajs": full["input.trajs"].numpy(), "index_t": full["input.index_t"].numpy(),
            "frames": np.ascontiguousarray(rgb["input.rgb_uint8"].numpy().transpose(0, 1, 3, 4, 2))}
    return model, feed, float(full["output.score"].reshape(-1)[0])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.paper_int8", description=__doc__.splitlines()[0])
    p.add_argument("--parts", nargs="+", default=["rgb", "rgb+traj", "rgb+traj_all"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    import torch

    from model.export import export_onnx, ort_session
    from model.quantize import calibration_samples, quantize_int8

    torch.set_num_threads(args.threads)
    model, feed, reference = _fixture_model()
    res: dict = {"threads": args.threads, "loadavg_start": [round(x, 2) for x in os.getloadavg()],
                 "reference_score": reference, "variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        src = export_onnx(model, Path(tmp) / "paper.onnx")
        calib, probe = calibration_samples(src, n=2), calibration_samples(src, n=2, seed=7)
        paths = {"fp32": src}
        for parts in args.parts:
            t = time.perf_counter()
            paths[parts] = quantize_int8(src, Path(tmp) / f"{parts}.onnx", calib, parts=tuple(parts.split("+")))
            res.setdefault("quantize_s", {})[parts] = round(time.perf_counter() - t, 1)
        for name, path in paths.items():
            sess = ort_session(path, args.threads)
            score = float(sess.run(None, feed)[0].reshape(-1)[0])
            rnd = [float(sess.run(None, f)[0].reshape(-1)[0]) for f in probe]
            walls, cpus = [], []
            for _ in range(args.reps):
                w, c = time.perf_counter(), time.process_time()
                sess.run(None, feed)
                walls.append(time.perf_counter() - w)
                cpus.append(time.process_time() - c)
            res["variants"][name] = {"score_fixture": score, "scores_random": rnd,
                                     "wall_s_min": round(min(walls), 3),
                                     "wall_s_median": round(float(np.median(walls)), 3),
                                     "cpu_s_min": round(min(cpus), 3)}
    fp = res["variants"]["fp32"]
    for v in res["variants"].values():
        v["drift_fixture"] = abs(v["score_fixture"] - fp["score_fixture"])
        v["drift_random_max"] = max(abs(a - b) for a, b in zip(v["scores_random"], fp["scores_random"], strict=True))
        v["cpu_vs_fp32"] = round(v["cpu_s_min"] / fp["cpu_s_min"], 3)
    res["fp32_vs_reference"] = abs(fp["score_fixture"] - reference)
    res["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    print(f"paper, batch 1, {args.threads} threads (fixture weights); fp32 vs the official code's score: "
          f"{res['fp32_vs_reference']:.1e}")
    for name, v in res["variants"].items():
        print(f"  {name:14s} wall {v['wall_s_min']:.3f} s (median {v['wall_s_median']:.3f}), CPU {v['cpu_s_min']:.3f} s "
              f"({v['cpu_vs_fp32']:.2f}x fp32); drift vs fp32: fixture {v['drift_fixture']:.1e}, random max "
              f"{v['drift_random_max']:.1e}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n")
    return res


if __name__ == "__main__":
    main()
