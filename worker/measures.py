"""Movement measures, computed from the tracked mesh, not learned (issue 12).

Everything is measured on the segmentation's displacements (`worker.segment.Segmentation.disp`): the full
468-point mesh of every face frame mapped onto the recording's own neutral shape (head motion removed), in
inter-ocular units (IOD: the neutral distance between the eye centres). Per region the displacement is the mean
distance of the region's points from neutral, smoothed with the segmentation's Gaussian; left and right use the
mirrored point groups (the subject's own sides).

`MEASURES` lists every measure (name, unit as UCUM, one-line meaning); docs/api.md repeats it, the web form and
FHIR read it from here.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from worker import segment as sg

REGIONS: dict[str, Mapping[str, tuple[int, ...]]] = {
    "brows": sg.BROWS,
    "eyes": sg.EYES,
    "nose": sg.NOSE,
    "upper_lip": sg.UPPER_LIP,
    "lower_lip": sg.LOWER_LIP,
    "mouth_corners": sg.MOUTH_CORNERS,
}
# the region whose repetitions fatigue and variability are read from is the task's activation (segment.py)


@dataclass(frozen=True)
class Measure:
    name: str
    unit: str            # UCUM ("{IOD}" = an annotated ratio: inter-ocular distances)
    level: str           # "region" (per region and repetition), "repetition", "task" or "rest"
    meaning: str

    def to_dict(self) -> dict:
        return {"name": self.name, "unit": self.unit, "level": self.level, "meaning": self.meaning}


MEASURES: tuple[Measure, ...] = (
    Measure("rom_iod", "{IOD}", "region",
            "range of motion: the region's largest distance from its neutral position during the repetition "
            "(mean over the repetition's top fifth of frames)"),
    Measure("peak_speed_iod_s", "{IOD}/s", "region",
            "peak speed: the fastest change of the region's distance from neutral during the repetition"),
    Measure("time_to_peak_s", "s", "region",
            "time from the repetition's onset until the region first reaches 90% of its largest movement"),
    Measure("asymmetry", "1", "region",
            "left/right asymmetry of the range of motion of the mirrored point groups, |L - R| / (L + R): "
            "0 symmetric, 1 one side only "
            "(null when the region hardly moves)"),
    Measure("rom_left_iod", "{IOD}", "region",
            "range of motion of the region's points on the patient's left side (the L of the asymmetry); "
            "null for a region without sides (nose)"),
    Measure("rom_right_iod", "{IOD}", "region",
            "range of motion of the region's points on the patient's right side (the R of the asymmetry)"),
    Measure("amplitude_iod", "{IOD}", "repetition",
            "the task's movement at its peak: the task points' displacement along the recording's own peak "
            "pattern, averaged over the repetition's top fifth of frames, from neutral"),
    Measure("duration_s", "s", "repetition", "time from the repetition's onset to its offset"),
    Measure("fatigue", "1", "task",
            "relative change of amplitude from the first to the last repetition: (last - first) / first; "
            "negative = weaker at the end"),
    Measure("variability", "1", "task",
            "coefficient of variation of the repetitions' amplitudes (standard deviation / mean)"),
    Measure("blink_rate_per_min", "/min", "rest", "blinks per minute of face time"),
    Measure("spontaneous_movement_iod", "{IOD}", "rest",
            "slow (about 0.15-1.2 Hz) movement of the mouth corners or brows: 95th percentile of the region's "
            "mean distance from its running mean (Gaussian, 1.2 s), the larger of the two regions; tremor and "
            "drift (posture, light) are left out"),
    Measure("lips_apart_share", "1", "rest",
            "share of the time with the lips apart (inner lip gap over 0.025 IOD)"),
    Measure("tremor_power_iod2", "{IOD^2}", "rest",
            "power of the lip and jaw vertical movement in the 4-6 Hz band (Welch spectrum)"),
    Measure("tremor_peak_hz", "Hz", "rest", "frequency of the strongest lip/jaw movement between 3 and 8 Hz"),
)
MEASURE_BY_NAME = {m.name: m for m in MEASURES}

LIPS_APART_IOD = 0.025      # inner lip gap (13 -> 14) that counts as lips apart (~1.5 mm)
BLINK_DROP = 0.85           # eye aspect ratio below this share of its running median is a blink
MIN_MOVING_IOD = 0.01       # asymmetry is undefined below this range of motion (the region did not move)
TREMOR_BAND = (4.0, 6.0)


def _r(v: float | None, nd: int = 4) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), nd)


def _side_points(groups: Mapping[str, tuple[int, ...]]) -> tuple[list[int], list[int], list[int]]:
    every = sorted({i for side in groups.values() for i in side})
    return every, list(groups.get("left", ())), list(groups.get("right", ()))


def region_signals(seg: sg.Segmentation) -> dict[str, dict[str, np.ndarray]]:
    """Per region: smoothed distance from neutral over time, of all its points and of each side (IOD)."""
    mag = np.linalg.norm(seg.disp, axis=-1)                     # (N, 468)
    sigma = sg.SegmentParams().smooth_s * seg.fps
    out = {}
    for name, groups in REGIONS.items():
        every, left, right = _side_points(groups)
        raw = np.stack([mag[:, every].mean(1), mag[:, left].mean(1), mag[:, right].mean(1)], 1)
        sm = sg.smooth_runs(raw, seg.runs, sigma)
        out[name] = {"all": sm[:, 0], "left": sm[:, 1], "right": sm[:, 2]}
    return out


def _speed(x: np.ndarray, runs: list, fps: float) -> np.ndarray:
    v = np.zeros_like(x)
    for a, b in runs:
        if b - a > 2:
            v[a:b] = np.gradient(x[a:b]) * fps
    return np.abs(v)


def task_projection(seg: sg.Segmentation) -> np.ndarray:
    """(N,) the task points' displacement projected on the recording's own mean peak pattern (the mean
    displacement over every repetition's top fifth of activation), scaled so that the pattern itself reads as
    its mean point distance from neutral (IOD). Signed and averaged over points, so landmark jitter cancels
    instead of adding up as it does in a distance."""
    pts = list(sg.TASK_POINTS[seg.expression])
    d = seg.disp[:, pts].astype(np.float64).reshape(len(seg.disp), -1)
    rows = []
    for e in seg.episodes:
        a = seg.activation[e.onset:e.offset + 1]
        rows.extend(e.onset + np.argsort(a)[-max(1, len(a) // 5):])
    if not rows:
        return np.zeros(len(d))
    t = d[np.asarray(rows)].mean(0)
    tt = float(t @ t)
    if tt <= 0:
        return np.zeros(len(d))
    scale = float(np.linalg.norm(t.reshape(-1, 2), axis=-1).mean())
    return sg.smooth_runs(d @ t / tt * scale, seg.runs, sg.SegmentParams().smooth_s * seg.fps)


def repetition_measures(seg: sg.Segmentation, signals: dict | None = None) -> list[dict]:
    """Per repetition: amplitude and duration, and per region rom, peak speed, time to peak, asymmetry."""
    signals = signals or region_signals(seg)
    # speed from a smoother distance (0.1 s more): a derivative amplifies landmark jitter
    speeds = {k: _speed(sg.smooth_runs(s["all"], seg.runs, 0.1 * seg.fps), seg.runs, seg.fps)
              for k, s in signals.items()}
    along = task_projection(seg)
    out = []
    for e in seg.episodes:
        sl = slice(e.onset, e.offset + 1)
        regions = {}
        for name, s in signals.items():
            x = s["all"][sl]
            k = int(np.argmax(x >= 0.9 * x.max()))          # first reaching 90% of its largest movement
            top = max(1, len(x) // 5)
            rom = float(np.sort(x)[-top:].mean())           # the largest distance, over the top fifth of frames
            left = float(np.sort(s["left"][sl])[-top:].mean())
            right = float(np.sort(s["right"][sl])[-top:].mean())
            asym = abs(left - right) / (left + right) if max(left, right) >= MIN_MOVING_IOD else None
            sided = bool(np.isfinite(left) and np.isfinite(right)) and left + right > 0
            regions[name] = {"rom_iod": _r(rom), "peak_speed_iod_s": _r(speeds[name][sl].max()),
                             "time_to_peak_s": _r(k / seg.fps, 3), "asymmetry": _r(asym),
                             "rom_left_iod": _r(left) if sided else None,
                             "rom_right_iod": _r(right) if sided else None}
        act = np.sort(along[sl])
        amp = float(act[-max(1, len(act) // 5):].mean())           # the top fifth: the held peak
        out.append({"amplitude_iod": _r(amp), "duration_s": _r((e.offset - e.onset + 1) / seg.fps, 3),
                    "partial": e.partial, "regions": regions})
    return out


def _median(vals: list[float | None]) -> float | None:
    given = [v for v in vals if v is not None]
    return _r(float(np.median(given))) if given else None


def task_measures(reps: list[dict], episodes: list) -> dict:
    """Over repetitions (the complete ones when there are any): each region measure's median; fatigue and
    variability of the amplitudes."""
    use = [r for r, e in zip(reps, episodes, strict=True) if not e.partial] or reps
    regions = {name: {m: _median([r["regions"][name][m] for r in use])
                      for m in ("rom_iod", "peak_speed_iod_s", "time_to_peak_s", "asymmetry", "rom_left_iod",
                                "rom_right_iod")}
               for name in REGIONS} if use else {}
    amps = [r["amplitude_iod"] for r in use if r["amplitude_iod"] is not None]
    fatigue = (amps[-1] - amps[0]) / amps[0] if len(amps) >= 2 and amps[0] > 0 else None
    variability = float(np.std(amps) / np.mean(amps)) if len(amps) >= 2 and np.mean(amps) > 0 else None
    return {"regions": regions, "fatigue": _r(fatigue), "variability": _r(variability),
            "n_repetitions": len(use)}


# ---- at rest ---------------------------------------------------------------------------------------------------
def eye_aspect(m: np.ndarray) -> np.ndarray:
    """(N,) mean over both eyes of lid opening / eye width (corner to corner): unit-free, robust to head yaw."""
    out = []
    for side, (outer, inner) in sg.EYE_CENTRES.items():
        pairs = [p for p in sg.LID_PAIRS if (p[0] in sg.EYES[side])]
        opening = np.mean([m[:, lo, 1] - m[:, up, 1] for up, lo in pairs], axis=0)
        out.append(opening / np.maximum(np.linalg.norm(m[:, outer] - m[:, inner], axis=-1), 1e-6))
    return np.mean(out, axis=0)


def blinks(seg: sg.Segmentation) -> list[int]:
    """Rows where a blink is at its deepest: the eye aspect ratio below BLINK_DROP of its running open level (the
    75th percentile over 3 s) for at most 0.4 s (a longer closure, or a wink held, is not a blink); dips closer
    than 0.1 s are one."""
    ear = eye_aspect(seg.aligned.astype(np.float64))
    found: list[int] = []
    half = max(1, int(round(1.5 * seg.fps)))
    gap, longest = int(round(0.1 * seg.fps)), 0.4 * seg.fps
    for a, b in seg.runs:
        x = ear[a:b]
        if len(x) < 3:
            continue
        med = np.array([np.percentile(x[max(0, i - half):i + half + 1], 75) for i in range(len(x))])
        idx = np.flatnonzero(x < BLINK_DROP * med)
        if not idx.size:
            continue
        groups = np.split(idx, np.flatnonzero(np.diff(idx) > gap + 1) + 1)
        for g in groups:
            if g[-1] - g[0] + 1 <= longest:
                found.append(a + int(g[np.argmin(x[g])]))
    return found


def welch(x: np.ndarray, fs: float, nperseg: int) -> tuple[np.ndarray, np.ndarray]:
    """One-sided power spectral density by Welch's method (Hann window, 50% overlap, each segment's mean
    removed), density scaling as scipy.signal.welch (numpy only: scipy.signal costs seconds to import)."""
    x = np.asarray(x, np.float64)
    nperseg = min(nperseg, len(x))
    step = max(1, nperseg // 2)
    win = np.hanning(nperseg + 1)[:-1] if nperseg > 2 else np.ones(nperseg)   # periodic Hann
    scale = 1.0 / (fs * (win ** 2).sum())
    segs = [x[i:i + nperseg] for i in range(0, len(x) - nperseg + 1, step)]
    spec = np.mean([np.abs(np.fft.rfft((s - s.mean()) * win)) ** 2 for s in segs], axis=0) * scale
    if nperseg % 2 == 0:
        spec[1:-1] *= 2
    else:
        spec[1:] *= 2
    return np.fft.rfftfreq(nperseg, 1.0 / fs), spec


SPONTANEOUS_REGIONS = (sg.MOUTH_CORNERS, sg.BROWS)
SPONTANEOUS_DRIFT_S = 1.2      # slower movement than this Gaussian's passband is drift, not spontaneous movement


def spontaneous_movement(seg: sg.Segmentation) -> float:
    """The larger over the mouth corners and the brows of the 95th percentile of the region's mean distance from
    its running mean (IOD), in the band between a Gaussian of 0.15 s (passes < ~1.2 Hz: a tremor and jitter are
    left out) and one of 1.2 s (drift slower than ~0.15 Hz, of posture, light or the tracker, is left out too).
    Per region, not over the two together: a slight smile moves the corners only, and averaging them with the 18
    still brow points buried it under the brows' jitter. Validated on simulated patients with a known slow slight
    smile (bench.measures twitch_set); before, without the band and per region, the tracker's slow drift
    (~0.005-0.008 IOD) was as large as the tracked twitch and the rank order was lost (rho 0.2-0.76)."""
    out = 0.0
    fast, drift = 0.15 * seg.fps, SPONTANEOUS_DRIFT_S * seg.fps
    for groups in SPONTANEOUS_REGIONS:
        pts = sorted({i for side in groups.values() for i in side})
        d = seg.disp[:, pts].astype(np.float64)
        band = sg.smooth_runs(d, seg.runs, fast) - sg.smooth_runs(d, seg.runs, drift)
        dev = np.linalg.norm(band, axis=-1).mean(1)
        out = max(out, float(np.percentile(dev, 95)))
    return out


def rest_measures(seg: sg.Segmentation, signals: dict | None = None) -> dict:
    signals = signals or region_signals(seg)
    face_s = seg.disp.shape[0] / seg.fps
    n_blinks = len(blinks(seg))
    spont = spontaneous_movement(seg)
    gap = sg.lip_gap(seg.aligned.astype(np.float64)) / seg.iod
    apart = float(np.mean(gap > LIPS_APART_IOD))
    # lip and jaw vertical movement, drift removed, per run; Welch spectrum over the runs long enough
    pts = list(sg.LOWER_LIP["centre"] + sg.JAW["centre"] + sg.LOWER_LIP["left"][:2] + sg.LOWER_LIP["right"][:2])
    y = seg.disp[:, pts, 1].astype(np.float64).mean(1)
    powers, peaks, weights = [], [], []
    nper = int(min(2.56 * seg.fps, 128))
    for a, b in seg.runs:
        x = y[a:b]
        if len(x) < nper:
            continue
        x = x - sg._gauss(x, 0.25 * seg.fps)
        f, p = welch(x, seg.fps, nper)
        band = (f >= TREMOR_BAND[0]) & (f <= TREMOR_BAND[1])
        powers.append(float(np.trapezoid(p[band], f[band])) if band.sum() > 1 else float(p[band].sum() * f[1]))
        wide = (f >= 3.0) & (f <= 8.0)
        peaks.append(float(f[wide][np.argmax(p[wide])]))
        weights.append(b - a)
    tremor = float(np.average(powers, weights=weights)) if powers else None
    peak = float(peaks[int(np.argmax(weights))]) if peaks else None
    return {"blink_rate_per_min": _r(n_blinks / face_s * 60.0, 2) if face_s > 0 else None,
            "n_blinks": n_blinks, "spontaneous_movement_iod": _r(spont), "lips_apart_share": _r(apart, 3),
            "tremor_power_iod2": None if tremor is None else float(f"{tremor:.4g}"),
            "tremor_peak_hz": _r(peak, 2), "face_time_s": _r(face_s, 2)}


def compute(seg: sg.Segmentation) -> tuple[dict, list[dict]]:
    """(task-level measures, per-repetition measures) of one segmented recording. The rest block is there for
    sit_at_rest (and is computed the same way for any task when asked through `rest_measures`)."""
    signals = region_signals(seg)
    reps = repetition_measures(seg, signals)
    out = task_measures(reps, seg.episodes)
    out["rest"] = rest_measures(seg, signals) if seg.expression == "sit_at_rest" else None
    return out, reps
