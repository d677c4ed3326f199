"""`feqa evaluate`: score checkpoints on a manifest's test clips; JSON report and plots."""
from __future__ import annotations

import argparse

HELP = "Evaluate trained checkpoints on a manifest (Spearman per expression and mean, MAE, accuracy, confusion)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoints", nargs="+", help="best.pt / last.pt files (one per expression)")
    p.add_argument("--manifest", required=True, help="generic manifest CSV")
    p.add_argument("--split", default="test", help="rows of this split ('all' = every row)")
    p.add_argument("--work", default="var/train", help="feature cache folder")
    p.add_argument("--out", default="var/eval", help="report folder")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from training.datasets import read_manifest
    from training.evaluate import plot_report, summarise, write_report
    from training.loop import load_model
    from training.train import evaluate_checkpoint

    samples = [s for s in read_manifest(args.manifest) if args.split == "all" or (s.split or "train") == args.split]
    results: dict = {"model": {}}
    for ck in args.checkpoints:
        _, meta = load_model(ck)
        expr = meta.get("meta", {}).get("expression")
        if not expr:
            print(f"{ck}: checkpoint has no expression in its metadata")
            return 2
        m = evaluate_checkpoint(ck, [s for s in samples if s.expression == expr], Path(args.work) / "features")
        results["model"][expr] = {"test": m, "val_best": meta.get("best")}
    report = summarise(results, meta={"manifest": str(args.manifest), "split": args.split})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_report(report, out / "report.json")
    plot_report(report, out, variant="model")
    v = report["variants"]["model"]
    for e, m in v["per_expression"].items():
        print(f"{e:14s} n={m['n']:4d} rho={m['spearman']:.3f} MAE={m['mae']:.3f} acc={m['accuracy']:.3f}")
    print(f"mean Spearman {v['mean_spearman']:.3f}; report in {out}")
    return 0
