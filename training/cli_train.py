"""`feqa train`: train per-expression models from a manifest, cross-validate, or build the demo models."""
from __future__ import annotations

import argparse

from model.contract import COORD_NORMS, FRAME_NORMS, PADS, SCALE_NORMS

HELP = "Train TraMP-Former models (per expression; k-fold CV; --demo builds the shipped demo models)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--demo", action="store_true",
                   help="simulate -> extract -> train compact per PFED5 expression and Toronto task -> evaluate "
                        "(single clips and whole recordings) -> export to OUT/demo")
    p.add_argument("--out", default="runs", help="output folder (with --demo: the model root, e.g. models)")
    add_dataset_arguments(p)
    p.add_argument("--expressions", default="",
                   help="comma-separated; default: every expression in the manifest (with --demo: all ten tasks; a "
                        "subset retrains only those and keeps the other demo models and their report rows)")
    p.add_argument("--config", default="compact", choices=["compact", "paper"])
    p.add_argument("--work", default="var/train", help="feature cache and simulation folder")
    p.add_argument("--folds", type=int, default=0, help="subject-wise k-fold cross-validation (0 = use splits)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of training subjects for validation")
    p.add_argument("--trained-on", help="recorded in checkpoints and exports: 'simulated' or 'clinical:<dataset>' "
                                        "(default for --dataset pfed5/toronto: clinical:<dataset>)")
    p.add_argument("--init", nargs="+", metavar="FILE",
                   help="pretrained weights in the reference key layout (several files: e.g. the trajectory and "
                        "the RGB encoder); strict: every key maps and fits")
    p.add_argument("--init-partial", action="store_true",
                   help="with --init: load only the tensors whose shapes fit, listing every one dropped")
    p.add_argument("--restart", "--no-resume", dest="no_resume", action="store_true",
                   help="start afresh even if OUT holds last.pt (resuming is refused when the data, contract or "
                        "recipe changed)")
    p.add_argument("--workers", type=int, default=2, help="feature-extraction processes")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--loader-workers", type=int, default=None,
                   help="DataLoader processes building batches (default: 0 on the CPU, 4 on CUDA)")
    p.add_argument("--no-amp", action="store_true", help="no bf16 autocast on CUDA")
    p.add_argument("--model-json", default=None,
                   help="model config overrides as JSON, e.g. '{\"tp\": 64, \"dim\": 64}' (small test models)")
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


def add_dataset_arguments(p: argparse.ArgumentParser) -> None:
    d = p.add_argument_group("dataset (layouts in docs/training.md)")
    d.add_argument("--dataset", choices=["pfed5", "toronto", "manifest"],
                   help="pfed5: --data-root + --split-csv [--test-csv]; toronto: --data-root + --repetitions + "
                        "--scores; manifest: --manifest")
    d.add_argument("--data-root", help="PFED5: folder of <pid>/<video_id>/*.jpg; Toronto: folder of the videos")
    d.add_argument("--split-csv", help="PFED5 training split (videoID_subjectID, label, frame count, ..., class)")
    d.add_argument("--test-csv", help="PFED5 test split (same layout)")
    d.add_argument("--repetitions", help="Toronto repetition table (File Name, repID, Number of Frames, start, end)")
    d.add_argument("--scores", help="Toronto rater scores (File Name, <rater>_overall, ...)")
    d.add_argument("--manifest", help="generic manifest CSV (video,subject,expression,score[,start,end,group,split])")


def _recipe(args):
    from training.loop import TrainConfig, resolve_device

    kw = {k: getattr(args, k) for k in ("epochs", "optimizer", "lr", "lr_step", "batch_size", "repeat")
          if getattr(args, k) is not None}
    device = resolve_device(args.device)
    workers = args.loader_workers if args.loader_workers is not None else (4 if device.type == "cuda" else 0)
    return TrainConfig(**kw, learn_sigma=not args.fixed_sigma, seed=args.seed, threads=args.threads,
                       device=str(device), amp=not args.no_amp, loader_workers=workers)


def _model_json(args) -> dict:
    import json

    if not args.model_json:
        return {}
    try:
        d = json.loads(args.model_json)
    except ValueError as exc:
        raise ValueError(f"--model-json is not JSON: {exc}") from None
    if not isinstance(d, dict):
        raise ValueError("--model-json must be a JSON object of ModelConfig fields")
    from model.config import ModelConfig

    unknown = sorted(set(d) - set(ModelConfig.__dataclass_fields__))
    if unknown:
        raise ValueError(f"--model-json: unknown model config fields {unknown}")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def run(args: argparse.Namespace) -> int:
    import sys

    if args.demo:
        from training.train import DEMO_CONTRACT, DEMO_STREAMS, run_demo

        run_demo(args.out, work=args.work if args.work != "var/train" else "var/demo", identities=args.identities,
                 per_severity=args.per_severity, seed=args.seed, epochs=args.epochs, workers=args.workers,
                 shapes=args.shapes, jobs=args.jobs,
                 ablations=args.ablations, progress=not args.quiet,
                 ablation_expressions=[e for e in args.ablation_expressions.split(",") if e] or None,
                 fusion_mode=args.fusion_mode or "pooled", streams=args.streams or DEMO_STREAMS,
                 contract={**DEMO_CONTRACT, **_contract(args)},
                 command="feqa " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["train"] else "feqa train --demo",
                 **({"expressions": [e for e in args.expressions.split(",") if e]} if args.expressions else {}))
        return 0
    from pathlib import Path

    from training.datasets import DatasetError
    from training.loop import DeviceError, ResumeRefused
    from training.runs import dataset_from_args, print_summary, run_training
    from training.train import InitError

    try:
        dataset = dataset_from_args(args)
        train_cfg = _recipe(args)
        overrides = {**_overrides(args), **_model_json(args)}
        trained_on = args.trained_on or dataset.trained_on or None
        common = dict(config=args.config, model_overrides=overrides, train_cfg=train_cfg,
                      cache_root=Path(args.work) / "features", init=args.init, init_partial=args.init_partial,
                      progress=not args.quiet, resume=not args.no_resume, contract_overrides=_contract(args) or None,
                      trained_on=trained_on)
        report = run_training(dataset, Path(args.out), expressions=[e for e in args.expressions.split(",") if e],
                              folds=args.folds, val_fraction=args.val_fraction, seed=args.seed,
                              workers=args.workers, progress=not args.quiet, common=common,
                              command="feqa " + " ".join(sys.argv[1:]))
    except (DatasetError, ResumeRefused, InitError, DeviceError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        if isinstance(exc, DatasetError):
            from model.messages import message

            print(message(exc.code)["what_to_do"], file=sys.stderr)
        return 2
    print_summary(report)
    return 0
