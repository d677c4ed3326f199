"""Model windows on whole recordings: where training samples its windows and where serving places them.

Serving scores a whole recording by placing a Tp-frame window on each movement episode (repetition) and
aggregating the windows' scores; training must see windows drawn the same way. The rule for training is the
reference's random-window rule (a random window of the model's length inside the clip), applied per episode:

* an episode shorter than Tp: a random window that **contains the whole episode** (start drawn uniformly from
  the starts that keep onset..offset inside the window), kept clear of the neighbouring episodes where the
  pauses allow, so the window's first frame is at rest (the contract's coordinates and difference frames are
  relative to the window's first frame);
* an episode of Tp frames or more (and a recording at rest, which is one still period): a random window
  inside it;
* a recording shorter than Tp: the whole recording (the contract pads it).

`serving_windows` is the deterministic counterpart used to score held-out recordings here (the window centred
on each episode, or windows tiling a still recording) until the service's own placement is importable.

Episodes and windows of a recording come from the same code as serving (`recording_features`): the recording
is tracked once (`worker.extract.extract_recording`), its repetitions found by `worker.segment.segment`, and
every window cut from that one track (`Recording.window`). Training windows follow the rule above inside the
segmented episodes (per face-presence run); held-out recordings get serving's own windows
(`worker.segment.plan_windows`) and serving's aggregate (`worker.pipeline.aggregate`). The simulator's known
bounds (`episodes_for`) are kept beside them to report how well the segmentation finds them.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Episode:
    onset: int      # first moving frame (0-based, inclusive)
    peak: int
    offset: int     # last moving frame (inclusive)

    @property
    def length(self) -> int:
        return self.offset - self.onset + 1


def as_episodes(bounds: Sequence[Sequence[int]]) -> list[Episode]:
    return [Episode(int(a), int(b), int(c)) for a, b, c in bounds]


def episodes_for(video: str, known: dict[str, dict] | None = None) -> list[Episode]:
    """The movement episodes of a recording: its known bounds (simulated recordings), else []."""
    if known and video in known:
        return as_episodes(known[video]["episode_frames"])
    return []


def _clamp(lo: int, hi: int, n: int, tp: int) -> tuple[int, int]:
    top = max(0, n - tp)
    lo, hi = min(max(lo, 0), top), min(max(hi, 0), top)
    return lo, max(lo, hi)


def start_range(n: int, episodes: Sequence[Episode], k: int, tp: int) -> tuple[int, int]:
    """Inclusive range of window starts the training rule may draw for episode k of an n-frame recording."""
    if n <= tp:
        return 0, 0
    if not episodes:                                      # still throughout (sit at rest): anywhere
        return 0, n - tp
    ep = episodes[k]
    if ep.length >= tp:                                   # long episode: a window inside it
        return _clamp(ep.onset, ep.offset - tp + 1, n, tp)
    lo, hi = ep.offset - tp + 1, ep.onset                 # every window that holds the whole episode
    prev_off = episodes[k - 1].offset if k > 0 else -1
    next_on = episodes[k + 1].onset if k + 1 < len(episodes) else n
    clear_lo, clear_hi = max(lo, prev_off + 1), min(hi, next_on - tp)
    if clear_lo <= clear_hi:                              # ... and clear of the neighbours when the pauses allow
        lo, hi = clear_lo, clear_hi
    return _clamp(lo, hi, n, tp)


def random_window(n: int, episodes: Sequence[Episode], k: int, tp: int,
                  rng: np.random.Generator) -> tuple[int, int]:
    """(start, end) inclusive frames of one training window for episode k (the random-window rule)."""
    lo, hi = start_range(n, episodes, k, tp)
    start = int(rng.integers(lo, hi + 1))
    return start, min(n, start + tp) - 1


def training_windows(n: int, episodes: Sequence[Episode], tp: int, rng: np.random.Generator,
                     per_episode: int = 2) -> list[tuple[int, int]]:
    """`per_episode` random windows for each episode (for a still recording: 2 x per_episode anywhere);
    duplicates dropped."""
    draws = [(k, j) for k in range(len(episodes)) for j in range(per_episode)] if episodes else \
        [(0, j) for j in range(2 * per_episode)]
    out: list[tuple[int, int]] = []
    for k, _ in draws:
        w = random_window(n, episodes, k, tp, rng)
        if w not in out:
            out.append(w)
    return out


def serving_windows(n: int, episodes: Sequence[Episode], tp: int) -> list[tuple[int, int]]:
    """Deterministic windows: one centred on each episode (inside the training rule's range), or windows
    tiling a still recording (ceil(n / tp) evenly spaced)."""
    if n <= tp:
        return [(0, n - 1)]
    if not episodes:
        m = int(np.ceil(n / tp))
        starts = np.round(np.linspace(0, n - tp, m)).astype(int)
        return [(int(s), int(s) + tp - 1) for s in dict.fromkeys(starts.tolist())]
    out = []
    for k, ep in enumerate(episodes):
        lo, hi = start_range(n, episodes, k, tp)
        centre = (ep.onset + ep.offset) // 2 - tp // 2
        s = min(max(centre, lo), hi)
        out.append((s, s + tp - 1))
    return out


def aggregate(scores: Sequence[float]) -> float:
    """A recording's score from its windows' scores: the median (one odd repetition does not move it)."""
    return float(np.median(np.asarray(scores, np.float64))) if len(scores) else float("nan")


# ------------------------------------------------------------------------------ whole recordings, as served
def run_windows(runs: Sequence[tuple[int, int]], episodes: Sequence, tp: int, rng: np.random.Generator,
                per_episode: int) -> list[tuple[int, int, int]]:
    """Training windows (start, stop exclusive, episode index or -1) of a segmented recording: the random-window
    rule for each episode inside its own face-presence run; with no episode (rest, or no movement found)
    2 x per_episode random windows in each run."""
    out: list[tuple[int, int, int]] = []
    for r, (a, b) in enumerate(runs):
        mine = [(k, e) for k, e in enumerate(episodes) if getattr(e, "run", 0) == r]
        local = [Episode(e.onset - a, e.peak - a, e.offset - a) for _, e in mine]
        if not episodes:
            draws = [(-1, 0)] * (2 * per_episode)
        else:
            draws = [(k, j) for j, (k, _) in enumerate(mine) for _ in range(per_episode)]
        for k, j in draws:
            s0, s1 = random_window(b - a, local if k >= 0 else [], j if k >= 0 else 0, tp, rng)
            w = (a + s0, a + s1 + 1, k)
            if w not in out:
                out.append(w)
    return out


def recording_features(video: str, expression: str, contract, cache_dir: str | Path, *, split: str,
                       seed: int = 0, per_episode: int = 2, known: Sequence[Sequence[int]] | None = None) -> dict:
    """Windows of one whole recording, cached as `<cache_dir>/<contract sha[:16]>/rec_<video sha[:24]>_...npz`:
    trajs (K, 63, Tp, C), index_t (K, Tp), frames (K, Tf, S, S, 3), start/stop rows, episode index per window
    (-1: tiling), the segmented episodes (onset, peak, offset, partial) and the known episodes, if given.
    split "train": the random-window rule (seeded per recording and `seed`); anything else: serving's windows."""
    from training.datasets import file_sha256
    from worker import segment as sg

    folder = Path(cache_dir) / contract.sha256()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    rule = f"train{per_episode}s{seed}" if split == "train" else "serve"
    code = hashlib.sha256(Path(sg.__file__).read_bytes()).hexdigest()[:8]   # a changed segmentation re-cuts
    path = folder / f"rec_{file_sha256(video)[:24]}_{rule}_{code}.npz"
    if path.exists():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    from worker.extract import extract_recording

    rec = extract_recording(video, contract)
    seg = sg.segment(rec.mesh, rec.runs(), expression, rec.fps)
    tp = contract.tp
    if split == "train":
        key = f"windows|{Path(video).name}|{seed}"
        rng = np.random.default_rng(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little"))
        plans = run_windows(rec.runs(), seg.episodes, tp, rng, per_episode)
    else:
        plans = [(p.start, p.stop, -1 if p.episode is None else p.episode) for p in sg.plan_windows(seg, tp)]
    wins = [rec.window(a, b) for a, b, _ in plans]
    d = {"trajs": np.stack([w.trajs for w in wins]).astype(np.float32),
         "index_t": np.stack([w.index_t for w in wins]).astype(np.float32),
         "frames": np.stack([w.frames for w in wins]).astype(np.uint8),
         "start": np.array([p[0] for p in plans], np.int64), "stop": np.array([p[1] for p in plans], np.int64),
         "episode": np.array([p[2] for p in plans], np.int64),
         "episodes": np.array([[e.onset, e.peak, e.offset, int(e.partial)] for e in seg.episodes], np.int64
                              ).reshape(-1, 4),
         "known": np.asarray(known if known is not None else [], np.int64).reshape(-1, 3),
         "n_rows": np.asarray(rec.n)}
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **d)
    tmp.rename(path)
    return d


def aggregate_recording(window_scores: Sequence[float], d: dict, scale, expression: str = "") -> tuple[float, dict]:
    """Serving's rule on one recording's window scores (`worker.pipeline.aggregate`): the mean of each
    repetition's windows, the median over complete repetitions; the mean of the tiling windows at rest."""
    from worker.pipeline import aggregate as serve_aggregate
    from worker.segment import Episode as SegEpisode
    from worker.segment import WindowPlan

    plans = [WindowPlan(int(a), int(b), None if k < 0 else int(k))
             for a, b, k in zip(d["start"], d["stop"], d["episode"], strict=True)]
    eps = [SegEpisode(int(a), int(b), int(c), bool(p)) for a, b, c, p in d["episodes"]]
    raw, agg, _ = serve_aggregate(np.asarray(window_scores, np.float64), plans, eps, scale,
                                  tiled=expression == "sit_at_rest")
    return raw, agg


def episode_agreement(d: dict, tolerance: int = 12) -> tuple[int, int]:
    """(known repetitions found by the segmentation, known repetitions): a known episode counts as found when a
    segmented one has its peak within the known onset..offset (+- tolerance frames)."""
    found = 0
    for on, _, off in d["known"]:
        found += any(on - tolerance <= pk <= off + tolerance for _, pk, _, _ in d["episodes"])
    return found, len(d["known"])
