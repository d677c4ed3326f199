"""`feqa extract VIDEO --out FILE.npz`: run the extraction a model would see, save it, optionally plot it."""
from __future__ import annotations

import argparse
import json
import sys

HELP = "extract trajectories, RGB clip and quality report from a video (npz), optionally with plots"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", help="video file (MP4, MOV, WebM, AVI, FLV, ...)")
    parser.add_argument("--out", required=True, help="output .npz (trajs, index_t, frames, landmarks, boxes, "
                                                     "quality, meta)")
    parser.add_argument("--expression", default="smile",
                        help="expression whose default contract to use (sets Tp; default smile)")
    parser.add_argument("--plots", metavar="DIR", help="write overlay.png and trajectories.png here")
    parser.add_argument("--max-duration", type=float, default=60.0, help="refuse longer videos (s, default 60)")
    parser.add_argument("--fps", type=float, default=None, help="override the contract frame rate")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from model.contract import contract_for
    from model.errors import FeqaError
    from worker.extract import ExtractLimits, extract
    from worker.video import DecodeLimits

    try:
        contract = contract_for(args.expression)
        if args.fps:
            contract = contract.with_(fps=float(args.fps))
        limits = ExtractLimits(decode=DecodeLimits(max_duration_s=args.max_duration))
        ex = extract(args.video, contract, limits=limits, keep_crops=bool(args.plots))
    except FeqaError as e:
        print(json.dumps({"error": e.to_dict()}, default=str), file=sys.stderr)
        return 2
    ex.save_npz(args.out)
    summary = {"out": str(args.out), "trajs": list(ex.trajs.shape), "frames": list(ex.frames.shape),
               "quality": ex.quality, "meta": ex.meta}
    if args.plots:
        from worker.plots import overlay_png, trajectory_png

        d = Path(args.plots)
        d.mkdir(parents=True, exist_ok=True)
        summary["plots"] = [str(overlay_png(ex, d / "overlay.png")), str(trajectory_png(ex, d / "trajectories.png"))]
    print(json.dumps(summary, indent=1, default=str))
    return 0
