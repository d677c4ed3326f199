"""Pictures of an extraction: landmark overlay on sample frames, per-region trajectories (cf. paper Fig. 1).

Matplotlib's object API with the Agg canvas (no pyplot global state: safe in worker threads and processes).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from model.contract import REGIONS, SLOTS_PER_REGION

REGION_COLOURS = ("#1f77b4", "#17becf", "#d62728", "#ff7f0e", "#2ca02c", "#9467bd", "#e377c2")


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def overlay_png(extraction_or_frames, path: str | Path, *, landmarks: np.ndarray | None = None,
                n: int = 4, point_size: float = 6.0) -> Path:
    """Sample frames with the 63 slots drawn on them, coloured by region.

    Pass an Extraction (its RGB clip and the matching window landmarks are used), or frames (T, H, W, 3)
    uint8 with `landmarks` (T, 63, 2) in those frames' pixels.
    """
    frames, pts = _overlay_inputs(extraction_or_frames, landmarks)
    picks = np.unique(np.round(np.linspace(0, len(frames) - 1, min(n, len(frames)))).astype(int))
    fig = _figure(3.0 * len(picks), 3.3)
    for k, i in enumerate(picks):
        ax = fig.add_subplot(1, len(picks), k + 1)
        ax.imshow(frames[i])
        if pts is not None:
            for r, name in enumerate(REGIONS):
                sl = slice(r * SLOTS_PER_REGION, (r + 1) * SLOTS_PER_REGION)
                ax.scatter(pts[i, sl, 0], pts[i, sl, 1], s=point_size, c=REGION_COLOURS[r],
                           label=name.replace("_", " ") if k == 0 else None)
        ax.set_title(f"frame {i}", fontsize=8)
        ax.axis("off")
    if pts is not None:
        fig.legend(loc="lower center", ncol=len(REGIONS), fontsize=7, frameon=False, markerscale=2)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.92, bottom=0.1, wspace=0.03)
    path = Path(path)
    fig.savefig(path, format="png")
    return path


def _overlay_inputs(obj, landmarks):
    if hasattr(obj, "frames") and hasattr(obj, "landmarks"):
        frames = obj.frames
        rows = obj.meta.get("rgb_window_index")
        if rows is None or len(rows) != len(frames):
            rows = np.round(np.linspace(0, len(obj.landmarks) - 1, len(frames))).astype(int)
        crop = obj.meta.get("crop_size", 256)
        pts = obj.landmarks[np.asarray(rows)] * (frames.shape[2] / crop)
        return frames, pts
    frames = np.asarray(obj)
    if frames.ndim == 3:
        frames = frames[None]
    if landmarks is not None:
        landmarks = np.asarray(landmarks)
        if landmarks.ndim == 2:
            landmarks = landmarks[None]
    return frames, landmarks


def trajectory_png(extraction, path: str | Path) -> Path:
    """x and y of every slot over the trajectory window, one row per region (like the paper's Figure 1).

    Coordinates are the model input: crop pixels relative to the first window frame's nose tip.
    """
    trajs = extraction.trajs if hasattr(extraction, "trajs") else np.asarray(extraction)
    t = np.arange(trajs.shape[1])
    fig = _figure(9.0, 1.55 * len(REGIONS))
    for r, name in enumerate(REGIONS):
        sl = slice(r * SLOTS_PER_REGION, (r + 1) * SLOTS_PER_REGION)
        for c, axis in enumerate(("x", "y")):
            ax = fig.add_subplot(len(REGIONS), 2, 2 * r + c + 1)
            for s in range(sl.start, sl.stop):
                ax.plot(t, trajs[s, :, c], lw=0.8)
            ax.set_ylabel(f"{name.replace('_', ' ')}\n{axis} (px)", fontsize=7)
            ax.tick_params(labelsize=6)
            if r == len(REGIONS) - 1:
                ax.set_xlabel("trajectory step", fontsize=7)
    fig.suptitle("landmark trajectories per region (relative to the nose tip)", fontsize=9)
    fig.subplots_adjust(left=0.1, right=0.98, top=0.95, bottom=0.05, hspace=0.35, wspace=0.25)
    path = Path(path)
    fig.savefig(path, format="png")
    return path
