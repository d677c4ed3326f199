"""`feqa score VIDEO --expression EXPR`: the worker pipeline in this process, result JSON on stdout."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "score one video in-process and print the result JSON (no server needed)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", type=Path, help="the face video (MP4, MOV, WebM)")
    parser.add_argument("--expression", "-e", required=True, help="the expression performed, e.g. smile")
    parser.add_argument("--model-dir", type=Path, default=None, help="model directory (default FEQA_MODEL_DIR)")
    parser.add_argument("--pictures", type=Path, default=None, help="write overlay.png and trajectories.png here")
    parser.add_argument("--providers", default=None, help="onnxruntime providers, comma separated")


def run(args: argparse.Namespace) -> int:
    from model.contract import check_expression
    from model.errors import FeqaError
    from model.scorer import Scorer
    from worker.pipeline import assess
    from worker.settings import get_settings

    model_dir = args.model_dir or get_settings().model_dir
    try:
        check_expression(args.expression)
        scorer = Scorer(model_dir, providers=args.providers.split(",") if args.providers else None)
        result = assess(args.video, args.expression, scorer, artifacts_dir=args.pictures)
    except FeqaError as exc:
        print(json.dumps({"error": exc.to_dict()}, indent=2))
        print(f"error ({exc.code}): {exc.message}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=str))
    print(summary(result), file=sys.stderr)
    if result.get("not_for_clinical_use"):
        print(f"NOTE: model {result['model']['name']} (trained_on {result['model']['trained_on']}) is not for "
              "clinical use", file=sys.stderr)
    return 0


def summary(result: dict) -> str:
    """One readable line per recording for the terminal (the JSON on stdout has everything)."""
    scale = (result.get("scale") or {}).get("name", "")
    head = (f"{result['expression']}: not scored ({', '.join(result.get('reasons') or [])})" if result.get("abstained")
            else f"{result['expression']}: {result.get('score')} ({result.get('meaning')}, {scale})")
    reps = result.get("repetitions") or []
    agg = result.get("aggregation") or {}
    parts = [head]
    if reps:
        scores = ", ".join("-" if r.get("score") is None else f"{r['score']:.2f}{'*' if r.get('partial') else ''}"
                           for r in reps)
        parts.append(f"{len(reps)} repetition(s) [{scores}] spread {agg.get('spread')}")
    parts.append(f"{agg.get('n_windows')} window(s), {agg.get('rule')}")
    if result.get("findings"):
        parts.append("findings: " + ", ".join(result["findings"]))
    return "; ".join(parts)
