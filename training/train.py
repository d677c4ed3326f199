"""Training orchestration: per-expression models, subject-wise cross-validation, and the demo pipeline.

    run_demo(out_root="models")   # simulate -> extract (cached) -> train compact per PFED5 expression
                                  # -> evaluate on held-out identities -> export ONNX + manifests to models/demo/
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from model.config import ModelConfig, get_config
from model.contract import PFED5_EXPRESSIONS, TORONTO_EXPRESSIONS, PreprocessContract
from training.datasets import FeatureCache, Sample, holdout_validation, read_dataset_manifest, split_by_column
from training.loop import FULL_CHANNELS, TrainConfig, TrainItem, load_model, predict, train

ROOT = Path(__file__).resolve().parents[1]
DEMO_VERSION = "1.0.0-demo"

# The demo recipe (documented in docs/training.md): the paper's SGD/BMC recipe does not converge in the few
# epochs a 2-core, 30-minute budget allows, so the demo uses Adam with a short step schedule (12 epochs of the
# training list twice over, lr / 10 after epoch 9) and gradient-norm clipping at 1 (without it the fused frown
# and sit-at-rest runs diverged). One torch thread per model, two models trained at once.
DEMO_TRAIN = dict(epochs=12, optimizer="adam", lr=1e-3, lr_step=9, lr_gamma=0.1, repeat=2, batch_size=4,
                  weight_decay=1e-4, sigma_init=1.0, sigma_lr=1e-2, grad_clip=1.0, threads=1)
# Model overrides of the demo: Tp=64 for every expression (the paper uses 64 only at rest), Tf=16 RGB frames
# (one clip of 16) of 64x64 pixels (the RGB encoder's cost falls with the square of the size: a training step is
# 47 ms at 64 px against 130 ms at 112), trajectory channels x,y only (cp=2: in the simulation the landmark
# colours carry only the random lighting), no attention dropout (its Bernoulli sampling was ~40% of a CPU
# step), drop-path 0.1, and the interocular-unit trajectories multiplied by 100 at the stem (about the size of
# the reference's crop-pixel coordinates; at scale 1 or 10 squeeze_eyes and sit_at_rest did not train at all).
DEMO_MODEL = dict(tp=64, tf=16, cp=2, frame_size=64, rgb_size=64, traj_attn_drop=0.0, traj_drop_path=0.1,
                  traj_input_scale=100.0)
# Contract overrides of the demo: each landmark relative to its own first-frame position (motion only), in
# units of the interocular distance (so a face's size and proportions do not set the amplitude). With the
# reference's nose-tip-relative crop pixels the network memorised each identity's fixed face shape instead of
# the motion (held-out mean Spearman 0.18). Written into every demo manifest, so the service extracts the same way.
# The same for the RGB frames (`frame_norm: "first_frame_diff"`): each frame minus the window's first frame, so the
# RGB stream sees what moved and not whose face it is (with plain frames the fused model put a per-identity offset
# on its scores: held-out mean 0.48 against validation 0.85).
DEMO_CONTRACT = dict(coord_norm="first_frame_aligned", scale_norm="interocular", frame_norm="first_frame_diff")
DEMO_STREAMS = "both"
# Splits of the demo, by base photograph: the test identity is never seen in training or model selection.
DEMO_TEST = ("tfjs_woman",)
DEMO_VAL = ("pyfeat_man",)
# The demo builds a model for every PFED5 expression and every Toronto NeuroFace task.
DEMO_EXPRESSIONS = PFED5_EXPRESSIONS + TORONTO_EXPRESSIONS
# The Toronto tasks train on a cut recipe to fit the build budget (shape variants and epochs, below).
DEMO_TRAIN_TORONTO = {**DEMO_TRAIN, "epochs": 6, "lr_step": 4}
DEMO_SHAPES_TORONTO = 1
DEMO_PER_SEVERITY_TORONTO = 1
# Whole recordings (training.simulate.simulate_recordings) beside the single-movement clips: the training
# recordings give `DEMO_WINDOWS_PER_EPISODE` random windows per repetition (training.windows.training_windows),
# of which each epoch sees one per recording; the held-out recordings are scored window by window and aggregated
# (training.windows.serving_windows / aggregate). No validation recordings: selection and calibration stay on the
# validation identity's single clips.
DEMO_RECORDINGS_PER_SEVERITY = {"train": 1, "val": 0, "test": 1}
# the first four photographs as they are (no mirror images: the flip augments), so two training photos
# (astronaut, pexels_woman), no validation recordings and the test photo (tfjs_woman)
DEMO_RECORDING_IDENTITIES = 4
DEMO_WINDOWS_PER_EPISODE = 1


def model_config(config: str, expression: str, **overrides) -> ModelConfig:
    return get_config(config, expression=expression, **overrides)


def cache_contract(cfg: ModelConfig, **overrides) -> PreprocessContract:
    """Extraction contract for the feature cache: the model's Tp/Tf/frame size with all five channels, so
    one cache serves every channel ablation (the model's own channels are selected at batch time)."""
    from model.export import contract_for_config

    return contract_for_config(cfg, **overrides).with_(channels=FULL_CHANNELS)


def model_contract(cfg: ModelConfig, **overrides) -> PreprocessContract:
    from model.export import contract_for_config

    return contract_for_config(cfg, **overrides)


def load_items(samples: Sequence[Sample], cache: FeatureCache, log: Callable = print) -> list[TrainItem]:
    items = []
    for s in samples:
        try:
            d = cache.get(s)
        except Exception as exc:  # a clip extraction refuses is left out, and said so
            log(f"skipping {s.video}: {exc}")
            continue
        items.append(TrainItem(d["trajs"], d["index_t"], d["frames"], float(s.score), s.key))
    return items


def _warm_one(args) -> str | None:
    root, contract_dict, sample = args
    try:
        FeatureCache(root, PreprocessContract.from_dict(contract_dict)).get(sample)
        return None
    except Exception as exc:
        return f"{sample.video}: {exc}"


def warm_cache(samples: Sequence[Sample], cache_root: Path, contract: PreprocessContract, workers: int = 2,
               progress: bool = True, log: Callable = print) -> None:
    """Extract every sample into the cache, `workers` processes in parallel (1 = in this process)."""
    from tqdm import tqdm

    cache = FeatureCache(cache_root, contract)
    todo = [s for s in samples if not cache.path(s).exists()]
    if not todo:
        return
    jobs = [(str(cache_root), contract.to_dict(), s) for s in todo]
    if workers <= 1:
        results = [_warm_one(j) for j in tqdm(jobs, desc="extract", disable=not progress, leave=False)]
    else:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers) as pool:
            results = list(tqdm(pool.imap_unordered(_warm_one, jobs, chunksize=4), total=len(jobs),
                                desc="extract", disable=not progress, leave=False))
    for r in results:
        if r:
            log(f"extraction failed: {r}")


def train_expression(expression: str, train_s: Sequence[Sample], val_s: Sequence[Sample], out_dir: Path, *,
                     config: str = "compact", model_overrides: dict | None = None,
                     train_cfg: TrainConfig | None = None, cache_root: Path,
                     init: str | Sequence[str] | None = None, init_partial: bool = False,
                     progress: bool = True, log: Callable = print, resume: bool = True,
                     contract_overrides: dict | None = None, extra_meta: dict | None = None,
                     extra_items: Sequence[TrainItem] = ()) -> dict:
    """Train one model for one expression; returns the loop's result plus the model config. `extra_items`:
    more training items, e.g. the windows of whole recordings pooled per recording (`recording_items`)."""
    cfg = model_config(config, expression, **(model_overrides or {}))
    cache = FeatureCache(cache_root, cache_contract(cfg, **(contract_overrides or {})))
    tr = load_items([s for s in train_s if s.expression == expression], cache, log) + list(extra_items)
    va = load_items([s for s in val_s if s.expression == expression], cache, log)
    if len(tr) < 2:
        raise ValueError(f"{expression}: {len(tr)} training clips; need at least 2")
    init_state, init_report = None, None
    if init:
        init_state, init_report = load_init(cfg, [init] if isinstance(init, str | Path) else list(init),
                                            init_partial, log)
    tcfg = train_cfg or TrainConfig()
    meta = {"expression": expression, "config_name": config,
            "contract": model_contract(cfg, **(contract_overrides or {})).to_dict(),
            "n_train": len(tr), "n_val": len(va), **({"init": init_report} if init_report else {}),
            **(extra_meta or {})}
    res = train(cfg, tr, va, tcfg, out_dir, meta=meta, progress=progress, log=log, init_state=init_state,
                resume=resume)
    return {**res, "model_config": cfg.to_dict(), "n_train": len(tr), "n_val": len(va), "init": init_report,
            "train_items": tr, "val_items": va}


class InitError(ValueError):
    """--init weights that do not fit the model (strict), or fit nothing at all (--init-partial)."""


def load_init(cfg: ModelConfig, paths: Sequence[str], partial: bool = False, log: Callable = print,
              ) -> tuple[dict, dict]:
    """Published encoders or whole checkpoints in the reference key layout (FormerDFER_DFEW.pth,
    SkateFormer_256_rgb1x1.pth, ...), mapped through model.keymap, one or several files.

    Strict (the default): every key of each file maps, fits this config's shape, and covers the whole part it
    belongs to (`traj.`, `rgb.`, `fusion.`, `head.`; a bare Former-DFER file may leave `rgb.clip_proj` out, but
    only whole); two files setting the same tensor are refused. `partial`: tensors whose shape does not fit (or
    that this config lacks) are dropped, each one listed. Returns (state to load, report): the report has per
    part the tensors loaded and those left at random initialisation, the dropped tensors and each file's sha256."""
    from model.keymap import convert_state_dict, fit_problems, part_of, read_state_dict
    from model.manifest import sha256_file
    from model.network import TrampFormer

    own = TrampFormer(cfg).state_dict()
    state: dict = {}
    files, dropped = [], []
    for path in paths:
        try:
            mapped, skipped = convert_state_dict(read_state_dict(path))
        except (KeyError, OSError, RuntimeError) as exc:
            raise InitError(f"--init {path}: {exc}") from None
        clash = sorted(state.keys() & mapped.keys())
        if clash:
            raise InitError(f"--init {path} sets {len(clash)} tensors another --init file set too ({clash[:3]})")
        if partial:
            keep = {k: v for k, v in mapped.items() if k in own and own[k].shape == v.shape}
            drop = [{"file": str(path), "tensor": k, "reference_shape": list(v.shape),
                     "model_shape": list(own[k].shape) if k in own else None} for k, v in mapped.items()
                    if k not in keep]
            dropped += drop
        else:
            bad = fit_problems(own, mapped)
            if any(bad.values()):
                said = "; ".join(f"{k} {len(v)}: {v[:3]}" for k, v in bad.items() if v)
                raise InitError(f"--init {path} does not fit the {cfg.name} config strictly ({said}); "
                                "the published encoders fit `paper`; --init-partial loads what fits and lists "
                                "the rest")
            keep = mapped
        state.update(keep)
        files.append({"path": str(path), "sha256": sha256_file(path), "loaded": len(keep),
                      "skipped_classifier_keys": skipped,
                      "dropped": len(mapped) - len(keep)})
    if not state:
        raise InitError(f"no tensor of {', '.join(map(str, paths))} fits the {cfg.name} config; the published "
                        "encoders fit `paper`")
    parts: dict = {}
    for k in own:
        p = parts.setdefault(part_of(k), {"loaded": 0, "random": 0, "random_tensors": []})
        if k in state:
            p["loaded"] += 1
        else:
            p["random"] += 1
            p["random_tensors"].append(k)
    report = {"mode": "partial" if partial else "strict", "files": files, "parts": parts, "dropped": dropped}
    for f in files:
        log(f"init {f['path']} (sha256 {f['sha256'][:12]}): {f['loaded']} tensors loaded, {f['dropped']} dropped")
    for d in dropped:
        log(f"  dropped {d['tensor']}: reference {tuple(d['reference_shape'])} vs model "
            f"{tuple(d['model_shape']) if d['model_shape'] else 'absent'}")
    for name, p in parts.items():
        log(f"  part {name:8s} {p['loaded']:4d} loaded, {p['random']:4d} random"
            + (" (all random)" if not p["loaded"] else ""))
    return {k: v.to(own[k].dtype) for k, v in state.items()}, report


def checkpoint_contract(ck: dict, cfg: ModelConfig) -> PreprocessContract:
    d = ck.get("meta", {}).get("contract")
    return PreprocessContract.from_dict(d) if d else model_contract(cfg)


def evaluate_checkpoint(path: str | Path, test_s: Sequence[Sample], cache_root: Path,
                        log: Callable = print, calibration: dict | None = None) -> dict:
    """Metrics of a checkpoint on samples, on the model's own score scale (its `meta.scale`, else the
    expression's protocol: MDS-UPDRS 0-4 for PFED5 expressions, Toronto NeuroFace 1-5 for its tasks)."""
    from model.scales import default_scale, get_scale
    from training.evaluate import scale_metrics

    model, ck = load_model(path)
    apply_calibration(model, calibration)
    meta = ck.get("meta", {})
    scale = get_scale(meta["scale"]) if meta.get("scale") else default_scale(meta.get("expression", ""))
    cache = FeatureCache(cache_root, checkpoint_contract(ck, model.cfg).with_(channels=FULL_CHANNELS))
    items = load_items(test_s, cache, log)
    pred = predict(model, items)
    y = np.array([it.score for it in items], np.float32)
    return {**scale_metrics(y, pred, scale), "y_true": y.tolist(), "y_pred": pred.tolist()}


def cross_validate(samples: Sequence[Sample], expression: str, folds: Sequence[Sequence[str]], out_dir: Path, *,
                   cache_root: Path, val_fraction: float = 0.2, **kw) -> dict:
    """Subject-wise k-fold CV: each fold's subjects are the test set once; validation comes from the others."""
    from training.evaluate import regression_metrics

    per_fold, ys, ps = [], [], []
    for k, test_subjects in enumerate(folds):
        test_set = set(test_subjects)
        rest = [s for s in samples if s.subject not in test_set and s.expression == expression]
        test = [s for s in samples if s.subject in test_set and s.expression == expression]
        tr, va = holdout_validation(rest, val_fraction, seed=k)
        res = train_expression(expression, tr, va, out_dir / f"fold{k}", cache_root=cache_root, **kw)
        m = evaluate_checkpoint(res["best_path"], test, cache_root)
        per_fold.append({"fold": k, "test_subjects": sorted(test_set), **{k2: v for k2, v in m.items()
                                                                          if k2 not in ("y_true", "y_pred")}})
        ys += m["y_true"]
        ps += m["y_pred"]
    pooled = regression_metrics(np.array(ys), np.array(ps))
    return {"expression": expression, "folds": per_fold, "pooled": pooled,
            "mean_fold_spearman": float(np.mean([f["spearman"] for f in per_fold]))}


# --------------------------------------------------------------------------------------------- demo
def _identity_summary() -> tuple[int, str]:
    from training.simulate import load_identities

    ids = load_identities()
    return len(ids), "; ".join(f"{i['id']}: {i['licence']}" for i in ids)


def _warm_recording(args) -> str | None:
    from training.windows import recording_features

    video, expression, contract_dict, cache_root, split, seed, per_episode, known = args
    try:
        recording_features(video, expression, PreprocessContract.from_dict(contract_dict), cache_root, split=split,
                           seed=seed, per_episode=per_episode, known=known)
        return None
    except Exception as exc:
        return f"{Path(video).name}: {exc}"


def warm_recordings(recordings: Sequence[Sample], known: dict[str, dict], cache_root: Path, contracts: dict,
                    seed: int = 0, per_episode: int = DEMO_WINDOWS_PER_EPISODE, workers: int = 2,
                    progress: bool = True, log: Callable = print) -> None:
    """Track, segment and cut the windows of every training and test recording (`recording_features`), in
    `workers` processes; `contracts[expression]` is the cache contract."""
    from tqdm import tqdm

    jobs = [(s.video, s.expression, contracts[s.expression].to_dict(), str(cache_root), s.split, seed, per_episode,
             known.get(s.video, {}).get("episode_frames")) for s in recordings if s.split in ("train", "test")]
    if workers <= 1:
        results = [_warm_recording(j) for j in tqdm(jobs, desc="recordings", disable=not progress, leave=False)]
    else:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers) as pool:
            results = list(tqdm(pool.imap_unordered(_warm_recording, jobs), total=len(jobs), desc="recordings",
                                disable=not progress, leave=False))
    for r in results:
        if r:
            log(f"recording failed: {r}")


def recording_items(recordings: Sequence[Sample], contract: PreprocessContract, cache_root: Path, *, seed: int = 0,
                    per_episode: int = DEMO_WINDOWS_PER_EPISODE, log: Callable = print) -> list[TrainItem]:
    """Training items from the cached windows of whole recordings, one pool per recording."""
    from training.windows import recording_features

    items = []
    for s in recordings:
        try:
            d = recording_features(s.video, s.expression, contract, cache_root, split="train", seed=seed,
                                   per_episode=per_episode)
        except Exception as exc:
            log(f"skipping recording {s.video}: {exc}")
            continue
        items += [TrainItem(d["trajs"][k], d["index_t"][k], d["frames"][k], float(s.score), f"{s.video}|{d['start'][k]}",
                       pool=s.video) for k in range(len(d["start"]))]
    return items


def run_demo(out_root: str | Path = "models", *, work: str | Path = "var/demo", identities: int = 10,
             per_severity: int = 2, expressions: Sequence[str] = DEMO_EXPRESSIONS, seed: int = 0,
             epochs: int | None = None, workers: int = 2, ablations: bool = False, progress: bool = True,
             export: bool = True, ablation_expressions: Sequence[str] | None = None,
             fusion_mode: str = "pooled", streams: str = DEMO_STREAMS, contract: dict | None = None,
             shapes: int = 3, jobs: int = 2, recordings: bool = True, toronto_shapes: int = DEMO_SHAPES_TORONTO,
             report_expressions: Sequence[str] = DEMO_EXPRESSIONS, command: str = "feqa train --demo --out models",
             log: Callable = print) -> dict:
    """The whole demo pipeline in one call; returns the report written to <out_root>/demo/REPORT.json.

    PFED5 expressions and Toronto tasks are simulated apart (`sim/`, `sim_toronto/`: the Toronto tasks with
    `toronto_shapes` shape variants and the `DEMO_TRAIN_TORONTO` recipe), whole recordings in `recordings/`.
    Training a subset (`expressions`) keeps the other models of `report_expressions` already in <out_root>/demo
    and their rows of the previous REPORT.json (marked `carried_from_previous_build`); every exported model is
    then scored on the held-out whole recordings by the serving rule (`evaluate_exported_on_recordings`)."""
    contract = dict(DEMO_CONTRACT if contract is None else contract)
    from training.evaluate import plot_report, summarise
    from training.simulate import simulate

    t0 = time.time()
    work, out = Path(work), Path(out_root) / "demo"
    timings = {}
    samples: list[Sample] = []
    for sub, exprs, n_shapes, per in (
            ("sim", [e for e in expressions if e not in TORONTO_EXPRESSIONS], shapes, per_severity),
            ("sim_toronto", [e for e in expressions if e in TORONTO_EXPRESSIONS], toronto_shapes,
             min(per_severity, DEMO_PER_SEVERITY_TORONTO))):
        if exprs:
            manifest = simulate(work / sub, identities=identities, per_severity=per, shapes=n_shapes,
                                expressions=tuple(exprs), seed=seed, test_identities=DEMO_TEST,
                                val_identities=DEMO_VAL, workers=workers, progress=progress)
            samples += read_dataset_manifest(manifest)
    rec_samples, known = [], {}
    carried = [e for e in report_expressions if e not in expressions]
    if recordings:   # training and test recordings of the tasks trained now (test ones of the carried: below)
        rec_samples, known = _demo_recordings(work / "recordings", expressions, DEMO_RECORDINGS_PER_SEVERITY,
                                              identities, seed, workers, progress)
    timings["simulate_s"] = round(time.time() - t0, 1)
    splits = split_by_column(samples)
    train_s, val_s = holdout_validation(splits["train"], 0.2, seed=seed) if not splits["val"] else \
        (splits["train"], splits["val"])
    test_s = splits["test"]
    train_rec = [s for s in rec_samples if s.split == "train" and s.expression in expressions]
    test_rec = [s for s in rec_samples if s.split == "test"]
    tcfgs = {e: TrainConfig(**{**(DEMO_TRAIN_TORONTO if e in TORONTO_EXPRESSIONS else DEMO_TRAIN),
                               **({"epochs": epochs} if epochs else {})}, seed=seed) for e in expressions}
    cache_root = work / "features"
    t1 = time.time()
    for expression in expressions:
        cfg = model_config("compact", expression, **DEMO_MODEL)
        warm_cache([s for s in samples if s.expression == expression], cache_root,
                   cache_contract(cfg, **contract), workers=workers, progress=progress, log=log)
    timings["extract_s"] = round(time.time() - t1, 1)
    t1 = time.time()
    contracts = {e: cache_contract(model_config("compact", e, **DEMO_MODEL), **contract)
                 for e in dict.fromkeys([*expressions, *report_expressions])}
    if rec_samples:
        warm_recordings(train_rec + test_rec, known, cache_root, contracts, seed=seed, workers=workers,
                        progress=progress, log=log)
    timings["extract_recordings_s"] = round(time.time() - t1, 1)
    main = "trajectory-only" if streams == "trajectory" else "rgb-only" if streams == "rgb" else f"fused-{fusion_mode}"
    variants = {main: {"streams": streams, "fusion_mode": fusion_mode}}
    if ablations:
        other = "pooled" if fusion_mode == "tokens" else "tokens"
        for name, over in (("rgb-only", {"streams": "rgb"}), ("trajectory-only", {"streams": "trajectory"}),
                           (f"fused-{fusion_mode}", {"fusion_mode": fusion_mode}),
                           (f"fused-{other}", {"fusion_mode": other})):
            variants.setdefault(name, over)
    results: dict = {v: {} for v in variants}
    run_tag = "".join(f"-{v}" for _, v in sorted(contract.items()))     # checkpoints of another contract apart
    run_tag += "-rec" if train_rec else ""
    tasks = []
    for variant, over in variants.items():
        todo = expressions if variant == main else (ablation_expressions or expressions)
        tasks += [dict(variant=variant, expression=e, train_s=train_s, val_s=val_s, test_s=test_s,
                       train_rec=[r for r in train_rec if r.expression == e],
                       test_rec=[r for r in test_rec if r.expression == e], rec_contract=contracts[e], seed=seed,
                       out_dir=work / "runs" / (variant + run_tag) / e, model_overrides={**DEMO_MODEL, **over},
                       train_cfg=tcfgs[e], cache_root=cache_root, contract=contract, progress=progress and jobs <= 1)
                  for e in todo]
    # the longest first, so that two at a time finish together
    tasks.sort(key=lambda t: -t["train_cfg"].epochs * len([s for s in t["train_s"] if s.expression == t["expression"]]))
    t2 = time.time()
    if jobs <= 1:
        done = map(_demo_task, tasks)
    else:   # one process per model, `jobs` at a time (each uses tcfg.threads torch threads)
        import multiprocessing as mp

        pool = mp.get_context("spawn").Pool(jobs)
        done = pool.imap_unordered(_demo_task, tasks)
    for variant, expression, r in done:
        results[variant][expression] = r
        rec = r.get("test_recordings") or {}
        log(f"== {variant} / {expression}: held-out Spearman {r['test']['spearman']:.3f} single clips, "
            f"{rec.get('spearman', float('nan')):.3f} whole recordings "
            f"(val {r['val_best'].get('spearman', float('nan')):.3f}, {r['train_seconds']} s)")
    if jobs > 1:
        pool.close()
        pool.join()
    results = {v: {e: results[v][e] for e in expressions if e in results[v]} for v in variants}
    timings["train_s"] = round(time.time() - t2, 1)
    n_base, licences = _identity_summary()
    data_desc = (f"simulated patients from {n_base} base identities ({identities} pseudo-identities with mirror "
                 f"images; licences: {licences}), single-movement clips and whole recordings - not for clinical use")
    report = summarise(results, meta={
        "disclaimer": "SIMULATED DATA - NOT FOR CLINICAL USE", "training_data": data_desc,
        "split": {k: sorted({s.subject for s in v}) for k, v in (("train", train_s), ("val", val_s),
                                                                 ("test", test_s))},
        "test_identities": sorted({s.group for s in test_s}),
        "recipe": {"train": asdict(TrainConfig(**{**DEMO_TRAIN, **({"epochs": epochs} if epochs else {})},
                                               seed=seed)),
                   "train_toronto": asdict(TrainConfig(**{**DEMO_TRAIN_TORONTO,
                                                          **({"epochs": epochs} if epochs else {})}, seed=seed)),
                   "per_severity": per_severity, "toronto_per_severity": min(per_severity, DEMO_PER_SEVERITY_TORONTO),
                   "shapes": shapes, "toronto_shapes": toronto_shapes,
                   "recordings_per_severity": DEMO_RECORDINGS_PER_SEVERITY if recordings else None,
                   "windows_per_episode": DEMO_WINDOWS_PER_EPISODE if recordings else None,
                   "model_overrides": {**DEMO_MODEL, **variants[main]}, "contract_overrides": contract},
        "command": command, "trained_now": list(expressions), "timings_s": timings, "seed": seed})
    _summarise_recordings(report, results)
    out.mkdir(parents=True, exist_ok=True)
    report["shipped_variant"] = main
    if export:
        export_demo(results[main], out, data_desc, tcfgs, log)
        carry_previous(report, out / "REPORT.json", main, carried)
        t3 = time.time()
        if recordings and carried:      # the models kept from the previous build, on their own test recordings
            eval_rec, eval_known = _demo_recordings(work / "recordings_eval", carried,
                                                    {"train": 0, "val": 0, "test": DEMO_RECORDINGS_PER_SEVERITY["test"]},
                                                    identities, seed, workers, progress)
            warm_recordings(eval_rec, eval_known, cache_root, contracts, seed=seed, workers=workers,
                            progress=progress, log=log)
            test_rec = test_rec + [s for s in eval_rec if s.split == "test"]
        rec = evaluate_exported_on_recordings(out, test_rec, cache_root, log)
        per = report["variants"][main]["per_expression"]
        for e, m in rec.items():
            if e in per:
                per[e]["whole_recordings"] = m
        _protocol_means(report["variants"][main])
        report["timings_s"]["evaluate_recordings_s"] = round(time.time() - t3, 1)
    report["timings_s"]["total_s"] = round(time.time() - t0, 1)
    (out / "REPORT.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    plot_report(report, out, variant=main)
    log(f"demo done in {report['timings_s']['total_s']} s: mean Spearman "
        f"{report['variants'][main]['mean_spearman']:.3f}")
    return report


def _demo_recordings(folder: Path, expressions: Sequence[str], per_severity: dict, identities: int, seed: int,
                     workers: int, progress: bool) -> tuple[list[Sample], dict]:
    from training.simulate import load_episodes, simulate_recordings

    manifest = simulate_recordings(folder, identities=min(identities, DEMO_RECORDING_IDENTITIES),
                                   expressions=tuple(expressions), seed=seed, test_identities=DEMO_TEST,
                                   val_identities=DEMO_VAL, per_severity=per_severity, workers=workers,
                                   progress=progress)
    return read_dataset_manifest(manifest), load_episodes(manifest)


def carry_previous(report: dict, previous: Path, variant: str, carried: Sequence[str]) -> None:
    """Rows of the previous REPORT.json for the expressions not retrained now (their models stay in the folder),
    marked `carried_from_previous_build`; the means are recomputed over all rows."""
    if not carried or not previous.exists():
        return
    old = json.loads(previous.read_text())
    old_rows = old.get("variants", {}).get(variant, {}).get("per_expression", {})
    v = report["variants"][variant]
    for e in carried:
        if e in old_rows:
            v["per_expression"][e] = {**old_rows[e], "carried_from_previous_build": True,
                                      "previous_build_timings_s": old.get("timings_s")}
    order = [e for e in DEMO_EXPRESSIONS if e in v["per_expression"]]
    v["per_expression"] = {e: v["per_expression"][e] for e in order}
    v["expressions"] = order
    v["carried_from_previous_build"] = [e for e in carried if e in old_rows]
    report["previous_build"] = {"command": old.get("command"), "timings_s": old.get("timings_s"),
                                "recipe": old.get("recipe"),
                                "mean_spearman": {k: w.get("mean_spearman") for k, w in old.get("variants", {}).items()}}
    _protocol_means(v)


def _protocol_means(v: dict) -> None:
    rows = v["per_expression"]
    v["mean_spearman"] = float(np.mean([r["spearman"] for r in rows.values()]))
    v["mean_mae"] = float(np.mean([r["mae"] for r in rows.values()]))
    v["mean_accuracy"] = float(np.mean([r["accuracy"] for r in rows.values()]))
    for proto, names in (("pfed5", PFED5_EXPRESSIONS), ("toronto", TORONTO_EXPRESSIONS)):
        have = [e for e in names if e in rows]
        if not have:
            continue
        v[f"mean_spearman_{proto}"] = float(np.mean([rows[e]["spearman"] for e in have]))
        rec = [rows[e]["whole_recordings"]["spearman"] for e in have if rows[e].get("whole_recordings")]
        if len(rec) == len(have):
            v[f"mean_spearman_{proto}_whole_recordings"] = float(np.mean(rec))


def evaluate_exported_on_recordings(model_dir: Path, recordings: Sequence[Sample], cache_root: Path,
                                    log: Callable = print) -> dict[str, dict]:
    """Every exported model in `model_dir` scored on the held-out whole recordings of its expression as the
    service scores them: onnxruntime (model.scorer.Scorer) on serving's windows (worker.segment.plan_windows on
    one extract_recording track) and serving's aggregate (worker.pipeline.aggregate); the served score (on the
    model's scale, clipped) against the known score."""
    from model.scales import scale_for_manifest
    from model.scorer import Scorer

    scorer = Scorer(model_dir)
    out = {}
    for e in scorer.expressions():
        recs = [s for s in recordings if s.expression == e]
        if not recs:
            continue
        scale = scale_for_manifest(scorer.manifest(e))
        contract = scorer.contract(e).with_(channels=FULL_CHANNELS)
        r = _score_recordings(recs, e, contract, scale, cache_root, log,
                              lambda d, e=e: scorer.score(e, d["trajs"], d["index_t"], d["frames"]))
        if r:
            out[e] = {**r, "scored_by": "exported ONNX model (model.scorer.Scorer)"}
    return out


def _summarise_recordings(report: dict, results: dict) -> None:
    """Per variant: whole-recording rho per expression and means per protocol, beside the single-clip ones."""
    for variant, per_expr in results.items():
        v = report["variants"][variant]
        for e, r in per_expr.items():
            if r.get("test_recordings"):
                v["per_expression"][e]["whole_recordings"] = r["test_recordings"]
        for proto, names in (("pfed5", PFED5_EXPRESSIONS), ("toronto", TORONTO_EXPRESSIONS)):
            have = [e for e in names if e in per_expr]
            if not have:
                continue
            rec = [per_expr[e]["test_recordings"]["spearman"] for e in have if per_expr[e].get("test_recordings")]
            v[f"mean_spearman_{proto}"] = float(np.mean([per_expr[e]["test"]["spearman"] for e in have]))
            if rec:
                v[f"mean_spearman_{proto}_whole_recordings"] = float(np.mean(rec))


def expression_metrics(expression: str, y_true: Sequence[float], y_pred: Sequence[float]) -> dict:
    """training.evaluate.scale_metrics on the expression's own scale (Toronto 1-5, PFED5 0-4), with the
    true and predicted scores kept for the report's plots."""
    from model.scales import default_scale
    from training.evaluate import scale_metrics as on_scale

    y, p = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    return {**on_scale(y, p, default_scale(expression)), "y_true": y.tolist(), "y_pred": p.tolist()}


def evaluate_recordings(path: str | Path, recordings: Sequence[Sample], cache_root: Path,
                        calibration: dict | None = None, log: Callable = print) -> dict:
    """Whole-recording evaluation by the serving rule: each held-out recording tracked once, segmented, its
    windows placed and scored (worker.segment.plan_windows) and aggregated (worker.pipeline.aggregate); the
    served (clipped) score against the recording's known score. Also how many known repetitions the
    segmentation found."""
    from model.scales import default_scale

    if not recordings:
        return {}
    model, ck = load_model(path)
    apply_calibration(model, calibration)
    contract = checkpoint_contract(ck, model.cfg).with_(channels=FULL_CHANNELS)
    expression = recordings[0].expression
    scale = default_scale(expression)
    return _score_recordings(recordings, expression, contract, scale, cache_root, log, lambda d: predict(
        model, [TrainItem(d["trajs"][k], d["index_t"][k], d["frames"][k], 0.0) for k in range(len(d["start"]))]))


RECORDING_RULE = ("serving's: worker.segment.plan_windows + worker.pipeline.aggregate (median over repetitions of "
                  "the mean over each repetition's windows; tiling mean at rest)")


def _score_recordings(recordings: Sequence[Sample], expression: str, contract, scale, cache_root: Path,
                      log: Callable, score_windows: Callable[[dict], Sequence[float]]) -> dict:
    """Each recording tracked once and cut into serving's windows (training.windows.recording_features), its
    windows scored by `score_windows` and aggregated by serving's rule; the served (clipped) score against the
    known one, with the spread, window count and how many known repetitions the segmentation found."""
    from training.windows import aggregate_recording, episode_agreement, recording_features

    ys, ps, spreads, n_windows, found, known, names = [], [], [], 0, 0, 0, []
    for s in recordings:
        try:
            d = recording_features(s.video, expression, contract, cache_root, split="test")
        except Exception as exc:
            log(f"skipping recording {s.video}: {exc}")
            continue
        raw, agg = aggregate_recording(score_windows(d), d, scale, expression)
        ys.append(float(s.score))
        ps.append(scale.clip(raw))
        spreads.append(agg["spread"])
        n_windows += len(d["start"])
        f, k = episode_agreement(d)
        found, known = found + f, known + k
        names.append(Path(s.video).name)
    if not ys:
        return {}
    return {**expression_metrics(expression, ys, ps), "rule": RECORDING_RULE, "n_recordings": len(ys),
            "n_windows": n_windows, "median_spread": float(np.median(spreads)),
            "known_repetitions_found": [found, known], "recordings": names}


def _demo_task(t: dict) -> tuple[str, str, dict]:
    """Train and evaluate one demo model (a process of its own when run_demo trains several at once)."""
    quiet = (lambda m: None) if not t["progress"] else print
    expression = t["expression"]
    res = train_expression(expression, t["train_s"], t["val_s"], t["out_dir"], config="compact",
                           model_overrides=t["model_overrides"], train_cfg=t["train_cfg"], cache_root=t["cache_root"],
                           progress=t["progress"], log=quiet, contract_overrides=t["contract"],
                           extra_meta={"trained_on": "simulated"},
                           extra_items=recording_items(t["train_rec"], t["rec_contract"], t["cache_root"],
                                                       seed=t["seed"], log=quiet))
    val = evaluate_checkpoint(res["best_path"], [s for s in t["val_s"] if s.expression == expression],
                              t["cache_root"], quiet)
    cal = fit_calibration(val["y_true"], val["y_pred"])
    m = evaluate_checkpoint(res["best_path"], [s for s in t["test_s"] if s.expression == expression],
                            t["cache_root"], quiet, calibration=cal)
    m = expression_metrics(expression, m["y_true"], m["y_pred"])
    rec = evaluate_recordings(res["best_path"], t["test_rec"], t["cache_root"], cal, quiet)
    n_windows = res["n_train"] - len([s for s in t["train_s"] if s.expression == expression])
    return t["variant"], expression, {"test": m, "test_recordings": rec, "val_best": res["best"],
                                      "n_train": res["n_train"], "n_train_windows": n_windows,
                                      "n_val": res["n_val"], "best_path": res["best_path"], "calibration": cal,
                                      "epochs_run": len(res["history"]),
                                      "train_seconds": round(sum(h["seconds"] for h in res["history"]), 1)}


# Calibration guards. A least-squares slope is only as good as the validation set it is fitted on: a handful
# of clips, or raw outputs that hardly vary (a barely trained model), give slopes like 400 that blow noise up
# into the whole score range. The raw output's own scale is free (the BMC loss fixes ranks, not units): the
# demo models' fitted slopes are 0.047-0.124 (PFED5 tasks, 20 validation clips) and 0.38-1.16 (Toronto tasks,
# 10 clips), so the range below leaves a factor of 8 or more on either side.
MIN_CALIBRATION_CLIPS = 8            # fewer clips: no fit (identity); training._train_one adds training clips
CALIBRATION_SLOPE_RANGE = (1e-3, 10.0)
CALIBRATION_GUARDS = ("none", "too_few_clips", "no_spread", "slope_not_positive", "slope_clamped")


def fit_calibration(y_true: Sequence[float], y_pred: Sequence[float], *, source: str = "validation identities",
                    min_clips: int = MIN_CALIBRATION_CLIPS,
                    slope_range: tuple[float, float] = CALIBRATION_SLOPE_RANGE) -> dict:
    """Least-squares `score = scale * raw + bias` on the validation identities. The BMC loss ranks well but
    leaves the raw output's offset and scale free; Spearman's rho is unchanged by this map, MAE and the
    rounded-score accuracy are not.

    Guarded (`guard` records which, `n` the clips): identity when there are fewer than `min_clips` clips
    (too_few_clips), when predictions or scores do not vary (no_spread) or when the fit would flip the ranking
    (slope_not_positive); a slope outside `slope_range` is clamped to it, with the bias refitted at that slope
    (slope_clamped; the fitted slope kept as `fitted_scale`)."""
    y, p = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    n = int(len(y))

    def identity(guard: str, why: str) -> dict:
        return {"scale": 1.0, "bias": 0.0, "fitted_on": f"none ({why})", "guard": guard, "n": n}

    if n < max(3, min_clips):
        return identity("too_few_clips", f"{n} {source} clips, fewer than {max(3, min_clips)}")
    if np.std(p) < 1e-9 or np.std(y) < 1e-9:
        return identity("no_spread", f"{source}: {'predictions' if np.std(p) < 1e-9 else 'scores'} do not vary")
    a, b = np.polyfit(p, y, 1)
    if a <= 0:
        return identity("slope_not_positive", f"{source}: slope not positive")
    lo, hi = slope_range
    if not lo <= a <= hi:
        c = float(np.clip(a, lo, hi))
        return {"scale": c, "bias": float(y.mean() - c * p.mean()),
                "fitted_on": f"{source} ({n} clips), slope {a:.4g} clamped to {c:.4g}", "guard": "slope_clamped",
                "fitted_scale": float(a), "n": n}
    return {"scale": float(a), "bias": float(b), "fitted_on": f"{source} ({n} clips)", "guard": "none", "n": n}


def apply_calibration(model, cal: dict | None):
    """Fold `scale * raw + bias` into the head's last Linear, so the exported graph outputs calibrated scores."""
    import torch

    if cal and (cal["scale"] != 1.0 or cal["bias"] != 0.0):
        last = model.head.layers[-1]
        with torch.no_grad():
            last.weight.mul_(cal["scale"])
            last.bias.mul_(cal["scale"]).add_(cal["bias"])
    return model


def export_demo(results: dict, out: Path, data_desc: str, tcfg: TrainConfig | dict[str, TrainConfig],
                log: Callable = print) -> None:
    """Export every demo model with its manifest: trained_on simulated, clinical_use false, the expression's own
    score scale (`scale`: mds_updrs_3_2 for PFED5, toronto_neuroface for the Toronto tasks), its held-out metrics
    on single clips and on whole recordings."""
    import inspect

    from model.export import export_model
    from model.scales import default_scale

    takes_scale = "scale" in inspect.signature(export_model).parameters
    for expression, r in results.items():
        model, ck = load_model(r["best_path"])
        apply_calibration(model, r.get("calibration"))
        test = {k: v for k, v in r["test"].items() if k not in ("y_true", "y_pred")}
        rec = {k: v for k, v in (r.get("test_recordings") or {}).items()
               if k not in ("y_true", "y_pred", "recordings")}
        metrics = {"evaluation": "held-out simulated identities (never seen in training or validation)",
                   **test, **({"whole_recordings": rec} if rec else {}), "val_best": r["val_best"],
                   "calibration": r.get("calibration")}
        recipe = tcfg[expression] if isinstance(tcfg, dict) else tcfg
        training = {"description": data_desc, "trained_on": "simulated", "recipe": asdict(recipe),
                    "n_train": r["n_train"], "n_train_windows": r.get("n_train_windows", 0), "n_val": r["n_val"],
                    "clinical_use": False}
        scale = default_scale(expression).name
        path = export_model(model, model.cfg, out, f"{expression}-compact", expression, DEMO_VERSION,
                            training=training, metrics=metrics, trained_on="simulated", clinical_use=False,
                            contract=checkpoint_contract(ck, model.cfg), **({"scale": scale} if takes_scale else {}))
        manifest_path = path.with_suffix(".json")
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("scale") != scale:     # an export without scale support: name the scale in the sidecar
            manifest["scale"] = scale
            manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        log(f"exported {path}")
