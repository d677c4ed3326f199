"""Pictures a clinician reads: the patient's own face at rest and at the peak of the movement, with the
landmarks drawn on it, and how far each face region moved over time.

- `overlay_png`: two real video frames side by side (the most neutral frame of the scored window and the
  frame of largest movement), the 63 landmark slots coloured by region; on the peak frame a short line shows
  where each slot was at rest. Drawn from the face crops the tracker saw (`Extraction.crops`), never from the
  model's input, which may be a difference image; without crops it falls back to the model frames and says so.
- `trajectory_png`: per region pair (brows, eyes, nose, lips), the displacement of the region from the neutral
  frame in inter-ocular distances (IOD: the distance between the eye centres, so the numbers do not depend on
  the face's size in the picture or the camera), over time in seconds of the recording; head motion removed.

Matplotlib's object API with the Agg canvas (no pyplot global state: safe in worker threads and processes).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model.contract import REGIONS, SLOTS_PER_REGION

REGION_COLOURS = ("#1f77b4", "#17becf", "#d62728", "#ff7f0e", "#2ca02c", "#9467bd", "#e377c2")
# Region pairs of the movement plot: (title, [(region, label, line style), ...]); left/right are the patient's.
PANELS = (
    ("Eyebrows", (("left_brow", "left", "-"), ("right_brow", "right", "--"))),
    ("Eyes", (("left_eye", "left", "-"), ("right_eye", "right", "--"))),
    ("Nose", (("nose", "nose", "-"),)),
    ("Lips", (("upper_lip", "upper", "-"), ("bottom_lip", "lower", "--"))),
)
PAIR_COLOURS = ("#0b5cad", "#c2410c")


def _figure(w: float, h: float, dpi: int = 100) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


@dataclass
class Movement:
    """Head-motion-free movement of the window's landmarks, relative to its most neutral frame."""
    t: np.ndarray                  # (T,) seconds from the start of the recording
    regions: dict[str, np.ndarray]  # region -> (T,) mean slot displacement from the neutral frame, in IOD
    overall: np.ndarray            # (T,) mean displacement of all non-anchor slots, in IOD
    neutral: int                   # row of the most neutral frame
    peak: int                      # row of the largest movement
    iod_px: float                  # inter-ocular distance in the landmarks' pixels


def _fps_and_start(meta: dict, n: int) -> tuple[float, float]:
    fps = float(meta.get("fps_out") or 0) or 25.0
    span = meta.get("window_s") or [0.0, (n - 1) / fps]
    start = float(span[0])
    if n > 1 and len(span) == 2 and float(span[1]) > start:
        fps = (n - 1) / (float(span[1]) - start)    # the window's own frame rate (its rows are consecutive)
    return fps, start


def movement(landmarks: np.ndarray, *, fps: float = 25.0, start_s: float = 0.0, neutral: int | None = None,
             peak: int | None = None) -> Movement:
    """Movement of (T, 63, 2) landmarks: every frame mapped onto the first by a similarity fitted on the
    nose and eye corners (head motion removed), then each slot's distance to its place in the neutral frame,
    divided by the inter-ocular distance. The neutral and peak frames are the task's own when given (the
    segmentation's least and most active frames), else the frame nearest the median shape and the frame
    farthest from it."""
    from worker import landmarks as lm

    pts = np.asarray(landmarks, np.float64)[..., :2]
    if pts.ndim == 2:
        pts = pts[None]
    aligned = lm.align_to_first(pts) if len(pts) > 1 else pts
    iod = float(np.median(lm.interocular(aligned))) or 1.0
    median_shape = np.median(aligned, axis=0)
    moving = np.setdiff1d(np.arange(aligned.shape[1]), lm.ANCHOR_SLOTS)
    dist_to_median = np.linalg.norm(aligned[:, moving] - median_shape[moving], axis=-1).mean(1)
    n = len(pts)
    neutral = int(neutral) if neutral is not None and 0 <= neutral < n else int(np.argmin(dist_to_median))
    disp = np.linalg.norm(aligned - aligned[neutral], axis=-1) / iod      # (T, 63)
    overall = disp[:, moving].mean(1)
    peak = int(peak) if peak is not None and 0 <= peak < n else int(np.argmax(overall))
    regions = {r: disp[:, sl].mean(1) for r, sl in lm.region_slices().items()}
    t = start_s + np.arange(len(pts)) / fps
    return Movement(t, regions, overall, neutral, peak, iod)


def extraction_movement(extraction: Any) -> Movement:
    meta = getattr(extraction, "meta", {}) or {}
    n = len(extraction.landmarks)
    fps, start = _fps_and_start(meta, n)
    mv = movement(extraction.landmarks, fps=fps, start_s=start, neutral=meta.get("neutral_row"),
                  peak=meta.get("peak_row"))
    rows = meta.get("row_frames")      # output frame of each row (face frames only: gaps where the face was lost)
    rate = meta.get("row_fps") or meta.get("fps_out")
    if rows is not None and len(rows) == n and rate:
        mv.t = np.asarray(rows, np.float64) / float(rate)
    return mv


def _real_frames(extraction: Any) -> tuple[np.ndarray, np.ndarray, bool]:
    """(frames, landmarks in those frames' pixels, whether the frames are the real face crops)."""
    crops = getattr(extraction, "crops", None)
    lms = np.asarray(extraction.landmarks)
    if crops is not None and len(crops) == len(lms):
        scale = crops.shape[2] / float(extraction.meta.get("crop_size", crops.shape[2]))
        return np.asarray(crops), lms * scale, True
    frames = extraction.frames
    rows = extraction.meta.get("rgb_window_index")
    if rows is None or len(rows) != len(frames):
        rows = np.round(np.linspace(0, len(lms) - 1, len(frames))).astype(int)
    crop = extraction.meta.get("crop_size", 256)
    # one model frame per landmark row, the nearest one in time
    rows = np.asarray(rows)
    nearest = np.abs(np.arange(len(lms))[:, None] - rows[None]).argmin(1)
    return np.asarray(frames)[nearest], lms * (frames.shape[2] / crop), False


def _rest_positions_in(pts: np.ndarray, frame: int, neutral: int) -> np.ndarray:
    """The neutral frame's slots drawn into `frame`'s image: the similarity that maps the neutral frame's
    anchors onto this frame's, applied to all neutral slots (head motion between them removed)."""
    from worker import landmarks as lm

    z = pts[..., 0].astype(np.float64) + 1j * pts[..., 1].astype(np.float64)
    a, mu, mu_ref = lm._similarity(z[neutral][None, lm.ANCHOR_SLOTS], z[frame][lm.ANCHOR_SLOTS])
    out = a[0] * (z[neutral] - mu[0]) + mu_ref
    return np.stack([out.real, out.imag], -1)


def _draw_face(ax: Any, image: np.ndarray, pts: np.ndarray | None, title: str, point_size: float,
               rest: np.ndarray | None = None, legend: bool = False) -> None:
    ax.imshow(image)
    if pts is not None:
        for r, name in enumerate(REGIONS):
            sl = slice(r * SLOTS_PER_REGION, (r + 1) * SLOTS_PER_REGION)
            if rest is not None:
                for s in range(sl.start, sl.stop):
                    ax.plot([rest[s, 0], pts[s, 0]], [rest[s, 1], pts[s, 1]], color="white", lw=1.6,
                            solid_capstyle="round")
                    ax.plot([rest[s, 0], pts[s, 0]], [rest[s, 1], pts[s, 1]], color=REGION_COLOURS[r], lw=0.9)
            ax.scatter(pts[sl, 0], pts[sl, 1], s=point_size, c=REGION_COLOURS[r], edgecolors="white",
                       linewidths=0.3, label=name.replace("_", " ") if legend else None)
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def overlay_png(extraction_or_frames: Any, path: str | Path, *, landmarks: np.ndarray | None = None,
                n: int = 2, point_size: float = 9.0) -> Path:
    """The most neutral frame and the frame of largest movement, side by side, landmarks drawn on them.

    Pass an Extraction (its real face crops when it kept them, else its model frames), or frames
    (T, H, W, 3) uint8 with `landmarks` (T, 63, 2) in those frames' pixels.
    """
    pts: np.ndarray | None
    mv: Movement | None
    if hasattr(extraction_or_frames, "landmarks"):
        frames, pts, real = _real_frames(extraction_or_frames)
        mv = extraction_movement(extraction_or_frames)
    else:
        frames = np.asarray(extraction_or_frames)
        frames = frames[None] if frames.ndim == 3 else frames
        pts = None if landmarks is None else np.asarray(landmarks, np.float64)
        if pts is not None and pts.ndim == 2:
            pts = pts[None]
        real = True
        mv = movement(pts) if pts is not None and len(pts) == len(frames) else None
    picks: list[tuple[int, str]]
    if mv is None or len(frames) == 1:
        picks = [(0, "frame")]
    else:
        picks = [(mv.neutral, f"at rest ({mv.t[mv.neutral]:.1f} s)"),
                 (mv.peak, f"largest movement ({mv.t[mv.peak]:.1f} s)")][:max(1, n)]
    fig = _figure(3.2 * len(picks), 3.75, dpi=120)
    for k, (i, title) in enumerate(picks):
        ax = fig.add_subplot(1, len(picks), k + 1)
        rest = _rest_positions_in(pts, i, mv.neutral) if (pts is not None and mv is not None and k > 0) else None
        _draw_face(ax, frames[i], None if pts is None else pts[i], title, point_size, rest, legend=k == 0)
    if pts is not None:
        fig.legend(loc="lower center", ncol=4, fontsize=7, frameon=False, markerscale=1.5,
                   handletextpad=0.2, columnspacing=0.8)
    note = "" if real else " (model input frames: no video frames were kept)"
    if mv is not None and len(picks) > 1:
        region, amount = max(((r, float(v[mv.peak])) for r, v in mv.regions.items()), key=lambda x: x[1])
        note = (f"lines: where each point was at rest; most moved: {region.replace('_', ' ')}, "
                f"{amount:.2f} IOD" + note)
    if note:
        fig.text(0.5, 0.955, note, ha="center", fontsize=7, color="#333333")
    fig.subplots_adjust(left=0.01, right=0.99, top=0.88, bottom=0.13, wspace=0.03)
    path = Path(path)
    fig.savefig(path, format="png")
    return path


def trajectory_png(extraction: Any, path: str | Path) -> Path:
    """Displacement of each face region from the neutral frame over time, in inter-ocular distances (IOD).

    Pass an Extraction, or (T, 63, 2) landmarks (at 25 frames per second from 0 s)."""
    mv = extraction_movement(extraction) if hasattr(extraction, "landmarks") else movement(np.asarray(extraction))
    fig = _figure(7.2, 4.6, dpi=110)
    axes = fig.subplots(len(PANELS), 1, sharex=True)
    top = max(0.05, float(max(v.max() for v in mv.regions.values())) * 1.1)
    for ax, (title, lines) in zip(axes, PANELS, strict=True):
        for (region, label, style), colour in zip(lines, PAIR_COLOURS, strict=False):
            ax.plot(mv.t, mv.regions[region], style, color=colour, lw=1.4, label=label)
        ax.set_ylim(0, top)
        ax.set_ylabel(title, fontsize=8, rotation=0, ha="right", va="center")
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
        for i, c in ((mv.neutral, "#1a7f37"), (mv.peak, "#b42318")):
            ax.axvline(mv.t[i], color=c, lw=0.8, alpha=0.7)
        if len(lines) > 1:
            ax.legend(fontsize=6.5, loc="upper left", frameon=False, ncol=2, handlelength=1.8)
    axes[-1].set_xlabel("time in the recording (s)   (green: at rest, red: largest movement)", fontsize=8)
    fig.text(0.015, 0.5, "movement from rest (IOD)", rotation=90, va="center", fontsize=8)
    fig.suptitle("How far each face region moved (inter-ocular distances, head motion removed; "
                 "left/right: the patient's)", fontsize=9)
    fig.subplots_adjust(left=0.19, right=0.98, top=0.92, bottom=0.11, hspace=0.18)
    path = Path(path)
    fig.savefig(path, format="png")
    return path
