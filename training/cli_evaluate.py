"""`feqa evaluate`: score checkpoints on a dataset's clips; one report per run and plots."""
from __future__ import annotations

import argparse

HELP = ("Evaluate trained checkpoints on a dataset (Spearman per expression and mean, in %, beside the paper; "
        "calibrated MAE, accuracy, confusion on the model's own scale).")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from training.cli_train import add_dataset_arguments

    p.add_argument("checkpoints", nargs="+", help="best.pt files, or run folders (every best.pt under them)")
    add_dataset_arguments(p)
    p.add_argument("--split", default="test",
                   help="rows of this split: train / val / test / all (fold checkpoints: their own held-out "
                        "subjects)")
    p.add_argument("--work", default="var/train", help="feature cache folder")
    p.add_argument("--workers", type=int, default=2, help="feature-extraction processes")
    p.add_argument("--out", default="var/eval", help="report folder (a new reports/<run id>/ per run)")
    p.add_argument("--quiet", action="store_true")


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from training.datasets import DatasetError
    from training.runs import dataset_from_args, print_summary, run_evaluation

    try:
        dataset = dataset_from_args(args)
        report = run_evaluation(args.checkpoints, dataset, Path(args.out), split=args.split,
                                cache_root=Path(args.work) / "features", workers=args.workers,
                                progress=not args.quiet, command="feqa " + " ".join(sys.argv[1:]))
    except (DatasetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not any(p["test"]["n"] for p in report["expressions"].values()):
        print(f"error: no clips to evaluate (split {args.split!r}); report in {report['report_dir']}",
              file=sys.stderr)
        return 2
    print_summary(report)
    return 0
