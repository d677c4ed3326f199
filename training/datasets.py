"""Datasets: a generic manifest CSV, PFED5 and Toronto NeuroFace adapters, subject folds, a feature cache.

Generic manifest (one row per clip; lines starting with `#` are comments):

    video,subject,expression,score[,start,end][,group][,split][,sub_<name>...]

`video` is a video file or a folder of frame images, relative to the manifest's folder or absolute;
`start`/`end` are inclusive 0-based frame numbers; `group` is what folds must keep together and balance on
(a base identity for simulated patients, a diagnosis group for Toronto NeuroFace); `split` is an optional
fixed train/val/test assignment; columns named `sub_*` are rater sub-scores, kept for reports.
"""
from __future__ import annotations

import csv
import hashlib
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from model.contract import PFED5_EXPRESSIONS, TORONTO_EXPRESSIONS, PreprocessContract

MANIFEST_COLUMNS = ["video", "subject", "expression", "score", "start", "end", "group", "split"]


@dataclass(frozen=True)
class Sample:
    video: str                      # absolute path of a video file or a frame folder
    subject: str
    expression: str
    score: float
    start: int | None = None        # inclusive frame range inside `video`
    end: int | None = None
    group: str = ""                 # stratification / grouping key ("" = the subject)
    split: str = ""                 # optional fixed split: train / val / test
    subscores: dict = field(default_factory=dict, compare=False, hash=False)
    fps: float = 25.0               # frame rate of a frame folder

    @property
    def key(self) -> str:
        return f"{self.video}|{self.start}|{self.end}"


def _opt_int(v: str | None) -> int | None:
    return None if v in (None, "") else int(float(v))


def read_manifest(path: str | Path) -> list[Sample]:
    path = Path(path)
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(line for line in fh if not line.startswith("#")))
    missing = {"video", "subject", "expression", "score"} - set(rows[0] if rows else {})
    if rows and missing:
        raise ValueError(f"{path}: manifest lacks columns {sorted(missing)}")
    out = []
    for r in rows:
        video = Path(r["video"])
        video = video if video.is_absolute() else (path.parent / video)
        subs = {k[4:]: float(v) for k, v in r.items() if k and k.startswith("sub_") and v not in (None, "")}
        out.append(Sample(str(video), r["subject"], r["expression"], float(r["score"]),
                          _opt_int(r.get("start")), _opt_int(r.get("end")), r.get("group") or "",
                          r.get("split") or "", subs))
    return out


def write_manifest(samples: Iterable[Sample], path: str | Path, comment: str | None = None) -> Path:
    samples = list(samples)
    subs = sorted({k for s in samples for k in s.subscores})
    path = Path(path)
    with open(path, "w", newline="") as fh:
        if comment:
            fh.write("".join(f"# {line}\n" for line in comment.splitlines()))
        wr = csv.writer(fh)
        wr.writerow(MANIFEST_COLUMNS + [f"sub_{k}" for k in subs])
        for s in samples:
            wr.writerow([s.video, s.subject, s.expression, s.score, "" if s.start is None else s.start,
                         "" if s.end is None else s.end, s.group, s.split] + [s.subscores.get(k, "") for k in subs])
    return path


# --------------------------------------------------------------------------------------------- PFED5
def _parse_pfed5_id(vid_sub: str) -> tuple[str, str]:
    """`12-104704_0_001` -> video id `12-104704_0` (first 11 characters), subject `001` (last `_` field)."""
    return vid_sub[:11], vid_sub.rsplit("_", 1)[-1]


def pfed5_samples(root: str | Path, split_csv: str | Path, split: str = "") -> list[Sample]:
    """PFED5 clips: frame folders `<root>/<pid>/<video_id>/*.jpg` and a split CSV (columns by position:
    videoID_subjectID, label 0-4, frame count, ..., class 0-4; a header row is optional; a `class` column is
    used when named, else the last column)."""
    root = Path(root)
    with open(split_csv, newline="") as fh:
        rows = [r for r in csv.reader(fh) if r and any(c.strip() for c in r)]
    cls_col = -1
    if rows and not _is_number(rows[0][1]):
        header = [c.strip().lower() for c in rows[0]]
        cls_col = header.index("class") if "class" in header else -1
        rows = rows[1:]
    folders = _index_folders(root)
    out = []
    for r in rows:
        vid, subject = _parse_pfed5_id(r[0].strip())
        expr = PFED5_EXPRESSIONS[int(float(r[cls_col]))]
        folder = root / subject / vid
        if not folder.is_dir():
            folder = folders.get(vid)
            if folder is None:
                raise FileNotFoundError(f"PFED5 frames for {r[0]!r} not found under {root} (<pid>/{vid}/)")
        out.append(Sample(str(folder), subject, expr, float(r[1]), group=subject, split=split))
    return out


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _index_folders(root: Path) -> dict[str, Path]:
    return {p.name: p for p in root.glob("*/*") if p.is_dir()}


# --------------------------------------------------------------------------------------------- Toronto
TORONTO_TASKS = {t.upper(): t for t in TORONTO_EXPRESSIONS}
TORONTO_GROUPS = {"A": "ALS", "S": "stroke", "N": "healthy", "H": "healthy", "C": "healthy"}


def toronto_samples(root: str | Path, repetition_table: str | Path, scores_csv: str | Path, *,
                    subject_pattern: str = r"^([A-Za-z]+\d+)", groups: dict[str, str] | None = None,
                    ) -> list[Sample]:
    """Single repetitions of the Toronto NeuroFace tasks BLOW/KISS/BROW/OPEN/SPREAD (BIGSMILE excluded).

    repetition_table: columns `File Name, repID, Number of Frames, start, end` (one row per repetition).
    scores_csv: `File Name` plus rater columns; the score is the mean of the columns whose name contains
    "overall" (both raters); the other numeric columns are kept as sub-scores.
    The subject is the match of `subject_pattern` in the file name; its group (ALS / stroke / healthy) comes
    from `groups[subject]` or else from the subject code's first letter (A, S, N/H/C).
    """
    root = Path(root)
    files = {p.stem: p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in (".mp4", ".avi", ".mov")}
    scores = _toronto_scores(scores_csv)
    out = []
    with open(repetition_table, newline="") as fh:
        for r in csv.DictReader(fh):
            r = {k.strip(): (v or "").strip() for k, v in r.items() if k}
            name = Path(r["File Name"]).stem
            task = next((t for t in TORONTO_TASKS if t in name.upper().split("_") or f"_{t}" in name.upper()),
                        None)
            if task is None:
                continue
            if name not in files:
                raise FileNotFoundError(f"Toronto NeuroFace video {name!r} not found under {root}")
            if name not in scores:
                raise KeyError(f"no rater scores for {name!r} in {scores_csv}")
            m = re.search(subject_pattern, name)
            subject = m.group(1) if m else name.split("_")[0]
            group = (groups or {}).get(subject) or TORONTO_GROUPS.get(subject[0].upper(), "unknown")
            score, subs = scores[name]
            out.append(Sample(str(files[name]), subject, TORONTO_TASKS[task], score,
                              _opt_int(r.get("start")), _opt_int(r.get("end")), group, "", subs))
    return out


def _toronto_scores(path: str | Path) -> dict[str, tuple[float, dict]]:
    out = {}
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            r = {k.strip(): (v or "").strip() for k, v in r.items() if k}
            name = Path(r.pop("File Name")).stem
            nums = {k: float(v) for k, v in r.items() if _is_number(v)}
            overall = [v for k, v in nums.items() if "overall" in k.lower()]
            if not overall:
                raise ValueError(f"{path}: no 'overall' score columns for {name}")
            out[name] = (float(np.mean(overall)), {k: v for k, v in nums.items() if "overall" not in k.lower()})
    return out


# --------------------------------------------------------------------------------------------- splits
def subject_folds(samples: Sequence[Sample], k: int = 3, seed: int = 0) -> list[list[str]]:
    """k subject folds, each proportionally representative of the groups (round-robin per group)."""
    by_group: dict[str, set[str]] = defaultdict(set)
    for s in samples:
        by_group[s.group or "all"].add(s.subject)
    rng = np.random.default_rng(seed)
    folds: list[list[str]] = [[] for _ in range(k)]
    offset = 0
    for g in sorted(by_group):
        subs = sorted(by_group[g])
        rng.shuffle(subs)
        for i, sub in enumerate(subs):
            folds[(i + offset) % k].append(sub)
        offset += len(subs)  # continue where the last group stopped so fold sizes stay even
    return [sorted(f) for f in folds]


def group_folds(samples: Sequence[Sample], k: int) -> list[list[str]]:
    """k folds of whole groups (e.g. base identities of simulated patients); returns subject lists."""
    groups = sorted({s.group or s.subject for s in samples})
    if k > len(groups):
        raise ValueError(f"{k} folds need at least {k} groups, have {len(groups)}")
    fold_groups = [groups[i::k] for i in range(k)]
    return [sorted({s.subject for s in samples if (s.group or s.subject) in fg}) for fg in fold_groups]


def split_by_column(samples: Sequence[Sample]) -> dict[str, list[Sample]]:
    out: dict[str, list[Sample]] = {"train": [], "val": [], "test": []}
    for s in samples:
        out.setdefault(s.split or "train", []).append(s)
    return out


def holdout_validation(train: Sequence[Sample], fraction: float = 0.2, seed: int = 0) -> tuple[list, list]:
    """Split training samples into train/val by group (e.g. base identity, so that a mirror-image
    pseudo-identity never validates its own original) when there are at least 3 groups, else by subject;
    never touches the test set. With fewer than 3 subjects, falls back to a per-clip split stratified by score."""
    rng = np.random.default_rng(seed)
    groups = sorted({s.group for s in train if s.group})
    if len(groups) >= 3 and all(s.group for s in train) and len(groups) < len({s.subject for s in train}):
        n_val = max(1, int(round(fraction * len(groups))))
        val_groups = set(rng.choice(groups, n_val, replace=False).tolist())
        return [s for s in train if s.group not in val_groups], [s for s in train if s.group in val_groups]
    subjects = sorted({s.subject for s in train})
    if len(subjects) >= 3:
        n_val = max(1, int(round(fraction * len(subjects))))
        val_subj = set(rng.choice(subjects, n_val, replace=False).tolist())
        return [s for s in train if s.subject not in val_subj], [s for s in train if s.subject in val_subj]
    by_score: dict[float, list[Sample]] = defaultdict(list)
    for s in train:
        by_score[s.score].append(s)
    tr, va = [], []
    for _, group in sorted(by_score.items()):
        idx = rng.permutation(len(group))
        n_val = max(1, int(round(fraction * len(group)))) if len(group) > 1 else 0
        va += [group[i] for i in idx[:n_val]]
        tr += [group[i] for i in idx[n_val:]]
    return tr, va


def with_split(samples: Iterable[Sample], split: str) -> list[Sample]:
    return [replace(s, split=split) for s in samples]


# --------------------------------------------------------------------------------------------- features
def file_sha256(path: str | Path) -> str:
    path = Path(path)
    h = hashlib.sha256()
    if path.is_dir():
        for p in sorted(path.iterdir()):
            h.update(p.name.encode())
            h.update(p.read_bytes())
        return h.hexdigest()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


Extractor = Callable[[str, PreprocessContract], object]


def _default_extractor(video: str, contract: PreprocessContract):
    from worker.extract import extract

    return extract(video, contract)


class FeatureCache:
    """Extraction results on disk: `<root>/<contract sha256[:16]>/<video sha256[:24]>[_<start>-<end>].npz`.

    A changed preprocessing contract gives another folder, so features are re-extracted; a changed video
    file gives another hash. Each npz holds trajs, index_t, frames and the quality report's `scorable`.
    """

    def __init__(self, root: str | Path, contract: PreprocessContract, extractor: Extractor | None = None):
        self.contract = contract
        self.dir = Path(root) / contract.sha256()[:16]
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "contract.json").write_text(_json(contract.to_dict()))
        self.extractor = extractor or _default_extractor
        self._hashes: dict[str, str] = {}

    def path(self, s: Sample) -> Path:
        h = self._hashes.get(s.video) or self._hashes.setdefault(s.video, file_sha256(s.video)[:24])
        rng = "" if s.start is None and s.end is None else f"_{s.start}-{s.end}"
        return self.dir / f"{h}{rng}.npz"

    def get(self, s: Sample) -> dict[str, np.ndarray]:
        p = self.path(s)
        if p.exists():
            with np.load(p) as z:
                return {k: z[k] for k in z.files}
        from training.frames_source import as_video

        with as_video(s.video, start=s.start, end=s.end, fps=s.fps) as video:
            ex = self.extractor(str(video), self.contract)
        d = {"trajs": np.asarray(ex.trajs, np.float32), "index_t": np.asarray(ex.index_t, np.float32),
             "frames": np.asarray(ex.frames, np.uint8),
             "scorable": np.asarray(bool((getattr(ex, "quality", None) or {}).get("scorable", True)))}
        tmp = p.with_suffix(".tmp.npz")
        np.savez(tmp, **d)
        tmp.rename(p)
        return d

    def warm(self, samples: Sequence[Sample], progress: bool = True) -> list[Sample]:
        """Extract every sample not yet cached; returns the samples whose extraction failed."""
        from tqdm import tqdm

        from model.errors import VideoError

        failed = []
        for s in tqdm(samples, desc="extract", disable=not progress, leave=False):
            try:
                self.get(s)
            except VideoError as exc:
                failed.append(s)
                print(f"extraction failed for {s.video}: {exc}")
        return failed


def _json(d: dict) -> str:
    import json

    return json.dumps(d, indent=1, sort_keys=True)
