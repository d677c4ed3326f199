"""`feqa export`: a training checkpoint (or a reference state dict) -> ONNX + manifest."""
from __future__ import annotations

import argparse

HELP = "Export a checkpoint to <name>.onnx + <name>.json (or --from-reference for reference state dicts)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="best.pt from `feqa train`, or a reference state dict with --from-reference")
    p.add_argument("--out", required=True, help="model directory")
    p.add_argument("--name", help="model name (default <expression>-<config>)")
    p.add_argument("--version", default="0.1.0",
                   help="model version; a model of the same name and version in --out is never overwritten")
    p.add_argument("--from-reference", action="store_true",
                   help="CHECKPOINT is a reference TraMP-Former state dict (paper config, key-mapped)")
    p.add_argument("--expression", help="expression (required with --from-reference)")
    p.add_argument("--trained-on", default=None,
                   help="'simulated', 'clinical:<dataset>' or 'untrained' (default: from the checkpoint)")
    p.add_argument("--precision", choices=["fp32", "int8"], default="fp32")


def provenance_of(ck: dict, path: str) -> tuple[dict, dict, dict]:
    """(training, metrics, provenance) manifest sections from a training checkpoint."""
    from model.manifest import sha256_file

    meta = ck.get("meta", {})
    prov = dict(meta.get("provenance") or {})
    ev = ck.get("evaluation") or {}
    init = meta.get("init")
    prov.update({"checkpoint": {"path": str(path), "sha256": sha256_file(path)},
                 "init": ({"mode": init["mode"], "files": [{"path": f["path"], "sha256": f["sha256"]}
                                                           for f in init["files"]],
                           "parts": {k: {"loaded": v["loaded"], "random": v["random"]}
                                     for k, v in init["parts"].items()}} if init else None),
                 "recipe": {"train": ck.get("train_config"), "model": ck.get("model_args"),
                            "contract": meta.get("contract")},
                 "hashes": ck.get("hashes")})
    prov.setdefault("git_commit", None)
    test = ev.get("test") or {}
    cv = ck.get("cross_validation")
    # `training_data` is copied into every result the service returns (model facts): the short provenance
    training = {"dataset": prov.get("dataset_title") or prov.get("dataset"), "sizes": prov.get("sizes"),
                "n_train": meta.get("n_train"), "n_val": meta.get("n_val"),
                "test_metrics": {k: test.get(k) for k in ("n", "spearman_pct", "mae", "accuracy", "scale")
                                 if k in test} or None,
                "evaluated_on": (f"fold {ev['fold']} held-out subjects" if "fold" in ev else "test split")
                if test else None,
                "cross_validation": {"per_fold_spearman_pct": [f["spearman_pct"] for f in cv["folds"]],
                                     "mean_fold_spearman_pct": cv["mean_fold_spearman_pct"],
                                     "pooled_spearman_pct": cv["pooled_spearman_pct"]} if cv else None,
                "init_files": (prov.get("init") or {}).get("files"), "git_commit": prov.get("git_commit"),
                "recipe": ck.get("train_config")}
    metrics = {"val_best": ck.get("best"), "calibration": ck.get("calibration"),
               "test": ev.get("test"), "test_evaluated_on": (f"fold {ev['fold']} held-out subjects"
                                                             if "fold" in ev else "test split" if ev.get("test")
                                                             else None),
               "cross_validation": ck.get("cross_validation")}
    return training, {k: v for k, v in metrics.items() if v is not None}, prov


def run(args: argparse.Namespace) -> int:
    import sys

    from model.export import ModelExists, check_no_clash, export_model
    from model.network import TrampFormer

    scale = provenance = None
    if args.from_reference:
        if not args.expression:
            print("--from-reference needs --expression")
            return 2
        from model.keymap import load_reference_state_dict
        from training.train import model_config

        cfg = model_config("paper", args.expression)
        model = TrampFormer(cfg)
        load_reference_state_dict(model, args.checkpoint)
        training = {"description": f"reference state dict {args.checkpoint}"}
        metrics, trained_on = {}, args.trained_on or "untrained"
        expression = args.expression
    else:
        from training.loop import load_model
        from training.train import apply_calibration

        model, ck = load_model(args.checkpoint)
        cfg = model.cfg
        meta = ck.get("meta", {})
        expression = args.expression or meta.get("expression")
        training, metrics, provenance = provenance_of(ck, args.checkpoint)
        apply_calibration(model, ck.get("calibration"))     # the graph outputs calibrated scores
        scale = meta.get("scale")
        trained_on = args.trained_on or meta.get("trained_on")
        if not trained_on:
            print("the checkpoint does not say what it was trained on: give --trained-on "
                  "('simulated' or 'clinical:<dataset>')")
            return 2
    from training.train import checkpoint_contract, model_contract

    contract = model_contract(cfg) if args.from_reference else checkpoint_contract(ck, cfg)
    name = args.name or f"{expression}-{cfg.name}"
    try:
        check_no_clash(args.out, name, args.version)
    except ModelExists as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    path = export_model(model.eval(), cfg, args.out, name, expression, args.version, training=training,
                        metrics=metrics, trained_on=trained_on, clinical_use=False, contract=contract,
                        precision=args.precision, scale=scale, provenance=provenance)
    print(f"wrote {path} and {path.with_suffix('.json')}")
    return 0
