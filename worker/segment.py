"""Find the task's repetitions in a whole recording and place the model windows on them (issue 12).

Input: the full 468-point mesh of every face frame of a recording (`worker.extract.Recording`, one tracking
pass). Steps:

1. **Head motion out.** Every frame is mapped onto a reference shape by the least-squares similarity (roll,
   scale, shift; `worker.landmarks` does the same for the model's slots) fitted on rigid points: the nose bridge
   and tip, the inner eye corners and the face outline at eye level.
2. **Neutral.** The recording's own neutral shape: the mean aligned shape over its most neutral frames, i.e. the
   fifth of the frames lowest on a task-specific signed feature (mouth width for smile and spread, brow-to-eye
   distance for brow, minus it for frown, eye opening for squeeze_eyes, lip opening for open and clench_teeth,
   minus mouth width for kiss and blow) and, at rest, the stillest fifth. Frames are aligned again onto it.
   Displacements from neutral are in inter-ocular units (the neutral eye-centre distance).
3. **Activation.** Per task, the mean displacement of the regions the task moves (smile: mouth corners and lips;
   frown, brow: brows; squeeze_eyes: eyes; clench_teeth, open: lips and jaw; blow, kiss: lips; spread: mouth
   corners and lips), smoothed with a Gaussian of 0.08 s.
4. **Repetitions** by hysteresis, relative to the recording's own range and a noise floor: an episode is a span
   above the low threshold (baseline + 20% of the range) that reaches the high one (baseline + 50%); its onset
   and offset are pushed out to where the activation falls to baseline + 10%; episodes closer than 0.2 s merge;
   shorter than the task's minimum (0.3 s; 0.4 s for squeeze_eyes, so that a blink is not a squeeze) are
   dropped. A range under the noise floor (max(0.008 IOD, 6 x the frame-to-frame noise)) means no movement.
   An episode cut by the start or end of a face-presence run is `partial` (half a repetition).
5. **Windows.** Each repetition gets the Tp-frame windows that cover it: one centred on it (clamped to its run)
   when it fits, else windows every Tp/2 across it. sit_at_rest (and a recording with no movement) is tiled with
   non-overlapping windows over every run. A run shorter than Tp gives one window padded by the contract's rule.

Everything works in frames at the recording's fps (the extractor resamples to the contract's fps), so any frame
rate and length the upload accepts works.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from model.contract import TORONTO_EXPRESSIONS

# ---- mesh indices (MediaPipe 468; left/right are the subject's own) -----------------------------------------
RIGID = (1, 4, 5, 6, 168, 195, 197, 133, 362, 234, 454)   # nose bridge/tip, inner eye corners, face outline
EYE_CENTRES = {"right": (33, 133), "left": (263, 362)}
MOUTH_CORNERS = {"right": (61, 78), "left": (291, 308)}
BROWS = {"right": (70, 63, 105, 66, 107, 55, 65, 52, 53), "left": (300, 293, 334, 296, 336, 285, 295, 282, 283)}
EYES = {"right": (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246),
        "left": (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)}
UPPER_LIP = {"right": (37, 39, 40, 185, 82, 81, 80, 191), "left": (267, 269, 270, 409, 312, 311, 310, 415),
             "centre": (0, 13)}
LOWER_LIP = {"right": (84, 181, 91, 146, 87, 178, 88, 95), "left": (314, 405, 321, 375, 317, 402, 318, 324),
             "centre": (17, 14)}
NOSE = {"right": (98, 129, 49, 64), "left": (327, 358, 279, 294)}
JAW = {"right": (148, 176, 149), "left": (377, 400, 378), "centre": (152, 175, 199)}
LID_PAIRS = ((159, 145), (158, 153), (160, 144), (386, 374), (385, 380), (387, 373))


def _pts(*groups: dict) -> tuple[int, ...]:
    return tuple(sorted({i for g in groups for side in g.values() for i in side}))


TASK_POINTS: dict[str, tuple[int, ...]] = {
    "smile": _pts(MOUTH_CORNERS, UPPER_LIP, LOWER_LIP),
    "spread": _pts(MOUTH_CORNERS, UPPER_LIP, LOWER_LIP),
    "frown": _pts(BROWS),
    "brow": _pts(BROWS),
    "squeeze_eyes": _pts(EYES),
    "clench_teeth": _pts(MOUTH_CORNERS, UPPER_LIP, LOWER_LIP, JAW),
    "open": _pts(MOUTH_CORNERS, UPPER_LIP, LOWER_LIP, JAW),
    "blow": _pts(MOUTH_CORNERS, UPPER_LIP, LOWER_LIP),
    "kiss": _pts(MOUTH_CORNERS, UPPER_LIP, LOWER_LIP),
    "sit_at_rest": _pts(MOUTH_CORNERS, UPPER_LIP, LOWER_LIP, BROWS, JAW),
}
# repetitions the web form asks for (service/api/routes/web.py): three for PFED5, five for Toronto NeuroFace
EXPECTED_REPETITIONS: dict[str, int] = {e: (5 if e in TORONTO_EXPRESSIONS else 3) for e in TASK_POINTS}
EXPECTED_REPETITIONS["sit_at_rest"] = 0

# findings (stable codes; see docs/api.md)
FEWER_REPETITIONS = "fewer_repetitions_than_asked"
NO_MOVEMENT = "no_movement"
BY_FACE_PRESENCE = "segmented_by_face_presence"
PARTIAL_REPETITION = "partial_repetition"
ONLY_PARTIAL = "only_partial_repetitions"
SHORT_CLIP_PADDED = "short_clip_padded"
REPETITIONS_DISAGREE = "repetitions_disagree"
MORE_REPETITIONS = "more_repetitions_than_asked"


@dataclass(frozen=True)
class SegmentParams:
    smooth_s: float = 0.08          # Gaussian sigma of the activation smoothing
    neutral_share: float = 0.2      # share of frames the neutral shape is averaged over
    low: float = 0.2                # hysteresis thresholds, share of the recording's activation range
    high: float = 0.5
    edge: float = 0.1               # onset/offset pushed out to this level
    merge_gap_s: float = 0.2
    min_duration_s: float = 0.3
    min_duration_eyes_s: float = 0.4
    noise_floor_iod: float = 0.008  # smallest range that counts as movement (mean over the task points)
    noise_k: float = 6.0            # ... or this many times the frame-to-frame noise


@dataclass
class Episode:
    onset: int                      # rows of the recording (inclusive)
    peak: int
    offset: int
    partial: bool = False
    run: int = 0


@dataclass
class Segmentation:
    expression: str
    fps: float
    iod: float                      # neutral inter-ocular distance (crop px)
    aligned: np.ndarray             # (N, 468, 2) mesh aligned onto the neutral shape, crop px
    neutral: np.ndarray             # (468, 2)
    disp: np.ndarray                # (N, 468, 2) displacement from neutral, IOD units
    activation: np.ndarray          # (N,) smoothed task activation, IOD units
    runs: list                      # [(start, stop)] rows of each face-presence run
    episodes: list = field(default_factory=list)
    baseline: float = 0.0
    range: float = 0.0
    noise: float = 0.0
    findings: list = field(default_factory=list)


# ---- geometry --------------------------------------------------------------------------------------------------
def _c(xy: np.ndarray) -> np.ndarray:
    return xy[..., 0].astype(np.float64) + 1j * xy[..., 1].astype(np.float64)


def align(mesh: np.ndarray, ref: np.ndarray, anchors=RIGID) -> np.ndarray:
    """(N, P, 2) points mapped onto `ref` (P, 2) by the least-squares similarity fitted on the anchor points."""
    z, r = _c(mesh), _c(ref)
    za, ra = z[:, list(anchors)], r[list(anchors)]
    mu, mu_r = za.mean(1, keepdims=True), ra.mean()
    src, dst = za - mu, ra - mu_r
    a = (np.conj(src) * dst[None]).sum(1, keepdims=True) / np.maximum((np.abs(src) ** 2).sum(1, keepdims=True), 1e-12)
    out = a * (z - mu) + mu_r
    return np.stack([out.real, out.imag], -1)


def interocular(mesh: np.ndarray) -> np.ndarray:
    le = mesh[..., list(EYE_CENTRES["left"]), :].mean(-2)
    re = mesh[..., list(EYE_CENTRES["right"]), :].mean(-2)
    return np.linalg.norm(le - re, axis=-1)


def _width(m: np.ndarray) -> np.ndarray:
    return np.linalg.norm(m[:, 291] - m[:, 61], axis=-1)


def _brow_eye(m: np.ndarray) -> np.ndarray:
    brows = m[:, list(BROWS["left"] + BROWS["right"]), 1].mean(1)
    eyes = m[:, list(EYES["left"] + EYES["right"]), 1].mean(1)
    return eyes - brows                                     # image y grows downwards


def eye_opening(m: np.ndarray) -> np.ndarray:
    """(N,) mean upper-to-lower lid distance over six lid pairs (same units as m)."""
    return np.mean([m[:, lo, 1] - m[:, up, 1] for up, lo in LID_PAIRS], axis=0)


def lip_gap(m: np.ndarray) -> np.ndarray:
    """(N,) inner lip opening (13 -> 14)."""
    return m[:, 14, 1] - m[:, 13, 1]


def _neutral_feature(expression: str, m: np.ndarray, fps: float) -> np.ndarray:
    """Per frame, a value whose low end is the neutral face for this task."""
    if expression in ("smile", "spread"):
        return _width(m)
    if expression in ("kiss", "blow"):
        return -_width(m)
    if expression == "brow":
        return _brow_eye(m)
    if expression == "frown":
        inner = np.linalg.norm(m[:, 336] - m[:, 107], axis=-1)
        return -_brow_eye(m) - inner
    if expression == "squeeze_eyes":
        return -eye_opening(m)
    if expression in ("open", "clench_teeth"):
        return (m[:, 17, 1] - m[:, 0, 1]) + (0.5 * _width(m) if expression == "clench_teeth" else 0.0)
    # sit_at_rest: stillness (speed of the expression points, lightly smoothed)
    pts = list(TASK_POINTS["sit_at_rest"])
    v = np.r_[0.0, np.linalg.norm(np.diff(m[:, pts], axis=0), axis=-1).mean(1)]
    return _gauss(v, max(1.0, 0.1 * fps))


def _gauss(x: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0 or x.size < 3:
        return x.astype(np.float64)
    r = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    xp = np.pad(x.astype(np.float64), r, mode="edge")
    return np.convolve(xp, k, mode="valid")


def smooth_runs(x: np.ndarray, runs: list, sigma: float) -> np.ndarray:
    """Gaussian smoothing of (N,) or (N, ...) along time, never across face-presence runs."""
    out = np.empty(x.shape, np.float64)
    flat = x.reshape(len(x), -1)
    o = out.reshape(len(x), -1)
    for a, b in runs:
        for j in range(flat.shape[1]):
            o[a:b, j] = _gauss(flat[a:b, j], sigma)
    return out


# ---- segmentation ----------------------------------------------------------------------------------------------
def segment(mesh: np.ndarray, runs: list, expression: str, fps: float,
            params: SegmentParams | None = None) -> Segmentation:
    """Neutral, displacements, activation and repetitions of one recording (see the module docstring).
    `mesh` (N, 468, 2) in any consistent pixel units; `runs` the [start, stop) rows of face-presence runs."""
    p = params or SegmentParams()
    mesh = np.asarray(mesh, np.float64)[..., :2]
    n = len(mesh)
    ref = np.median(mesh, axis=0)
    aligned = align(mesh, ref)
    feat = _neutral_feature(expression, aligned, fps)
    k = max(1, int(round(p.neutral_share * n)))
    neutral = aligned[np.argsort(feat, kind="stable")[:k]].mean(0)
    aligned = align(mesh, neutral)                       # once more, onto the neutral shape itself
    feat = _neutral_feature(expression, aligned, fps)
    neutral = aligned[np.argsort(feat, kind="stable")[:k]].mean(0)
    iod = float(max(interocular(neutral), 1e-6))
    disp = (aligned - neutral) / iod
    pts = list(TASK_POINTS[expression])
    raw = np.linalg.norm(disp[:, pts], axis=-1).mean(1)
    act = smooth_runs(raw, runs, p.smooth_s * fps)
    seg = Segmentation(expression, fps, iod, aligned.astype(np.float32), neutral.astype(np.float32),
                       disp.astype(np.float32), act.astype(np.float32), list(runs))
    if len(runs) > 1:
        seg.findings.append(BY_FACE_PRESENCE)
    if expression == "sit_at_rest":
        return seg
    _episodes(seg, raw, p)
    return seg


def _episodes(seg: Segmentation, raw: np.ndarray, p: SegmentParams) -> None:
    act, fps = seg.activation.astype(np.float64), seg.fps
    diffs = np.concatenate([np.diff(raw[a:b]) for a, b in seg.runs if b - a > 1] or [np.zeros(1)])
    noise = float(1.4826 * np.median(np.abs(diffs - np.median(diffs))) / np.sqrt(2))
    base, top = float(np.percentile(act, 10)), float(np.percentile(act, 99))
    rng = top - base
    seg.baseline, seg.range, seg.noise = base, rng, noise
    if rng < max(p.noise_floor_iod, p.noise_k * noise):
        seg.findings.append(NO_MOVEMENT)
        return
    lo_t, hi_t, edge_t = base + p.low * rng, base + p.high * rng, base + p.edge * rng
    min_len = (p.min_duration_eyes_s if seg.expression == "squeeze_eyes" else p.min_duration_s) * fps
    gap = int(round(p.merge_gap_s * fps))
    for r, (a, b) in enumerate(seg.runs):
        x = act[a:b]
        above = x > lo_t
        spans = []
        i = 0
        while i < len(x):
            if not above[i]:
                i += 1
                continue
            j = i
            while j + 1 < len(x) and above[j + 1]:
                j += 1
            if x[i:j + 1].max() > hi_t:
                spans.append([i, j])
            i = j + 1
        merged: list[list[int]] = []
        for s in spans:
            if merged and s[0] - merged[-1][1] - 1 <= gap:
                merged[-1][1] = s[1]
            else:
                merged.append(s)
        for on, off in merged:
            while on > 0 and x[on - 1] > edge_t and x[on - 1] <= x[on]:
                on -= 1
            while off < len(x) - 1 and x[off + 1] > edge_t and x[off + 1] <= x[off]:
                off += 1
            partial = (on == 0 and x[0] > lo_t) or (off == len(x) - 1 and x[-1] > lo_t)
            if off - on + 1 < (0.75 * min_len if partial else min_len):    # a cut-off one may be shorter
                continue
            peak = on + int(np.argmax(x[on:off + 1]))
            seg.episodes.append(Episode(a + on, a + peak, a + off, bool(partial), r))
    complete = [e for e in seg.episodes if not e.partial]
    if not seg.episodes:
        seg.findings.append(NO_MOVEMENT)
    elif not complete:
        seg.findings.append(ONLY_PARTIAL)
    elif len(complete) < len(seg.episodes):
        seg.findings.append(PARTIAL_REPETITION)
    asked = EXPECTED_REPETITIONS.get(seg.expression, 0)
    if asked and len(complete) < asked:
        seg.findings.append(FEWER_REPETITIONS)
    elif asked and len(complete) > asked:
        seg.findings.append(MORE_REPETITIONS)


# ---- windows ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WindowPlan:
    start: int                      # rows [start, stop) of one run
    stop: int
    episode: int | None             # index into Segmentation.episodes, None for tiling windows


def plan_windows(seg: Segmentation, tp: int) -> list[WindowPlan]:
    """The model windows (rows) that cover each repetition, or tile the recording when there is none."""
    out: list[WindowPlan] = []
    if seg.episodes:
        for k, e in enumerate(seg.episodes):
            a, b = seg.runs[e.run]
            if b - a <= tp:
                out.append(WindowPlan(a, b, k))
                continue
            length = e.offset - e.onset + 1
            if length <= tp:
                centre = (e.onset + e.offset + 1) / 2
                s = int(round(centre - tp / 2))
                starts = [min(max(s, a), b - tp)]
            else:
                step = tp // 2
                first = max(a, e.onset - step // 2)
                last = min(b - tp, e.offset + 1 + step // 2 - tp)
                count = max(1, int(np.ceil((last - first) / step)) + 1)
                starts = sorted({int(round(v)) for v in np.linspace(first, max(first, last), count)})
            out.extend(WindowPlan(s, s + tp, k) for s in starts)
        return out
    for a, b in seg.runs:                                  # rest, or no movement found: tile every run
        if b - a <= tp:
            out.append(WindowPlan(a, b, None))
            continue
        count = int(np.ceil((b - a) / tp))
        starts = np.round(np.linspace(a, b - tp, count)).astype(int)
        out.extend(WindowPlan(int(s), int(s) + tp, None) for s in starts)
    return out
