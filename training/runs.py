"""Training and evaluation runs on a dataset: PFED5, Toronto NeuroFace or a generic manifest.

    feqa train --dataset pfed5 --data-root ROOT --split-csv TRAIN.csv [--test-csv TEST.csv] --out runs/pfed5
    feqa train --dataset toronto --data-root ROOT --repetitions REPS.csv --scores SCORES.csv --folds 3 --out ..

One run: read the tables (rows refused with their line numbers) -> extract every clip once into the feature
cache (parallel processes, progress bar; clips that fail are listed with their reason code) -> per expression
(one with too few clips is skipped with a warning): validation subjects drawn from the training subjects,
stratified over groups and severities -> train (resume checked against the manifest, contract and recipe
hashes) -> a linear calibration fitted on validation -> test (the split's test clips, or each fold's held-out
subjects) with calibrated MAE / accuracy / confusion beside Spearman's rho, in % beside the paper's figures ->
one report per run (`<out>/reports/<run id>/report.json` + plots) naming its checkpoints and listing every
prediction with its clip id. Each `best.pt` carries its calibration, test metrics and provenance, which
`feqa export` writes into the model manifest.
"""
from __future__ import annotations

import datetime as _dt
import json
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from model.contract import EXPRESSIONS, PFED5_EXPRESSIONS, TORONTO_EXPRESSIONS
from model.scales import Scale, default_scale, get_scale
from training.datasets import (
    DatasetError,
    FeatureCache,
    RowIssue,
    Sample,
    failure_reason,
    file_sha256,
    holdout_validation,
    read_dataset_manifest,
    read_pfed5,
    read_toronto,
    split_by_column,
    stratified_validation,
    subject_folds,
)

ROOT = Path(__file__).resolve().parents[1]
TOO_FEW_CLIPS = "too_few_clips"    # reason code of an expression (or fold) skipped for want of clips
NOTHING_USABLE = "nothing_usable"  # reason code of a run in which no expression could train
MIN_TRAIN_CLIPS = 4          # an expression (or fold) with fewer usable training clips is skipped, with a warning
DATASET_SCALES = {"pfed5": "mds_updrs_3_2", "toronto": "toronto_neuroface"}
DATASET_TITLES = {"pfed5": "PFED5", "toronto": "Toronto NeuroFace", "manifest": "manifest"}


@dataclass
class Dataset:
    name: str                                   # pfed5 | toronto | manifest
    samples: list[Sample]
    issues: list[RowIssue] = field(default_factory=list)
    files: list[dict] = field(default_factory=list)      # the tables read, with their sha256
    root: str = ""
    has_split: bool = False                      # rows carry a train/val/test split

    @property
    def title(self) -> str:
        return DATASET_TITLES.get(self.name, self.name)

    def scale_for(self, expression: str) -> Scale:
        return get_scale(DATASET_SCALES[self.name]) if self.name in DATASET_SCALES else default_scale(expression)

    @property
    def trained_on(self) -> str:
        return {"pfed5": "clinical:pfed5", "toronto": "clinical:toronto_neuroface"}.get(self.name, "")


def _table(path: str | Path) -> dict:
    return {"path": str(path), "sha256": file_sha256(path)}


def load_dataset(kind: str, *, data_root: str | None = None, split_csv: str | None = None,
                 test_csv: str | None = None, repetitions: str | None = None, scores: str | None = None,
                 manifest: str | None = None) -> Dataset:
    """The samples of one dataset and the rows refused; DatasetError for what cannot be read at all."""
    def need(**kw):
        missing = [f"--{k.replace('_', '-')}" for k, v in kw.items() if not v]
        if missing:
            raise DatasetError(f"--dataset {kind} needs {' and '.join(missing)}")
        for k, v in kw.items():
            if not Path(v).exists():
                raise DatasetError(f"--{k.replace('_', '-')} {v}: no such file or folder")

    if kind == "pfed5":
        need(data_root=data_root)
        if not split_csv and not test_csv:
            raise DatasetError("--dataset pfed5 needs --split-csv (training split) and/or --test-csv")
        samples, issues, files = [], [], []
        for csv_path, split in ((split_csv, "train"), (test_csv, "test")):
            if not csv_path:
                continue
            need(**{f"{split if split == 'test' else 'split'}_csv": csv_path})
            s2, i2 = read_pfed5(data_root, csv_path, split=split)
            clash = {s.clip_id for s in samples} & {s.clip_id for s in s2}
            if clash:
                raise DatasetError(f"{len(clash)} clips are in both {split_csv} and {test_csv}, e.g. "
                                   f"{sorted(clash)[:3]}")
            samples, issues, files = samples + s2, issues + i2, files + [_table(csv_path)]
        return Dataset("pfed5", samples, issues, files, str(data_root), has_split=True)
    if kind == "toronto":
        need(data_root=data_root, repetitions=repetitions, scores=scores)
        samples, issues = read_toronto(data_root, repetitions, scores)
        return Dataset("toronto", samples, issues, [_table(repetitions), _table(scores)], str(data_root))
    if kind == "manifest":
        need(manifest=manifest)
        try:
            samples = read_dataset_manifest(manifest)
        except (KeyError, ValueError) as exc:
            raise DatasetError(f"{manifest}: {exc}") from None
        samples = [replace(s, clip_id=s.clip_id or Path(s.video).name + (f"[{s.start}-{s.end}]"
                                                                         if s.start is not None else ""))
                   for s in samples]
        return Dataset("manifest", samples, [], [_table(manifest)], str(Path(manifest).parent),
                       has_split=any(s.split for s in samples))
    raise DatasetError(f"unknown --dataset {kind!r}: expected pfed5, toronto or manifest")


def dataset_from_args(args) -> Dataset:
    kind = args.dataset or ("manifest" if args.manifest else None)
    if kind is None:
        raise DatasetError("give --dataset pfed5|toronto with its files, or --manifest CSV (or --demo)")
    return load_dataset(kind, data_root=args.data_root, split_csv=args.split_csv, test_csv=args.test_csv,
                        repetitions=args.repetitions, scores=args.scores, manifest=args.manifest)


# --------------------------------------------------------------------------------------------- extraction
def _extract_one(job) -> tuple[int, str | None, str | None]:
    i, root, contract_dict, sample = job
    from model.contract import PreprocessContract

    try:
        FeatureCache(root, PreprocessContract.from_dict(contract_dict)).get(sample)
        return i, None, None
    except Exception as exc:          # every failure is reported with its reason code, none stops the run
        return i, failure_reason(exc), str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__


def extract_all(samples: Sequence[Sample], cache_root: Path, contract, workers: int = 2, progress: bool = True,
                log: Callable = print) -> list[RowIssue]:
    """Extract every sample not yet in the cache (`workers` processes; a progress bar with clips done, total
    and time left); returns one RowIssue per clip that failed, with the reason code."""
    from tqdm import tqdm

    cache = FeatureCache(cache_root, contract)
    todo = [(i, str(cache_root), contract.to_dict(), s) for i, s in enumerate(samples) if not cache.path(s).exists()]
    if not todo:
        return []
    fmt = "{desc}: {n_fmt}/{total_fmt} clips [{elapsed} so far, {remaining} left, {rate_fmt}]"
    bar = tqdm(total=len(todo), desc=f"extract ({workers} process{'es' if workers > 1 else ''})",
               disable=not progress, bar_format=fmt, leave=False)
    results = []
    try:
        if workers <= 1:
            for j in todo:
                results.append(_extract_one(j))
                bar.update()
        else:
            import multiprocessing as mp

            with mp.get_context("spawn").Pool(workers) as pool:
                for r in pool.imap_unordered(_extract_one, todo, chunksize=1):
                    results.append(r)
                    bar.update()
    finally:
        bar.close()
    issues = []
    for i, code, msg in sorted(results, key=lambda r: r[0]):
        if code:
            s = samples[i]
            issues.append(RowIssue(s.source or "extraction", s.line, s.clip_id or Path(s.video).name, code, msg))
    for it in issues:
        log(f"clip left out: {it}")
    return issues


# --------------------------------------------------------------------------------------------- provenance
def git_commit() -> str | None:
    """The code version: `git rev-parse HEAD` of this checkout (+ `-dirty` with uncommitted changes), or None."""
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return head + ("-dirty" if dirty else "") if head else None
    except (OSError, subprocess.SubprocessError):
        return None


def new_run_id(out: Path) -> str:
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    run_id, k = stamp, 1
    while (out / "reports" / run_id).exists():
        k += 1
        run_id = f"{stamp}-{k}"
    return run_id


# --------------------------------------------------------------------------------------------- predictions
def predict_samples(ck_path: str | Path, samples: Sequence[Sample], cache_root: Path,
                    calibration: dict | None = None) -> tuple[np.ndarray, np.ndarray, list[Sample]]:
    """(raw, calibrated) predictions of a checkpoint for the samples whose features are cached (others are
    left out: extract first); `calibration` defaults to the checkpoint's own."""
    from training.loop import FULL_CHANNELS, TrainItem, load_model, predict
    from training.train import checkpoint_contract

    model, ck = load_model(ck_path)
    cache = FeatureCache(cache_root, checkpoint_contract(ck, model.cfg).with_(channels=FULL_CHANNELS))
    kept, items = [], []
    for s in samples:
        if not cache.path(s).exists():
            continue
        d = cache.get(s)
        items.append(TrainItem(d["trajs"], d["index_t"], d["frames"], float(s.score), s.key))
        kept.append(s)
    raw = predict(model, items) if items else np.zeros(0, np.float32)
    cal = calibration if calibration is not None else ck.get("calibration")
    return raw, calibrate(raw, cal), kept


def calibrate(raw: np.ndarray, cal: dict | None) -> np.ndarray:
    if not cal:
        return np.asarray(raw, np.float64)
    return cal["scale"] * np.asarray(raw, np.float64) + cal["bias"]


def _metrics(samples: Sequence[Sample], raw: np.ndarray, pred: np.ndarray, scale: Scale, fold=None) -> dict:
    from training.evaluate import scale_metrics

    y = np.array([s.score for s in samples], np.float64)
    m = scale_metrics(y, pred, scale)
    raw_m = scale_metrics(y, raw, scale)
    m["raw"] = {"mae": raw_m["mae"], "accuracy": raw_m["accuracy"]}
    m["predictions"] = [{"clip": s.clip_id or Path(s.video).name, "subject": s.subject, "group": s.group,
                         "true": float(s.score), "pred": round(float(p), 4), "raw": float(r),
                         **({"fold": fold} if fold is not None else {})}
                        for s, p, r in zip(samples, pred, raw, strict=True)]
    return m


def _strip(m: dict) -> dict:
    return {k: v for k, v in m.items() if k not in ("predictions", "y_true", "y_pred")}


def update_checkpoint(path: str | Path, **fields) -> None:
    """Add fields (calibration, evaluation, ...) to a saved checkpoint, atomically."""
    import torch

    path = Path(path)
    ck = torch.load(path, map_location="cpu", weights_only=False)
    ck.update(fields)
    tmp = path.with_suffix(".tmp")
    torch.save(ck, tmp)
    tmp.replace(path)


# --------------------------------------------------------------------------------------------- one model
def _train_one(expression: str, tr: list[Sample], va: list[Sample], te: list[Sample], out_dir: Path, *,
               dataset: Dataset, val_info: dict, common: dict, fold: int | None, log: Callable,
               provenance: dict) -> dict:
    from training.train import fit_calibration, train_expression

    scale = dataset.scale_for(expression)
    meta = {**(common.pop("extra_meta", None) or {}), "scale": scale.name, "dataset": dataset.name,
            "trained_on": common.pop("trained_on"),
            "provenance": {**provenance, "sizes": {"train": len(tr), "val": len(va), "test": len(te)},
                           "validation_subjects": val_info.get("subjects", []),
                           **({"fold": fold, "test_subjects": sorted({s.subject for s in te})}
                              if fold is not None else {})}}
    res = train_expression(expression, tr, va, out_dir, extra_meta=meta, log=log, **common)
    cache_root = common["cache_root"]
    y_v: list[float] = []
    raw_v = np.zeros(0)
    if va:
        raw_v, _, kept_v = predict_samples(res["best_path"], va, cache_root, calibration={})
        y_v = [s.score for s in kept_v]
    cal = fit_calibration(y_v, raw_v)
    if cal["guard"] == "too_few_clips" and tr:
        # too few validation clips for a slope: fit on training + validation clips instead (the training
        # clips' predictions are fitted, so this slope errs small, towards the mean score, never large)
        raw_t, _, kept_t = predict_samples(res["best_path"], tr, cache_root, calibration={})
        both = fit_calibration([s.score for s in kept_t] + y_v, np.concatenate([raw_t, raw_v]),
                               source=f"training and validation identities (validation alone: {len(y_v)})")
        if both["guard"] != "too_few_clips":
            cal = {**both, "validation_clips": len(y_v), "fallback": "training_and_validation"}
    log(f"{expression}{'' if fold is None else f' fold {fold}'}: calibration {cal}")
    test = None
    if te:
        raw, pred, kept = predict_samples(res["best_path"], te, cache_root, calibration=cal)
        test = _metrics(kept, raw, pred, scale, fold)
    evaluation = {"calibration": cal, "scale": scale.name,
                  "test": _strip(test) if test else None,
                  **({"fold": fold, "test_subjects": sorted({s.subject for s in te})} if fold is not None else {})}
    update_checkpoint(res["best_path"], calibration=cal, evaluation=evaluation)
    return {"best_path": res["best_path"], "last_path": res["last_path"], "best": res["best"],
            "calibration": cal, "test": test, "n_train": res["n_train"], "n_val": res["n_val"],
            "n_test": len(te), "epochs_run": len(res["history"]), "init": res.get("init"),
            "train_seconds": round(sum(h["seconds"] for h in res["history"]), 1)}


def _val_split(dataset: Dataset, train: list[Sample], fraction: float, seed: int) -> tuple[list, list, dict]:
    if dataset.name == "manifest" and any(s.group for s in train):
        # generic manifests: `group` keeps pseudo-identities together (simulated patients), as before
        from training.datasets import _counts

        tr, va = holdout_validation(train, fraction, seed)
        return tr, va, {"method": "held-out groups (manifest `group` column)",
                        "subjects": sorted({s.subject for s in va}),
                        "counts": {"train": _counts(tr), "val": _counts(va)}}
    return stratified_validation(train, fraction, seed)


def _log_val(expression: str, info: dict, log: Callable, fold: int | None = None) -> None:
    c = info.get("counts", {})
    log(f"{expression}{'' if fold is None else f' fold {fold}'}: validation = {info['method']}: subjects "
        f"{info.get('subjects')}; val {c.get('val')}; train {c.get('train')}")


# --------------------------------------------------------------------------------------------- a run
def run_training(dataset: Dataset, out: Path, *, expressions: Sequence[str] = (), folds: int = 0,
                 val_fraction: float = 0.2, seed: int = 0, workers: int = 2, progress: bool = True,
                 common: dict, command: str = "", log: Callable = print) -> dict:
    """Train (and test) every expression of the dataset; returns the run report (also written to disk)."""
    from training.evaluate import PAPER_RHO_PCT, plot_report, scale_metrics
    from training.train import cache_contract, model_config

    out = Path(out)
    run_id = new_run_id(out)
    issues = list(dataset.issues)
    for it in dataset.issues:
        log(f"row refused: {it}")
    present = {s.expression for s in dataset.samples}
    order = [e for e in EXPRESSIONS if e in present] + sorted(present - set(EXPRESSIONS))
    exprs = list(expressions) or order
    unknown = [e for e in exprs if e not in EXPRESSIONS]
    if unknown:
        raise DatasetError(f"unknown expressions {unknown}; expected some of {', '.join(EXPRESSIONS)}")
    if not dataset.samples:
        raise DatasetError(_nothing_usable(dataset, issues), code=NOTHING_USABLE)
    cache_root = common["cache_root"]
    failed: set[str] = set()
    t0 = time.time()
    for e in exprs:
        cfg = model_config(common["config"], e, **(common.get("model_overrides") or {}))
        contract = cache_contract(cfg, **(common.get("contract_overrides") or {}))
        bad = extract_all([s for s in dataset.samples if s.expression == e], cache_root, contract, workers,
                          progress, log)
        issues += bad
        failed |= {(b.source, b.line, b.clip) for b in bad}
    extract_s = round(time.time() - t0, 1)
    usable = [s for s in dataset.samples
              if (s.source or "extraction", s.line, s.clip_id or Path(s.video).name) not in failed]
    provenance = {"dataset": dataset.name, "dataset_title": dataset.title, "data_root": dataset.root,
                  "tables": dataset.files, "git_commit": git_commit(), "run_id": run_id, "command": command}
    report: dict = {"run_id": run_id, "command": command, "dataset": dataset.name, "tables": dataset.files,
                    "data_root": dataset.root, "git_commit": provenance["git_commit"],
                    "issues": [i.to_dict() for i in issues], "skipped": {}, "skipped_codes": {},
                    "expressions": {}, "folds": folds, "timings_s": {"extract_s": extract_s},
                    "recipe": {"config": common["config"], "model_overrides": common.get("model_overrides") or {},
                               "contract_overrides": common.get("contract_overrides") or {},
                               "train": asdict(common["train_cfg"]) if common.get("train_cfg") else None,
                               "init": [str(p) for p in (common.get("init") or [])],
                               "init_partial": bool(common.get("init_partial")), "seed": seed,
                               "val_fraction": val_fraction}}
    results: dict = {}
    for e in exprs:
        ss = [s for s in usable if s.expression == e]
        scale = dataset.scale_for(e)
        why = _too_few(ss, folds, dataset)
        if why:
            log(f"WARNING: {e} skipped: {why} [{TOO_FEW_CLIPS}]")
            report["skipped"][e] = why
            report["skipped_codes"][e] = TOO_FEW_CLIPS
            continue
        per = {"scale": scale.name, "checkpoints": [], "folds": []}
        kw = dict(dataset=dataset, log=log, provenance=provenance)
        if folds:
            fold_subjects = subject_folds(ss, folds, seed=seed)
            preds, fold_rows = [], []
            for k, test_subjects in enumerate(fold_subjects):
                te = [s for s in ss if s.subject in set(test_subjects)]
                rest = [s for s in ss if s.subject not in set(test_subjects)]
                tr, va, info = _val_split(dataset, rest, val_fraction, seed + k)
                if len(tr) < MIN_TRAIN_CLIPS:
                    log(f"WARNING: {e} fold {k} skipped: {len(tr)} training clips (need {MIN_TRAIN_CLIPS}) "
                        f"[{TOO_FEW_CLIPS}]")
                    per["folds"].append({"fold": k, "skipped": f"{len(tr)} training clips", "code": TOO_FEW_CLIPS})
                    continue
                _log_val(e, info, log, k)
                r = _train_one(e, tr, va, te, out / e / f"fold{k}", val_info=info, common=dict(common), fold=k,
                               **kw)
                per["checkpoints"].append(r["best_path"])
                row = {"fold": k, "checkpoint": r["best_path"], "test_subjects": sorted(test_subjects),
                       "validation": info, "calibration": r["calibration"], "n_train": r["n_train"],
                       "n_val": r["n_val"], "n_test": r["n_test"], "best_val": r["best"],
                       "train_seconds": r["train_seconds"], "init": r["init"],
                       "test": _strip(r["test"]) if r["test"] else None}
                fold_rows.append(row)
                per["folds"].append(row)
                preds += (r["test"] or {}).get("predictions", [])
            if not fold_rows:
                report["skipped"][e] = "every fold had too few training clips"
                report["skipped_codes"][e] = TOO_FEW_CLIPS
                continue
            y = [p["true"] for p in preds]
            pooled = scale_metrics(y, [p["pred"] for p in preds], scale)
            rhos = [f["test"]["spearman"] for f in fold_rows if f["test"] and f["test"]["n"]]
            per.update({"pooled": pooled, "predictions": preds,
                        "mean_fold_spearman": float(np.mean(rhos)) if rhos else float("nan"),
                        "mean_fold_spearman_pct": round(100 * float(np.mean(rhos)), 2) if rhos else float("nan"),
                        "per_fold_spearman_pct": [f["test"]["spearman_pct"] if f["test"] else None
                                                  for f in fold_rows]})
            cv = {"folds": [{"fold": f["fold"], "checkpoint": f["checkpoint"],
                             "spearman_pct": f["test"]["spearman_pct"] if f["test"] else None,
                             "mae": f["test"]["mae"] if f["test"] else None, "n_test": f["n_test"]}
                            for f in fold_rows],
                  "pooled_spearman_pct": pooled["spearman_pct"], "mean_fold_spearman_pct":
                      per["mean_fold_spearman_pct"], "run_id": run_id}
            for f in fold_rows:
                update_checkpoint(f["checkpoint"], cross_validation=cv)
            results[e] = {"test": {**pooled, "y_true": y, "y_pred": [p["pred"] for p in preds]}}
        else:
            sp = split_by_column(ss) if dataset.has_split else {"train": ss, "val": [], "test": []}
            if sp["val"]:
                tr, va = sp["train"], sp["val"]
                from training.datasets import _counts

                info = {"method": "the manifest's val split", "subjects": sorted({s.subject for s in va}),
                        "counts": {"train": _counts(tr), "val": _counts(va)}}
            else:
                tr, va, info = _val_split(dataset, sp["train"], val_fraction, seed)
            _log_val(e, info, log)
            r = _train_one(e, tr, va, sp["test"], out / e, val_info=info, common=dict(common), fold=None, **kw)
            per["checkpoints"].append(r["best_path"])
            per.update({"validation": info, "calibration": r["calibration"], "n_train": r["n_train"],
                        "n_val": r["n_val"], "n_test": r["n_test"], "best_val": r["best"], "init": r["init"],
                        "train_seconds": r["train_seconds"]})
            if r["test"]:
                per["test"] = _strip(r["test"])
                per["predictions"] = r["test"]["predictions"]
                results[e] = {"test": {**r["test"], "y_true": [p["true"] for p in r["test"]["predictions"]],
                                       "y_pred": [p["pred"] for p in r["test"]["predictions"]]}}
        report["expressions"][e] = per
    if not report["expressions"]:
        raise DatasetError(_nothing_usable(dataset, issues, report["skipped"]), code=NOTHING_USABLE)
    _summarise(report, results, dataset, folds, PAPER_RHO_PCT)
    rdir = out / "reports" / run_id
    rdir.mkdir(parents=True, exist_ok=True)
    report["report_dir"] = str(rdir)
    if results:
        report["plots"] = [str(p) for p in plot_report(report, rdir, variant="model")]
    (rdir / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True, default=_json_default) + "\n")
    with open(out / "runs.jsonl", "a") as fh:                 # an index of runs; nothing is overwritten
        fh.write(json.dumps({"run_id": run_id, "report": str(rdir / "report.json"), "dataset": dataset.name,
                             "mean_spearman_pct": report["summary"].get("mean_spearman_pct")},
                            default=_json_default) + "\n")
    return report


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    return str(o)


def _too_few(ss: Sequence[Sample], folds: int, dataset: Dataset) -> str | None:
    subjects = {s.subject for s in ss}
    n_train = sum(1 for s in ss if s.split in ("", "train", "val"))
    if n_train < MIN_TRAIN_CLIPS:
        return f"{n_train} usable training clips (need at least {MIN_TRAIN_CLIPS})"
    if folds and len(subjects) < folds:
        return f"{len(subjects)} subjects for {folds} folds"
    return None


def _nothing_usable(dataset: Dataset, issues: Sequence[RowIssue], skipped: dict | None = None) -> str:
    from collections import Counter

    reasons = Counter(i.reason for i in issues)
    parts = [f"nothing usable to train on in the {dataset.title} data: {len(dataset.samples)} clips read, "
             f"{len(issues)} rows or clips refused"]
    if reasons:
        parts.append("reasons: " + ", ".join(f"{k} x{v}" for k, v in reasons.most_common()))
    if skipped:
        parts.append("skipped: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    if issues:
        parts.append("first: " + str(issues[0]))
    return "; ".join(parts)


def _summarise(report: dict, results: dict, dataset: Dataset, folds: int, paper_table: dict) -> None:
    from training.evaluate import summarise

    per_pct = {}
    for e, per in report["expressions"].items():
        m = per.get("pooled") if folds else per.get("test")
        if m and m.get("n"):
            per_pct[e] = per.get("mean_fold_spearman_pct") if folds else m["spearman_pct"]
    paper = paper_table.get(dataset.name)
    summary = {"per_expression_spearman_pct": per_pct,
               "mean_spearman_pct": round(float(np.mean(list(per_pct.values()))), 2) if per_pct else None,
               "what": ("mean over folds of each fold's rho on its held-out subjects, then the mean over "
                        "expressions" if folds else "rho on the test split, then the mean over expressions"),
               "paper": paper}
    if folds:
        summary["pooled_spearman_pct"] = {e: per["pooled"]["spearman_pct"] for e, per in report["expressions"].items()
                                          if per.get("pooled")}
    report["summary"] = summary
    if results:
        rep = summarise({"model": results})
        report["variants"] = rep["variants"]
    held = "held-out subjects of each fold" if folds else "test split"
    report["data_label"] = f"{dataset.title} {held} ({'clinical data' if dataset.trained_on else 'manifest data'})"


def print_summary(report: dict, log: Callable = print) -> None:
    s = report.get("summary", {})
    paper = s.get("paper") or {}
    for e, per in report["expressions"].items():
        m = per.get("pooled") or per.get("test")
        ref = (paper.get("per_expression") or {}).get(e)
        if m and m.get("n"):
            folds = per.get("per_fold_spearman_pct")
            log(f"{e:14s} n={m['n']:4d} rho={m['spearman_pct']:6.2f}%"
                + (f" (folds {folds}, mean {per['mean_fold_spearman_pct']}%)" if folds else "")
                + f" MAE={m['mae']:.3f} acc={m['accuracy']:.3f} [{per['scale']}]"
                + (f"  paper {ref:.2f}%" if ref is not None else ""))
        else:
            log(f"{e:14s} trained ({per.get('n_train')} train / {per.get('n_val')} val clips), no test clips")
    for e, why in report.get("skipped", {}).items():
        log(f"{e:14s} SKIPPED: {why}")
    if s.get("mean_spearman_pct") is not None:
        log(f"mean rho {s['mean_spearman_pct']:.2f}% ({s['what']})"
            + (f"; paper: {paper['mean']:.2f}% ({paper['note']})" if paper else ""))
    if report.get("issues"):
        log(f"{len(report['issues'])} rows/clips refused or failed (listed in the report)")
    log(f"report: {report['report_dir']}/report.json")


# --------------------------------------------------------------------------------------------- evaluation
def run_evaluation(checkpoints: Sequence[str], dataset: Dataset, out: Path, *, split: str, cache_root: Path,
                   workers: int = 2, progress: bool = True, command: str = "", log: Callable = print) -> dict:
    """Evaluate checkpoints on a dataset with each model's own calibration and scale. A fold checkpoint (it
    records its test subjects) is evaluated on its own held-out subjects; others on `split` (train / val /
    test / all) - a `test` split the dataset does not have is refused."""
    from training.evaluate import PAPER_RHO_PCT, plot_report
    from training.loop import load_model
    from training.train import cache_contract

    paths = []
    for c in checkpoints:
        p = Path(c)
        paths += sorted(p.rglob("best.pt")) if p.is_dir() else [p]
    if not paths:
        raise DatasetError(f"no checkpoints (best.pt) in {', '.join(checkpoints)}")
    out = Path(out)
    run_id = new_run_id(out)
    issues = list(dataset.issues)
    per_expr: dict = {}
    for ck_path in paths:
        try:
            model, ck = load_model(ck_path)
        except (OSError, RuntimeError, KeyError) as exc:
            raise DatasetError(f"{ck_path}: not a training checkpoint ({exc})") from None
        meta = ck.get("meta", {})
        e = meta.get("expression")
        if not e:
            raise DatasetError(f"{ck_path}: the checkpoint has no expression in its metadata")
        ev = ck.get("evaluation") or {}
        fold_subjects = ev.get("test_subjects") or (meta.get("provenance") or {}).get("test_subjects")
        ss = [s for s in dataset.samples if s.expression == e]
        if fold_subjects:
            sel = [s for s in ss if s.subject in set(fold_subjects)]
            used = f"fold {ev.get('fold')} held-out subjects"
        elif split == "all":
            sel, used = ss, "all rows"
        else:
            if not dataset.has_split:
                raise DatasetError(f"--split {split}: the {dataset.title} data has no split column (and "
                                   f"{ck_path} is not a fold checkpoint); use --split all, or give the split "
                                   "(PFED5: --test-csv; a manifest: a `split` column)")
            sel, used = [s for s in ss if (s.split or "train") == split], f"{split} split"
        if not sel:
            log(f"WARNING: {ck_path}: no {e} clips in the {used}")
        issues += extract_all(sel, cache_root, cache_contract(model.cfg, **_contract_overrides(ck)), workers,
                              progress, log)
        scale = get_scale(meta["scale"]) if meta.get("scale") else dataset.scale_for(e)
        raw, pred, kept = predict_samples(ck_path, sel, cache_root)
        fold = ev.get("fold")
        m = _metrics(kept, raw, pred, scale, fold)
        per = per_expr.setdefault(e, {"scale": scale.name, "checkpoints": [], "parts": [], "predictions": []})
        per["checkpoints"].append(str(ck_path))
        per["parts"].append({"checkpoint": str(ck_path), "evaluated_on": used, "calibration": ck.get("calibration"),
                             **_strip(m)})
        per["predictions"] += m["predictions"]
    results = {}
    from training.evaluate import scale_metrics

    for e, per in per_expr.items():
        preds = per["predictions"]
        per["test"] = scale_metrics([p["true"] for p in preds], [p["pred"] for p in preds], get_scale(per["scale"]))
        if len(per["parts"]) > 1:
            rhos = [p["spearman"] for p in per["parts"] if p["n"]]
            per["mean_fold_spearman_pct"] = round(100 * float(np.mean(rhos)), 2) if rhos else None
            per["per_fold_spearman_pct"] = [p["spearman_pct"] for p in per["parts"]]
            per["pooled"] = per["test"]
        results[e] = {"test": {**per["test"], "y_true": [p["true"] for p in preds],
                               "y_pred": [p["pred"] for p in preds]}}
    report = {"run_id": run_id, "command": command, "dataset": dataset.name, "tables": dataset.files,
              "split": split, "issues": [i.to_dict() for i in issues], "skipped": {}, "expressions": per_expr,
              "git_commit": git_commit()}
    folds = int(any(len(p["parts"]) > 1 for p in per_expr.values()))
    _summarise(report, results, dataset, folds, PAPER_RHO_PCT)
    if not folds:
        report["data_label"] = f"{dataset.title} {split} ({'clinical data' if dataset.trained_on else 'manifest'})"
    rdir = out / "reports" / run_id
    rdir.mkdir(parents=True, exist_ok=True)
    report["report_dir"] = str(rdir)
    if any(r["test"]["n"] for r in results.values()):
        report["plots"] = [str(p) for p in plot_report(report, rdir, variant="model")]
    (rdir / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True, default=_json_default) + "\n")
    return report


def _contract_overrides(ck: dict) -> dict:
    """The contract options of a checkpoint other than the model-given tp/tf/channels/frame size."""
    c = (ck.get("meta") or {}).get("contract") or {}
    return {k: c[k] for k in ("coord_norm", "scale_norm", "frame_norm", "pad") if k in c}


def expressions_of(dataset_name: str) -> tuple[str, ...]:
    return {"pfed5": PFED5_EXPRESSIONS, "toronto": TORONTO_EXPRESSIONS}.get(dataset_name, EXPRESSIONS)
