"""`feqa simulate`: render simulated patients (SIMULATED DATA, NOT FOR CLINICAL USE)."""
from __future__ import annotations

import argparse

HELP = "Render simulated-patient videos of the five PFED5 expressions with known severity (not for clinical use)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output folder (videos/ and manifest.csv)")
    p.add_argument("--identities", type=int, default=10,
                   help="pseudo-identities: the 5 base photos, then their mirror images (max 10)")
    p.add_argument("--shapes", type=int, default=1,
                   help="shape variants per training pseudo-identity (1 = the photo as it is only)")
    p.add_argument("--per-severity", type=int, default=2, help="clips per identity, expression and severity")
    p.add_argument("--expressions", default="all", help="comma-separated PFED5 expressions or 'all'")
    p.add_argument("--test-identities", default="tfjs_woman",
                   help="base identities whose clips are marked split=test (comma-separated)")
    p.add_argument("--val-identities", default="", help="base identities marked split=val (comma-separated)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _csv(s: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in s.split(",") if x.strip())


def run(args: argparse.Namespace) -> int:
    from model.contract import PFED5_EXPRESSIONS
    from training.simulate import simulate

    exprs = PFED5_EXPRESSIONS if args.expressions == "all" else _csv(args.expressions)
    bad = [e for e in exprs if e not in PFED5_EXPRESSIONS]
    if bad:
        print(f"unknown expression(s) {bad}; expected some of {list(PFED5_EXPRESSIONS)}")
        return 2
    path = simulate(args.out, identities=args.identities, per_severity=args.per_severity, expressions=exprs,
                    seed=args.seed, test_identities=_csv(args.test_identities),
                    val_identities=_csv(args.val_identities), shapes=args.shapes, progress=not args.quiet)
    print(f"wrote {path} (SIMULATED DATA - NOT FOR CLINICAL USE)")
    return 0
