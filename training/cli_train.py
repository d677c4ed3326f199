"""`feqa train`: train per-expression models from a manifest, cross-validate, or build the demo models."""
from __future__ import annotations

import argparse

from model.contract import COORD_NORMS, FRAME_NORMS, PADS, SCALE_NORMS

HELP = "Train TraMP-Former models (per expression; k-fold CV; --demo builds the shipped demo models)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--demo", action="store_true",
                   help="simulate -> extract -> train compact per PFED5 expression -> evaluate -> export to OUT/demo")
    p.add_argument("--out", default="runs", help="output folder (with --demo: the model root, e.g. models)")
    p.add_argument("--manifest", help="generic manifest CSV (video,subject,expression,score[,start,end,group,split])")
    p.add_argument("--expressions", default="", help="comma-separated; default: every expression in the manifest")
    p.add_argument("--config", default="compact", choices=["compact", "paper"])
    p.add_argument("--work", default="var/train", help="feature cache and simulation folder")
    p.add_argument("--folds", type=int, default=0, help="subject-wise k-fold cross-validation (0 = use splits)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of training subjects for validation")
    p.add_argument("--trained-on", help="recorded in checkpoints and exports: 'simulated' or 'clinical:<dataset>'")
    p.add_argument("--init", help="published pretrained state dict (reference key layout) to start from")
    p.add_argument("--no-resume", action="store_true", help="start afresh even if OUT holds last.pt")
    p.add_argument("--workers", type=int, default=2, help="extraction processes")
    p.add_argument("--quiet", action="store_true")
    g = p.add_argument_group("recipe (defaults: the paper's)")
    g.add_argument("--epochs", type=int)
    g.add_argument("--optimizer", choices=["sgd", "adam", "adamw"])
    g.add_argument("--lr", type=float)
    g.add_argument("--lr-step", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--repeat", type=int, help="training list repeats per epoch")
    g.add_argument("--fixed-sigma", action="store_true", help="BMC sigma fixed at its initial value")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--threads", type=int, default=2)
    a = p.add_argument_group("ablations")
    a.add_argument("--streams", choices=["both", "rgb", "trajectory"])
    a.add_argument("--cp", type=int, choices=[2, 3, 5], help="trajectory channels: 2 x,y; 3 RGB; 5 both")
    a.add_argument("--fusion-mode", choices=["pooled", "tokens"])
    a.add_argument("--fusion-blocks", type=int)
    a.add_argument("--tp", type=int, choices=[64, 128, 256])
    c = p.add_argument_group("preprocessing contract (written into every checkpoint and export manifest)")
    c.add_argument("--coord-norm", choices=COORD_NORMS,
                   help="trajectory coordinates (default: the reference's first_frame_nose_tip; --demo: aligned)")
    c.add_argument("--scale-norm", choices=SCALE_NORMS)
    c.add_argument("--frame-norm", choices=FRAME_NORMS)
    c.add_argument("--pad", choices=PADS,
                   help="padding of clips shorter than Tp/Tf (default: loop, the reference)")
    a.add_argument("--ablations", action="store_true", help="with --demo: also RGB-only, trajectory-only, pooled")
    a.add_argument("--ablation-expressions", default="",
                   help="with --demo --ablations: only these expressions for the ablation variants")
    a.add_argument("--identities", type=int, default=10,
                   help="with --demo: simulated pseudo-identities (5 photos, then their mirror images)")
    a.add_argument("--shapes", type=int, default=3, help="with --demo: shape variants per training pseudo-identity")
    a.add_argument("--jobs", type=int, default=2, help="with --demo: models trained at once (one process each)")
    a.add_argument("--per-severity", type=int, default=2, help="with --demo: clips per identity and severity")


def _overrides(args) -> dict:
    over = {}
    for k in ("streams", "cp", "fusion_mode", "fusion_blocks", "tp"):
        v = getattr(args, k)
        if v is not None:
            over[k] = v
    return over


def _contract(args) -> dict:
    return {k: getattr(args, k) for k in ("coord_norm", "scale_norm", "frame_norm", "pad") if getattr(args, k) is not None}


def _recipe(args):
    from training.loop import TrainConfig

    kw = {k: getattr(args, k) for k in ("epochs", "optimizer", "lr", "lr_step", "batch_size", "repeat")
          if getattr(args, k) is not None}
    return TrainConfig(**kw, learn_sigma=not args.fixed_sigma, seed=args.seed, threads=args.threads)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    if args.demo:
        from training.train import DEMO_CONTRACT, DEMO_STREAMS, run_demo

        run_demo(args.out, work=args.work if args.work != "var/train" else "var/demo", identities=args.identities,
                 per_severity=args.per_severity, seed=args.seed, epochs=args.epochs, workers=args.workers,
                 shapes=args.shapes, jobs=args.jobs,
                 ablations=args.ablations, progress=not args.quiet,
                 ablation_expressions=[e for e in args.ablation_expressions.split(",") if e] or None,
                 fusion_mode=args.fusion_mode or "pooled", streams=args.streams or DEMO_STREAMS,
                 contract={**DEMO_CONTRACT, **_contract(args)})
        return 0
    if not args.manifest:
        print("give --manifest CSV (or --demo)")
        return 2
    from training.datasets import holdout_validation, read_manifest, split_by_column, subject_folds
    from training.train import cross_validate, evaluate_checkpoint, train_expression

    samples = read_manifest(args.manifest)
    exprs = [e for e in args.expressions.split(",") if e] or sorted({s.expression for s in samples})
    common = dict(config=args.config, model_overrides=_overrides(args), train_cfg=_recipe(args),
                  cache_root=Path(args.work) / "features", init=args.init, progress=not args.quiet,
                  resume=not args.no_resume, contract_overrides=_contract(args) or None,
                  extra_meta={"trained_on": args.trained_on} if args.trained_on else None)
    out = Path(args.out)
    summary = {}
    for e in exprs:
        if args.folds:
            folds = subject_folds([s for s in samples if s.expression == e], args.folds, seed=args.seed)
            common_cv = {k: v for k, v in common.items() if k != "resume"}
            summary[e] = cross_validate(samples, e, folds, out / e, val_fraction=args.val_fraction, **common_cv)
        else:
            sp = split_by_column([s for s in samples if s.expression == e])
            tr, va = (sp["train"], sp["val"]) if sp["val"] else holdout_validation(sp["train"], args.val_fraction,
                                                                                   args.seed)
            res = train_expression(e, tr, va, out / e, **common)
            test = evaluate_checkpoint(res["best_path"], sp["test"], common["cache_root"]) if sp["test"] else None
            summary[e] = {"best": res["best"], "best_path": res["best_path"],
                          "test": {k: v for k, v in (test or {}).items() if k not in ("y_true", "y_pred")}}
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    print(json.dumps(summary, indent=1, default=str)[:4000])
    return 0
