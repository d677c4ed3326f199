"""Extract then score one video: the logic behind the Celery task and `feqa score`.

`assess()` never touches the job store or the broker; callers pass a `progress(stage, fraction)`
callback and a directory for the pictures.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from model.scorer import ScoringModels

log = logging.getLogger("feqa.pipeline")

REPORTED_STAGES = ("decoding", "tracking", "scoring")   # the API's progress stages; others are only timed
Progress = Callable[[str, float], None]


def model_facts(manifest: dict) -> dict:
    return {"name": str(manifest.get("name", "")), "version": str(manifest.get("version", "")),
            "sha256": str(manifest.get("sha256", "")), "trained_on": str(manifest.get("trained_on", "untrained")),
            "training_data": manifest.get("training_data"), "clinical_use": bool(manifest.get("clinical_use", False))}


class StageClock:
    """Wraps the progress callback and measures how long each stage took."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.durations: dict[str, float] = {}
        self._stage: str | None = None
        self._since = time.perf_counter()

    def __call__(self, stage: str, fraction: float) -> None:
        if stage != self._stage:
            self._close()
            self._stage, self._since = stage, time.perf_counter()
        if self.progress is not None and stage in REPORTED_STAGES:
            self.progress(stage, max(0.0, min(1.0, float(fraction))))

    def _close(self) -> None:
        if self._stage is not None:
            self.durations[self._stage] = self.durations.get(self._stage, 0.0) + time.perf_counter() - self._since

    def finish(self) -> dict[str, float]:
        self._close()
        self._stage = None
        return {k: round(v, 4) for k, v in self.durations.items()}


def write_pictures(extraction: Any, out_dir: Path) -> dict[str, Path]:
    """Overlay and trajectory pictures through worker.plots; a failure costs the pictures, not the score."""
    from worker import plots

    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name, draw in (("overlay", plots.overlay_png), ("trajectories", plots.trajectory_png)):
        path = out_dir / f"{name}.png"
        try:
            draw(extraction, path)
        except Exception:   # pictures are an extra; never fail a scored item for them
            log.exception("could not write the %s picture", name)
            continue
        if path.is_file():
            written[name] = path
    return written


AGGREGATION_RULE = "median_over_repetitions_of_mean_over_windows"
TILING_RULE = "mean_over_windows_tiling_the_recording"
PEAK_RULE = "window_on_the_largest_movement"
DISAGREE_SPREAD = 1.0       # repetitions whose scores differ by a grade or more disagree


def _base_result(expression: str, facts: dict, scale: Any, quality: dict, meta: dict) -> dict[str, Any]:
    return {"expression": expression, "score": None, "score_rounded": None, "meaning": None,
            "abstained": False, "reasons": [], "model": facts, "scale": scale.to_dict(), "quality": quality,
            "not_for_clinical_use": not facts["clinical_use"],
            "video": {k: meta.get(k) for k in ("duration_s", "fps_in", "fps_out", "rotation", "n_frames")}}


def aggregate(window_scores: np.ndarray, plans: list, episodes: list, scale: Any,
              tiled: bool = True) -> tuple[float, dict, list]:
    """Task score from the windows' raw scores: each repetition's score is the mean of its windows; the task
    score is the median over the complete repetitions (over the partial ones when no repetition is complete);
    at rest, the mean over the windows tiling the recording; with no movement found, the one window placed on
    the largest movement. The median keeps one
    odd repetition (a fragment, a cough, one much weaker try) from setting the score, and the spread shows it.
    Returns (raw task score, aggregation dict, per-repetition raw scores)."""
    w = np.asarray(window_scores, np.float64).reshape(-1)
    reps = []
    for k, _ in enumerate(episodes):
        mine = [w[i] for i, pl in enumerate(plans) if pl.episode == k]
        reps.append(float(np.mean(mine)) if mine else float("nan"))
    if not episodes:
        clipped = [scale.clip(v) for v in w]
        rule, basis = (TILING_RULE, "whole_recording") if tiled else (PEAK_RULE, "largest_movement")
        return float(np.mean(w)), {"rule": rule, "n_windows": int(w.size), "basis": basis,
                                   "spread": round(float(np.ptp(clipped)) if clipped else 0.0, 4)}, []
    complete = [r for r, e in zip(reps, episodes, strict=True) if not e.partial and np.isfinite(r)]
    used = complete or [r for r in reps if np.isfinite(r)]
    clipped = [scale.clip(v) for v in used]
    agg = {"rule": AGGREGATION_RULE, "n_windows": int(w.size),
           "basis": "complete_repetitions" if complete else "partial_repetitions",
           "n_repetitions": len(used), "spread": round(float(np.ptp(clipped)), 4)}
    return float(np.median(used)), agg, reps


def score_video(video_path: str | Path, expression: str, scorer: ScoringModels, *, progress: Progress | None = None,
                limits: Any = None) -> tuple[dict, Any]:
    """Track the whole recording once, find the task's repetitions, score every window that covers them in one
    batched call, aggregate, and measure the movement: (the per-expression result, an Extraction for the
    pictures). See docs/extraction.md ("Whole recording")."""
    from model.scales import scale_for_manifest
    from worker import measures as ms
    from worker import segment as sg
    from worker.extract import extract_recording

    t0 = time.perf_counter()
    clock = StageClock(progress)
    contract = scorer.contract(expression)          # raises if no model serves this expression
    manifest = scorer.manifest(expression)
    facts, scale = model_facts(manifest), scale_for_manifest(manifest)
    rec = extract_recording(video_path, contract, progress=clock, limits=limits)
    quality = dict(rec.quality)
    result = _base_result(expression, facts, scale, quality, rec.meta)
    clock("segmenting", 0.0)
    seg = sg.segment(rec.mesh, rec.runs(), expression, rec.fps)
    plans = sg.plan_windows(seg, contract.tp)
    windows = [rec.window(pl.start, pl.stop) for pl in plans]
    findings = list(seg.findings)
    if any(w.padded for w in windows):
        findings.append(sg.SHORT_CLIP_PADDED)
    clock("measuring", 0.0)
    measures, rep_measures = ms.compute(seg)
    rep_raw: list = []
    if not quality.get("scorable", True):
        result["abstained"], result["reasons"] = True, list(quality.get("reasons") or ["quality too low"])
        result["aggregation"] = {"rule": AGGREGATION_RULE if seg.episodes else
                                 TILING_RULE if expression == "sit_at_rest" else PEAK_RULE,
                                 "n_windows": 0, "spread": 0.0}
    else:
        clock("scoring", 0.0)
        raw = scorer.score(expression, np.stack([w.trajs for w in windows]), np.stack([w.index_t for w in windows]),
                           np.stack([w.frames for w in windows]))
        task_raw, agg, rep_raw = aggregate(raw, plans, seg.episodes, scale, tiled=expression == "sit_at_rest")
        result.update(scale.grade(task_raw))
        result["aggregation"] = agg
        result["windows"] = [{"onset_s": round(float(rec.src[w.rows[0]]) / rec.fps, 3),
                              "offset_s": round(float(rec.src[w.rows[1] - 1]) / rec.fps, 3),
                              "repetition": pl.episode, "score": round(scale.clip(float(r)), 4),
                              "padded": w.padded}
                             for w, pl, r in zip(windows, plans, raw, strict=True)]
        if agg["spread"] >= DISAGREE_SPREAD and len(seg.episodes) > 1:
            findings.append(sg.REPETITIONS_DISAGREE)
        clock("scoring", 1.0)
    result["repetitions"] = []
    for k, e in enumerate(seg.episodes):
        t = [round(float(rec.src[i]) / rec.fps, 3) for i in (e.onset, e.peak, e.offset)]
        score = rep_raw[k] if k < len(rep_raw) and np.isfinite(rep_raw[k]) else None
        result["repetitions"].append({"index": k, "onset_s": t[0], "peak_s": t[1], "offset_s": t[2],
                                      "partial": e.partial,
                                      "score": None if score is None else round(scale.clip(score), 4),
                                      "measures": rep_measures[k]})
    result["findings"] = findings
    result["measures"] = measures
    result["timings"] = {**clock.finish(), "total": round(time.perf_counter() - t0, 4)}
    overview = rec.overview()
    if len(seg.activation) == overview.landmarks.shape[0]:   # the pictures' rest and peak frames: the task's own
        overview.meta["neutral_row"] = int(np.argmin(seg.activation))
        overview.meta["peak_row"] = int(np.argmax(seg.activation))
    return result, overview


def draw_pictures(extraction: Any, out_dir: Path) -> tuple[dict[str, Path], float]:
    """The pictures and the seconds they took."""
    t0 = time.perf_counter()
    written = write_pictures(extraction, Path(out_dir))
    return written, round(time.perf_counter() - t0, 4)


def assess(video_path: str | Path, expression: str, scorer: ScoringModels, *, progress: Progress | None = None,
           artifacts_dir: Path | None = None, limits: Any = None) -> dict:
    """The per-expression result: score (clipped 0..4) + grade, model facts, quality report, abstention;
    writes overlay.png and trajectories.png into `artifacts_dir` when given."""
    result, extraction = score_video(video_path, expression, scorer, progress=progress, limits=limits)
    if artifacts_dir is not None:
        _, seconds = draw_pictures(extraction, Path(artifacts_dir))
        result["timings"] = {**result["timings"], "plotting": seconds,
                             "total": round(result["timings"]["total"] + seconds, 4)}
    from worker.result import validated

    return validated(result)
