"""Extract then score one video: the logic behind the Celery task and `feqa score`.

`assess()` never touches the job store or the broker; callers pass a `progress(stage, fraction)`
callback and a directory for the pictures.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("feqa.pipeline")

MEANINGS = {0: "normal", 1: "slight", 2: "mild", 3: "moderate", 4: "severe"}
REPORTED_STAGES = ("decoding", "tracking", "scoring")   # the API's progress stages; others are only timed
Progress = Callable[[str, float], None]


def model_facts(manifest: dict) -> dict:
    return {"name": str(manifest.get("name", "")), "version": str(manifest.get("version", "")),
            "sha256": str(manifest.get("sha256", "")), "trained_on": str(manifest.get("trained_on", "untrained")),
            "training_data": manifest.get("training_data"), "clinical_use": bool(manifest.get("clinical_use", False))}


def graded(raw: float) -> dict:
    """Clip the model output to the 0..4 scale and name the nearest grade."""
    score = float(np.clip(raw, 0.0, 4.0))
    rounded = int(np.floor(score + 0.5))
    return {"score": round(score, 4), "score_rounded": rounded, "meaning": MEANINGS[rounded]}


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


def score_video(video_path: str | Path, expression: str, scorer: Any, *, progress: Progress | None = None,
                limits: Any = None) -> tuple[dict, Any]:
    """Extract then score: (the per-expression result, the Extraction for the pictures)."""
    from worker.extract import extract

    t0 = time.perf_counter()
    clock = StageClock(progress)
    contract = scorer.contract(expression)          # raises if no model serves this expression
    facts = model_facts(scorer.manifest(expression))
    # keep_crops: the pictures are drawn on the patient's real frames, not on the model input
    extraction = extract(video_path, contract, progress=clock, limits=limits, keep_crops=True)
    quality = dict(extraction.quality)
    result: dict[str, Any] = {"expression": expression, "score": None, "score_rounded": None, "meaning": None,
                              "abstained": False, "reasons": [], "model": facts, "quality": quality,
                              "not_for_clinical_use": not facts["clinical_use"],
                              "video": {k: extraction.meta.get(k) for k in
                                        ("duration_s", "fps_in", "fps_out", "rotation", "n_frames")}}
    if not quality.get("scorable", True):
        result["abstained"], result["reasons"] = True, list(quality.get("reasons") or ["quality too low"])
    else:
        clock("scoring", 0.0)
        # (1, 63, Tp, 5), (1, Tp), (1, Tf, 224, 224, 3): a batch of one
        raw = scorer.score(expression, extraction.trajs[None], extraction.index_t[None], extraction.frames[None])
        result.update(graded(float(np.asarray(raw).reshape(-1)[0])))
        clock("scoring", 1.0)
    result["timings"] = {**clock.finish(), "total": round(time.perf_counter() - t0, 4)}
    return result, extraction


def draw_pictures(extraction: Any, out_dir: Path) -> tuple[dict[str, Path], float]:
    """The pictures and the seconds they took."""
    t0 = time.perf_counter()
    written = write_pictures(extraction, Path(out_dir))
    return written, round(time.perf_counter() - t0, 4)


def assess(video_path: str | Path, expression: str, scorer: Any, *, progress: Progress | None = None,
           artifacts_dir: Path | None = None, limits: Any = None) -> dict:
    """The per-expression result: score (clipped 0..4) + grade, model facts, quality report, abstention;
    writes overlay.png and trajectories.png into `artifacts_dir` when given."""
    result, extraction = score_video(video_path, expression, scorer, progress=progress, limits=limits)
    if artifacts_dir is not None:
        _, seconds = draw_pictures(extraction, Path(artifacts_dir))
        result["timings"] = {**result["timings"], "plotting": seconds,
                             "total": round(result["timings"]["total"] + seconds, 4)}
    return result
