"""Find the task's repetitions in a whole recording and place the model windows on them (issue 12).

Input: the full 468-point mesh of every face frame of a recording (`worker.extract.Recording`, one tracking
pass). Steps:

1. **Head motion out.** Every frame is mapped onto a reference shape by the least-squares similarity (roll,
   scale, shift; `worker.landmarks` does the same for the model's slots) fitted on rigid points: the nose bridge
   and tip, the inner eye corners and the face outline at eye level.
2. **Neutral.** The recording's own neutral shape: the mean aligned shape over its most neutral frames, i.e. the
   0.4 s of frames (at most a fifth of the recording) lowest on a task-specific signed feature (mouth width for smile and spread, brow-to-eye
   distance for brow, minus it for frown, eye opening for squeeze_eyes, lip opening for open and clench_teeth,
   minus mouth width for kiss and blow) and, at rest, the stillest fifth. Frames are aligned again onto it.
   Displacements from neutral are in inter-ocular units (the neutral eye-centre distance).
3. **Activation.** Per task, the regions the task moves (smile: mouth corners and lips; frown, brow: brows;
   squeeze_eyes: eyes; clench_teeth, open: lips and jaw; kiss: lips; blow: lips and the lower cheeks with the
   face's edge beside them; spread: mouth corners and lips). First the mean displacement of their points (a
   distance); then their displacements projected on the recording's own movement pattern (the mean displacement
   over the frames in the upper half of that distance's range, found twice: from the distance, then from the
   projection), scaled to read as the pattern's mean point distance (IOD). Along the pattern, landmark jitter and
   a tremor's swing average out instead of adding up as a distance does, and points the tracker hardly moves
   weigh nothing. Each signal goes through a 3-frame running median (an outlier frame of the tracker) and a
   Gaussian of 0.08 s (edges mirrored).
4. **Repetitions**, relative to the recording's own range (from the neutral frames' activation to the largest)
   and a noise floor: every peak above baseline + 30% of the range (a weak, tired repetition still counts) and
   as prominent (a shelf on another peak's slope is not a repetition), highest first, claims the span where the
   activation stays above half the peak's height (so an incomplete return to neutral afterwards, common in
   trackers and patients, does not stretch the episode); onset and offset then follow the slope down until it
   flattens or reaches baseline + 10%. Episodes closer than 0.2 s merge; shorter than the task's minimum (0.3 s;
   0.4 s for squeeze_eyes, so that a blink is not a squeeze) are dropped. A range under the noise floor
   (max(0.008 IOD, 6 x the noise of the smoothed activation, `smoothed_noise`)) means no movement. An episode whose half-height span is cut by
   the start or end of a face-presence run is `partial` (half a repetition).
5. **Windows.** Each repetition gets the Tp-frame windows that cover it: one starting 0.3 s before its onset
   (`LEAD_S`, clamped to its run) when it fits, else windows every Tp/2 across it from there. The window's
   first frame is then always the face just before this movement (the model's coordinates and difference
   frames are relative to it), wherever the movement sits in the recording; each placement is scored together with its shifts by
   +-0.16 s (`JITTER_S`), so a few frames of segmentation error hardly move the score. sit_at_rest is tiled
   with non-overlapping windows over every run. A task recording with no movement found gets one window centred on its largest activation (its best
   attempt; the score then does not depend on the still time around it). A run shorter than Tp gives one window
   padded by the contract's rule.

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
# the lower cheek between the mouth corner and the face's edge, and that edge (what a puff of the cheeks moves)
CHEEKS = {"right": (207, 192, 187, 147, 213, 93, 132, 58, 172, 136),
          "left": (427, 416, 411, 376, 433, 323, 361, 288, 397, 365)}
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
    "blow": _pts(MOUTH_CORNERS, UPPER_LIP, LOWER_LIP, CHEEKS),
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
    despike_s: float = 0.08         # ... after a running median over this long (an outlier of a frame)
    neutral_s: float = 0.4          # the neutral shape is the mean of this much time of the most neutral frames
    neutral_share: float = 0.2      # ... but of at most this share of the recording
    high: float = 0.3               # a peak must rise above this share of the recording's activation range
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
    neutral_rows: np.ndarray | None = None   # the frames the neutral shape was averaged over


# ---- geometry --------------------------------------------------------------------------------------------------
def _c(xy: np.ndarray) -> np.ndarray:
    return xy[..., 0].astype(np.float64) + 1j * xy[..., 1].astype(np.float64)


def align(mesh: np.ndarray, ref: np.ndarray, anchors: tuple[int, ...] = RIGID) -> np.ndarray:
    """(N, P, 2) points mapped onto `ref` (P, 2) by the least-squares similarity fitted on the anchor points."""
    z, r = _c(mesh), _c(ref)
    za, ra = z[:, list(anchors)], r[list(anchors)]
    mu, mu_r = za.mean(1, keepdims=True), ra.mean()
    src, dst = za - mu, ra - mu_r
    a = (np.conj(src) * dst[None]).sum(1, keepdims=True) / np.maximum((np.abs(src) ** 2).sum(1, keepdims=True), 1e-12)
    out = a * (z - mu) + mu_r
    return np.stack([out.real, out.imag], -1)


def mesh_interocular(mesh: np.ndarray) -> np.ndarray:
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
    # edges mirrored: the first and last frames weigh as much as any other (repeating one edge frame, say a
    # tremor's or the tracker's first frame's extreme, would pull the smoothed edge towards it)
    xp = np.pad(x.astype(np.float64), r, mode="symmetric")
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
    # a fixed amount of time, not a share of the recording: the neutral (and with it every threshold) must not
    # change when still time is added before or after the movement
    k = max(1, min(int(round(p.neutral_s * fps)), int(round(p.neutral_share * n))))
    neutral = aligned[np.argsort(feat, kind="stable")[:k]].mean(0)
    aligned = align(mesh, neutral)                       # once more, onto the neutral shape itself
    feat = _neutral_feature(expression, aligned, fps)
    rows = np.argsort(feat, kind="stable")[:k]
    neutral = aligned[rows].mean(0)
    iod = max(float(mesh_interocular(neutral)), 1e-6)
    disp = (aligned - neutral) / iod
    pts = list(TASK_POINTS[expression])
    width = max(3, int(round(p.despike_s * fps)) // 2 * 2 + 1)
    raw = _despike(np.linalg.norm(disp[:, pts], axis=-1).mean(1), runs, width)
    act = smooth_runs(raw, runs, p.smooth_s * fps)
    if expression != "sit_at_rest":
        for _ in range(2):           # the pattern from the distance, then once more from the pattern's own peaks
            raw = _despike(_along_pattern(disp[:, pts], act, np.sort(rows)), runs, width)
            act = smooth_runs(raw, runs, p.smooth_s * fps)
    seg = Segmentation(expression, fps, iod, aligned.astype(np.float32), neutral.astype(np.float32),
                       disp.astype(np.float32), act.astype(np.float32), list(runs))
    seg.neutral_rows = np.sort(rows)
    if len(runs) > 1:
        seg.findings.append(BY_FACE_PRESENCE)
    if expression == "sit_at_rest":
        return seg
    _episodes(seg, p)
    return seg


def _despike(x: np.ndarray, runs: list, width: int) -> np.ndarray:
    """Running median of `width` (odd) frames per run, shrinking towards the run's ends: an outlier of a frame or
    two (the tracker's first frames on a new face often sit a little off) is no movement."""
    out = x.astype(np.float64).copy()
    h = width // 2
    for a, b in runs:
        y = x[a:b].astype(np.float64)
        n = len(y)
        if n < 3 or h < 1:
            continue
        for i in range(n):
            k = min(h, max(1, i), max(1, n - 1 - i))     # the ends: the median of their first three
            lo = min(max(0, i - k), n - (2 * k + 1))
            out[a + i] = np.median(y[max(0, lo):max(0, lo) + 2 * k + 1])
    return out


def _along_pattern(d: np.ndarray, act: np.ndarray, neutral_rows: np.ndarray) -> np.ndarray:
    """(N,) the task points' displacements `d` (N, P, 2) projected on the recording's own movement pattern: the
    mean displacement over the frames where the distance-based activation `act` is in the upper half of its range
    (from the neutral frames' level). Scaled so that the pattern itself reads as its mean point distance (IOD),
    like the distance it replaces. A distance adds every point's jitter (and a tremor's swing) up as movement;
    along the pattern they average out, and points the movement does not reach (or the tracker does not follow)
    weigh nothing, so a weak repetition in a noisy or trembling face stands out."""
    flat = d.reshape(len(d), -1).astype(np.float64)
    base = float(np.median(act[neutral_rows])) if len(neutral_rows) else float(act.min())
    top = float(act.max())
    sel = act >= base + 0.5 * (top - base)
    t = flat[sel].mean(0) if sel.any() else flat.mean(0)
    tt = float(t @ t)
    if tt <= 1e-18:
        return np.zeros(len(d))
    scale = float(np.linalg.norm(t.reshape(-1, 2), axis=-1).mean())
    return flat @ t / tt * scale


def smoothed_noise(act: np.ndarray, runs: list, sigma: float) -> float:
    """Robust standard deviation of the noise left in an activation smoothed by a Gaussian of `sigma` frames,
    from its frame-to-frame differences: for smoothed white noise, std(diff) = std * sqrt(2 (1 - rho1)) with the
    lag-1 correlation rho1 = exp(-1 / (4 sigma^2)). Measured on the smoothed signal, not the raw one, so that
    what the smoothing removes (landmark jitter, a 4-6 Hz tremor) does not count against a movement."""
    diffs = np.concatenate([np.diff(act[a:b]) for a, b in runs if b - a > 1] or [np.zeros(1)])
    mad = float(1.4826 * np.median(np.abs(diffs - np.median(diffs))))
    rho1 = float(np.exp(-1.0 / (4.0 * sigma ** 2))) if sigma > 0 else 0.0
    return mad / np.sqrt(2.0 * (1.0 - rho1))


def _episodes(seg: Segmentation, p: SegmentParams) -> None:
    act, fps = seg.activation.astype(np.float64), seg.fps
    noise = smoothed_noise(act, seg.runs, p.smooth_s * fps)
    # baseline: the activation of the neutral frames themselves; top: the largest movement (both independent of
    # how much still time the recording has)
    base = float(np.median(act[seg.neutral_rows])) if seg.neutral_rows is not None else float(np.percentile(act, 10))
    top = float(act.max())
    rng = top - base
    seg.baseline, seg.range, seg.noise = base, rng, noise
    if rng < max(p.noise_floor_iod, p.noise_k * noise):
        seg.findings.append(NO_MOVEMENT)
        return
    hi_t, edge_t = base + p.high * rng, base + p.edge * rng
    min_len = (p.min_duration_eyes_s if seg.expression == "squeeze_eyes" else p.min_duration_s) * fps
    gap = int(round(p.merge_gap_s * fps))
    for r, (a, b) in enumerate(seg.runs):
        x = act[a:b]
        for on, pk, off, partial in _peaks(x, base, hi_t, edge_t, gap):
            if off - on + 1 < (0.75 * min_len if partial else min_len):    # a cut-off one may be shorter
                continue
            seg.episodes.append(Episode(a + on, a + pk, a + off, bool(partial), r))
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


def _prominence(x: np.ndarray, pk: int) -> float:
    """How far the peak at pk rises above the higher of its two bases: the lowest point between it and the
    nearest higher activation on each side. A side that runs to the run's end without anything higher has no
    base (a movement cut by the end of the recording is still a movement)."""
    lo = pk
    while lo > 0 and x[lo - 1] <= x[pk]:
        lo -= 1
    hi = pk
    while hi < len(x) - 1 and x[hi + 1] <= x[pk]:
        hi += 1
    bases = []
    if lo > 0:                                   # stopped at something higher on the left
        bases.append(x[lo:pk + 1].min())
    if hi < len(x) - 1:
        bases.append(x[pk:hi + 1].min())
    if not bases:
        bases.append(x.min())
    return float(x[pk] - max(bases))


def _peaks(x: np.ndarray, base: float, hi_t: float, edge_t: float, gap: int) -> list[tuple[int, int, int, bool]]:
    """Movement episodes in one run's activation: every peak above `hi_t`, highest first, claims the span around
    it where the activation stays above half its height over the baseline (half-height edges do not depend on
    whether the face comes all the way back to neutral afterwards, which trackers and patients often do not),
    then the edges follow the slope down to where it flattens or reaches `edge_t`. Spans closer than `gap`
    frames merge. An episode whose half-height span reaches the run's start or end is partial."""
    n = len(x)
    claimed = np.zeros(n, bool)
    spans: list[list] = []
    for pk in np.argsort(-x, kind="stable"):
        if x[pk] <= hi_t:
            break
        if claimed[pk] or (pk > 0 and x[pk - 1] > x[pk]) or (pk < n - 1 and x[pk + 1] > x[pk]):
            continue                                   # inside another episode, or not a local maximum
        if _prominence(x, int(pk)) < hi_t - base:       # a shelf on another peak's slope, not a movement
            continue
        half = base + 0.5 * (x[pk] - base)
        lo, hi = pk, pk
        while lo > 0 and x[lo - 1] > half and not claimed[lo - 1]:
            lo -= 1
        while hi < n - 1 and x[hi + 1] > half and not claimed[hi + 1]:
            hi += 1
        partial = (lo == 0 and x[0] > half) or (hi == n - 1 and x[-1] > half)
        step = 0.01 * (x[pk] - base)                   # "still falling": more than 1% of the height a frame
        while lo > 0 and not claimed[lo - 1] and x[lo - 1] > edge_t and x[lo - 1] < x[lo] - step:
            lo -= 1
        while hi < n - 1 and not claimed[hi + 1] and x[hi + 1] > edge_t and x[hi + 1] < x[hi] - step:
            hi += 1
        claimed[lo:hi + 1] = True
        spans.append([lo, int(pk), hi, partial])
    spans.sort()
    merged: list[list] = []
    for sp in spans:
        if merged and sp[0] - merged[-1][2] - 1 <= gap:
            last = merged[-1]
            last[1] = last[1] if x[last[1]] >= x[sp[1]] else sp[1]
            last[2], last[3] = sp[2], last[3] or sp[3]
        else:
            merged.append(sp)
    return [(int(a), int(k), int(b), bool(p)) for a, k, b, p in merged]


# ---- windows ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WindowPlan:
    start: int                      # rows [start, stop) of one run
    stop: int
    episode: int | None             # index into Segmentation.episodes, None for tiling windows


LEAD_S = 0.3                     # a repetition's window starts this long before its onset
JITTER_S = (-0.16, 0.0, 0.16)   # each placed window is also scored shifted by these offsets (s)


def _jittered(start: int, a: int, b: int, tp: int, fps: float) -> list[int]:
    """`start` and its shifts by JITTER_S, clamped to the run [a, b): a network's score moves with the exact
    frame a window starts on (the demo models by up to ~0.5 for a 2-frame shift), so every placement is the
    mean over a few nearby windows: the score then hardly depends on a few frames of segmentation error."""
    out = []
    for d in JITTER_S:
        s = min(max(start + int(round(d * fps)), a), b - tp)
        if s not in out:
            out.append(s)
    return out


def plan_windows(seg: Segmentation, tp: int) -> list[WindowPlan]:
    """The model windows (rows) that cover each repetition (each placement with its JITTER_S shifts), or, at
    rest, tile the recording; with no movement found, the windows on the largest movement."""
    out: list[WindowPlan] = []
    fps = seg.fps
    if seg.episodes:
        for k, e in enumerate(seg.episodes):
            a, b = seg.runs[e.run]
            if b - a <= tp:
                out.append(WindowPlan(a, b, k))
                continue
            length = e.offset - e.onset + 1
            lead = int(round(LEAD_S * fps))
            if length + lead <= tp:
                starts = [e.onset - lead]            # the window starts just before the movement
            else:
                step = tp // 2
                first = max(a, e.onset - lead)
                last = min(b - tp, e.offset + 1 + step // 2 - tp)
                count = max(1, int(np.ceil((last - first) / step)) + 1)
                starts = sorted({int(round(v)) for v in np.linspace(first, max(first, last), count)})
            seen: list[int] = []
            for s0 in starts:
                seen.extend(s for s in _jittered(s0, a, b, tp, fps) if s not in seen)
            out.extend(WindowPlan(s, s + tp, k) for s in seen)
        return out
    if seg.expression != "sit_at_rest" and seg.runs:
        # no repetition found: windows on the recording's largest movement (its best attempt), so that the
        # score does not depend on how much still time surrounds it
        act = smooth_runs(seg.activation, seg.runs, 0.25 * seg.fps)
        peak = int(np.argmax(act))
        a, b = next((a, b) for a, b in seg.runs if a <= peak < b)
        if b - a <= tp:
            return [WindowPlan(a, b, None)]
        return [WindowPlan(s, s + tp, None) for s in _jittered(peak - tp // 2, a, b, tp, fps)]
    for a, b in seg.runs:                                  # rest: tile every run
        if b - a <= tp:
            out.append(WindowPlan(a, b, None))
            continue
        count = int(np.ceil((b - a) / tp))
        tiles = np.round(np.linspace(a, b - tp, count)).astype(int)
        out.extend(WindowPlan(int(s), int(s) + tp, None) for s in tiles)
    return out
