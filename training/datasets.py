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
from dataclasses import asdict, dataclass, field
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
    clip_id: str = field(default="", compare=False)   # the dataset's own id of the clip (reports list it)
    line: int = field(default=0, compare=False)       # line of the table row it came from (0: none)
    source: str = field(default="", compare=False)    # that table's file name

    @property
    def key(self) -> str:
        return f"{self.video}|{self.start}|{self.end}"


def _opt_int(v: str | None) -> int | None:
    return None if v in (None, "") else int(float(v))


def read_dataset_manifest(path: str | Path) -> list[Sample]:
    """The samples of a generic manifest; ValueError naming the line of the first bad row."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8-sig") as fh:
        numbered = [(n, line) for n, line in enumerate(fh, 1) if not line.startswith("#")]
    rows = list(csv.DictReader(line for _, line in numbered))
    missing = {"video", "subject", "expression", "score"} - set(rows[0] if rows else {})
    if rows and missing:
        raise ValueError(f"{path}: manifest lacks columns {sorted(missing)}")
    out = []
    for (n, _), r in zip(numbered[1:], rows, strict=False):
        try:
            video = Path(r["video"] or "")
            video = video if video.is_absolute() else (path.parent / video)
            subs = {k[4:]: float(v) for k, v in r.items() if k and k.startswith("sub_") and v not in (None, "")}
            out.append(Sample(str(video), r["subject"], r["expression"], float(r["score"]),
                              _opt_int(r.get("start")), _opt_int(r.get("end")), r.get("group") or "",
                              r.get("split") or "", subs, line=n, source=path.name))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path} line {n}: {exc}") from None
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


# --------------------------------------------------------------------------------------------- problems
class DatasetError(ValueError):
    """A dataset that cannot be used: one plain message (the CLI prints it and exits 2, no traceback).

    `code` is the stable reason (model/messages.py words it): invalid_dataset (the options or tables cannot
    be read at all) or nothing_usable (read, but no expression had enough usable clips)."""

    def __init__(self, message: str, code: str = "invalid_dataset") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class RowIssue:
    """A table row refused, or a clip that could not be used, with a stable reason code.

    Reason codes: bad_row (a value that does not parse or lies outside its range), duplicate_row,
    frame_count_mismatch (the table's frame count disagrees with the frames on disk or with end - start + 1),
    bad_range (a repetition's start/end), no_scores (no rater scores for the file), video_not_found /
    missing_frames (not on disk), range_outside_video, extraction_error, and the extraction's own
    `model.errors.VideoError` codes (no_face, face_too_rare, video_too_short, ...)."""
    source: str        # the table (file name only) or "extraction"
    line: int          # 1-based line of the table (0 when not from a table row)
    clip: str          # the clip id (PFED5 videoID_subjectID, Toronto <file>#rep<repID>) or ""
    reason: str
    message: str

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        where = f"{self.source} line {self.line}" if self.line else self.source
        return f"{where}: {self.clip + ': ' if self.clip else ''}{self.message} [{self.reason}]"


def raise_if_issues(issues: Sequence[RowIssue], what: str) -> None:
    if issues:
        listed = "\n  ".join(str(i) for i in issues[:20])
        more = f"\n  ... and {len(issues) - 20} more" if len(issues) > 20 else ""
        raise DatasetError(f"{what}: {len(issues)} bad rows\n  {listed}{more}")


def _int_field(value: str, name: str, lo: int | None = None, hi: int | None = None) -> int:
    v = (value or "").strip()
    try:
        f = float(v)
    except ValueError:
        raise ValueError(f"{name} {v!r} is not a number") from None
    if f != int(f):
        raise ValueError(f"{name} {v!r} is not a whole number")
    i = int(f)
    if (lo is not None and i < lo) or (hi is not None and i > hi):
        raise ValueError(f"{name} {i} is outside {lo}..{hi}" if hi is not None else f"{name} {i} is below {lo}")
    return i


def _read_rows(path: Path) -> list[tuple[int, list[str]]]:
    """(1-based line number, cells) of every non-empty, non-comment CSV row."""
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return [(n, [c.strip() for c in r]) for n, r in enumerate(csv.reader(fh), 1)
                if r and any(c.strip() for c in r) and not r[0].lstrip().startswith("#")]


# --------------------------------------------------------------------------------------------- PFED5
PFED5_ID_COLUMNS = ("videoid_subjectid", "video_subject", "id")
PFED5_FRAME_COLUMNS = ("frame count", "frame length", "frame_count", "frames", "number of frames", "num_frames")


def _parse_pfed5_id(vid_sub: str) -> tuple[str, str]:
    """`12-104704_0_001` -> video id `12-104704_0` (first 11 characters), subject `001` (last `_` field)."""
    return vid_sub[:11], vid_sub.rsplit("_", 1)[-1]


def read_pfed5(root: str | Path, split_csv: str | Path, split: str = "") -> tuple[list[Sample], list[RowIssue]]:
    """PFED5 clips and the rows / clips refused.

    Frames: `<root>/<pid>/<video_id>/*.jpg` (found anywhere two levels down when the pid folder differs).
    The split CSV in either form of IMPLEMENTATION_NOTES:
    * without a header, by position: videoID_subjectID, label 0-4, frame count, ..., class 0-4 (last column);
    * with a header (the first row's label cell is not a number): columns by name - `label`, a frame-count
      column (`frame length` in the spreadsheet form, or `frame count` / `frames` / `number of frames`) and
      `class`; the id is the first column.
    Every row is checked: id of the form `<11-char video id>_<subject>`, label and class whole numbers 0-4,
    frame count a positive whole number equal to the number of images in the clip's folder; a repeated id is
    refused. Refused rows and missing folders come back as RowIssues with their line numbers."""
    root, split_csv = Path(root), Path(split_csv)
    src = split_csv.name
    rows = _read_rows(split_csv)
    if not rows:
        raise DatasetError(f"{split_csv}: the split file is empty")
    id_col, label_col, frames_col, cls_col = 0, 1, 2, -1
    first = rows[0][1]
    if len(first) < 2 or not _is_number(first[1]):
        header = [c.strip().lower() for c in first]
        if "label" not in header or "class" not in header:
            raise DatasetError(f"{src} line {rows[0][0]}: a header row needs `label` and `class` columns "
                               f"(got {first}); or leave the header out (columns by position: "
                               "videoID_subjectID, label, frame count, ..., class)")
        label_col, cls_col = header.index("label"), header.index("class")
        frames_col = next((header.index(c) for c in PFED5_FRAME_COLUMNS if c in header), None)
        rows = rows[1:]
    folders: dict[str, Path] | None = None
    out: list[Sample] = []
    issues: list[RowIssue] = []
    seen: dict[str, int] = {}
    for n, r in rows:
        clip = r[id_col] if r else ""
        try:
            need = max(label_col, cls_col if cls_col >= 0 else 0, frames_col or 0) + 1
            if len(r) < max(need, 3):
                raise ValueError(f"{len(r)} columns; need at least {max(need, 3)}")
            vid, subject = _parse_pfed5_id(clip)
            if len(clip) < 13 or clip[11] != "_" or not subject:
                raise ValueError(f"id {clip!r} is not videoID_subjectID (11-character video id, `_`, subject)")
            label = _int_field(r[label_col], "label", 0, 4)
            cls = _int_field(r[cls_col], "class", 0, len(PFED5_EXPRESSIONS) - 1)
            n_frames = _int_field(r[frames_col], "frame count", 1) if frames_col is not None else None
        except ValueError as exc:
            issues.append(RowIssue(src, n, clip, "bad_row", str(exc)))
            continue
        if clip in seen:
            issues.append(RowIssue(src, n, clip, "duplicate_row", f"the same clip as line {seen[clip]}"))
            continue
        seen[clip] = n
        folder = root / subject / vid
        if not folder.is_dir():
            folders = _index_folders(root) if folders is None else folders
            folder = folders.get(vid)
            if folder is None:
                issues.append(RowIssue(src, n, clip, "missing_frames",
                                       f"no frame folder <pid>/{vid}/ under the data root"))
                continue
        if n_frames is not None:
            have = _count_images(folder)
            if have != n_frames:
                issues.append(RowIssue(src, n, clip, "frame_count_mismatch",
                                       f"the table says {n_frames} frames, the folder holds {have} images"))
                continue
        out.append(Sample(str(folder), subject, PFED5_EXPRESSIONS[cls], float(label), split=split,
                          clip_id=clip, line=n, source=src))
    return out, issues


def pfed5_samples(root: str | Path, split_csv: str | Path, split: str = "") -> list[Sample]:
    """`read_pfed5`, refusing the file when any row is bad (DatasetError listing the lines)."""
    samples, issues = read_pfed5(root, split_csv, split)
    raise_if_issues(issues, str(split_csv))
    return samples


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _index_folders(root: Path) -> dict[str, Path]:
    return {p.name: p for p in root.glob("*/*") if p.is_dir()}


def _count_images(folder: Path) -> int:
    from training.frames_source import IMAGE_SUFFIXES

    return sum(1 for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


# --------------------------------------------------------------------------------------------- Toronto
TORONTO_TASKS = {t.upper(): t for t in TORONTO_EXPRESSIONS}
TORONTO_GROUPS = {"A": "ALS", "S": "stroke", "N": "healthy", "H": "healthy", "C": "healthy"}
TORONTO_VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv")
TORONTO_SCORE_RANGE = (1.0, 5.0)


def toronto_group(subject: str, groups: dict[str, str] | None = None) -> str:
    """ALS / stroke / healthy from the subject code's letters (A, S, N); other prefixes (e.g. `OP` in the
    published split table) are kept as their own group; an explicit map wins."""
    if groups and subject in groups:
        return groups[subject]
    prefix = re.match(r"[A-Za-z]*", subject).group(0).upper()
    return TORONTO_GROUPS.get(prefix, prefix or "unknown") if len(prefix) == 1 else (prefix or "unknown")


def read_toronto(root: str | Path, repetition_table: str | Path, scores_csv: str | Path, *,
                 subject_pattern: str = r"^([A-Za-z]+\d+)", groups: dict[str, str] | None = None,
                 ) -> tuple[list[Sample], list[RowIssue]]:
    """Single repetitions of the Toronto NeuroFace tasks BLOW/KISS/BROW/OPEN/SPREAD (BIGSMILE excluded).

    repetition_table: `File Name, repID, Number of Frames, start, end`, one row per repetition, as published
    (file names without extension, e.g. `A002_02_NSM_BLOW_color`). `start`/`end` are 1-based inclusive frame
    numbers of the video (the published table starts at 1 and has Number of Frames = end - start + 1); each
    row is checked: whole numbers, 1 <= start <= end, Number of Frames = end - start + 1, end within the
    video's frames (when its container says how many), a (file, repID) pair only once, a video on disk and
    rater scores for it. Refused rows come back as RowIssues with their line numbers.
    scores_csv: `File Name` (and optionally `repID`, then scores are per repetition) plus rater columns; the
    score is the mean of the columns whose name contains "overall" (both raters), each 1-5; the other numeric
    columns are kept as sub-scores. The subject is `subject_pattern`'s match in the file name; its group
    (ALS / stroke / healthy) comes from `groups[subject]` or else from the subject code (A, S, N)."""
    root, repetition_table = Path(root), Path(repetition_table)
    src = repetition_table.name
    files = {p.stem: p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in TORONTO_VIDEO_SUFFIXES}
    scores, issues = _toronto_scores(Path(scores_csv))
    n_video_frames: dict[str, int] = {}
    out: list[Sample] = []
    seen: dict[tuple[str, int], int] = {}
    with open(repetition_table, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        cols = {(c or "").strip().lower(): c for c in reader.fieldnames or []}
        need = ["file name", "repid", "number of frames", "start", "end"]
        if [c for c in need if c not in cols]:
            raise DatasetError(f"{src}: the repetition table needs the columns File Name, repID, Number of "
                               f"Frames, start, end (got {reader.fieldnames})")
        for r in reader:
            n = reader.line_num
            g = {k: (r.get(cols[k]) or "").strip() for k in need}
            name = Path(g["file name"]).stem
            clip = f"{name}#rep{g['repid']}"
            task = _toronto_task(name)
            if task is None:
                if "BIGSMILE" not in name.upper():
                    issues.append(RowIssue(src, n, clip, "bad_row", "no task (BLOW, KISS, BROW, OPEN, SPREAD) "
                                                                     "in the file name"))
                continue
            try:
                rep = _int_field(g["repid"], "repID", 1)
                count = _int_field(g["number of frames"], "Number of Frames", 1)
                start = _int_field(g["start"], "start", 1)
                end = _int_field(g["end"], "end", 1)
            except ValueError as exc:
                issues.append(RowIssue(src, n, clip, "bad_row", str(exc)))
                continue
            if end < start:
                issues.append(RowIssue(src, n, clip, "bad_range", f"end {end} is before start {start}"))
                continue
            if end - start + 1 != count:
                issues.append(RowIssue(src, n, clip, "frame_count_mismatch",
                                       f"Number of Frames {count} but start {start}..end {end} spans "
                                       f"{end - start + 1} frames"))
                continue
            if (name, rep) in seen:
                issues.append(RowIssue(src, n, clip, "duplicate_row", f"the same repetition as line "
                                                                       f"{seen[(name, rep)]}"))
                continue
            seen[(name, rep)] = n
            if name not in files:
                issues.append(RowIssue(src, n, clip, "video_not_found", f"no video {name}.* under the data root"))
                continue
            total = n_video_frames.get(name)
            if total is None:
                total = n_video_frames[name] = _container_frames(files[name])
            if total and end > total:
                issues.append(RowIssue(src, n, clip, "range_outside_video",
                                       f"end {end} is past the video's {total} frames"))
                continue
            sc = scores.get((name, rep)) or scores.get((name, None))
            if sc is None:
                issues.append(RowIssue(src, n, clip, "no_scores", f"no rater scores for {name} in "
                                                                   f"{Path(scores_csv).name}"))
                continue
            m = re.search(subject_pattern, name)
            subject = m.group(1) if m else name.split("_")[0]
            score, subs = sc
            out.append(Sample(str(files[name]), subject, TORONTO_TASKS[task], score, start - 1, end - 1,
                              toronto_group(subject, groups), "", subs, clip_id=clip, line=n, source=src))
    return out, issues


def toronto_samples(root: str | Path, repetition_table: str | Path, scores_csv: str | Path, *,
                    subject_pattern: str = r"^([A-Za-z]+\d+)", groups: dict[str, str] | None = None,
                    ) -> list[Sample]:
    """`read_toronto`, refusing the tables when any row is bad (DatasetError listing the lines)."""
    samples, issues = read_toronto(root, repetition_table, scores_csv, subject_pattern=subject_pattern,
                                   groups=groups)
    raise_if_issues(issues, str(repetition_table))
    return samples


def _toronto_task(name: str) -> str | None:
    parts = name.upper().split("_")
    return next((t for t in TORONTO_TASKS if t in parts), None)


def _container_frames(path: Path) -> int:
    """Frames the container declares (0 when it does not say; the range is then checked at extraction)."""
    try:
        import av

        with av.open(str(path)) as c:
            return int(c.streams.video[0].frames or 0)
    except Exception:
        return 0


def _toronto_scores(path: Path) -> tuple[dict[tuple[str, int | None], tuple[float, dict]], list[RowIssue]]:
    out: dict = {}
    issues: list[RowIssue] = []
    lo, hi = TORONTO_SCORE_RANGE
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        fields = [(f or "").strip() for f in reader.fieldnames or []]
        if "File Name" not in fields or not any("overall" in f.lower() for f in fields):
            raise DatasetError(f"{path.name}: the scores file needs a `File Name` column and rater columns "
                               f"named with `overall` (got {reader.fieldnames})")
        for r in reader:
            n = reader.line_num
            r = {(k or "").strip(): (v or "").strip() for k, v in r.items() if k}
            name = Path(r.pop("File Name")).stem
            rep_cell = next((r.pop(k) for k in list(r) if k.lower() == "repid"), "")
            try:
                rep = _int_field(rep_cell, "repID", 1) if rep_cell else None
                overall = [float(v) for k, v in r.items() if "overall" in k.lower() and v != ""]
                if not overall:
                    raise ValueError("no overall score")
                bad = [v for v in overall if not lo <= v <= hi]
                if bad:
                    raise ValueError(f"overall score {bad[0]:g} outside the raters' {lo:g}-{hi:g} scale")
            except ValueError as exc:
                issues.append(RowIssue(path.name, n, name, "bad_row", str(exc)))
                continue
            subs = {k: float(v) for k, v in r.items() if "overall" not in k.lower() and _is_number(v)}
            out[(name, rep)] = (float(np.mean(overall)), subs)
    return out, issues


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


def stratified_validation(train: Sequence[Sample], fraction: float = 0.2, seed: int = 0,
                          ) -> tuple[list[Sample], list[Sample], dict]:
    """Validation subjects drawn from the training subjects, stratified over groups and severities.

    Per group (diagnosis group for Toronto NeuroFace; one group for PFED5), its subjects are ordered by their
    mean score and round(fraction x n) of them are taken at evenly spaced ranks from a random offset, so the
    validation set spans the severities of every group. A group never validates whole: at least one of its
    subjects stays in training (a group of one subject gives none). With fewer than 3 subjects in all, clips are
    split per score instead (said in the returned info). Returns (train, val, info) where info lists the
    validation subjects and the clip counts per group and per rounded score of both parts."""
    rng = np.random.default_rng(seed)
    by_subject: dict[str, list[Sample]] = defaultdict(list)
    for s in train:
        by_subject[s.subject].append(s)
    info: dict = {"method": "subjects stratified over groups and severities", "fraction": fraction}
    if len(by_subject) < 3:
        tr, va = holdout_validation(train, fraction, seed)
        info["method"] = f"per-clip split by score ({len(by_subject)} subjects: too few to hold any out)"
    else:
        groups: dict[str, list[str]] = defaultdict(list)
        for sub, ss in by_subject.items():
            groups[ss[0].group or "all"].append(sub)
        val_subjects: set[str] = set()
        for g in sorted(groups):
            subs = sorted(groups[g], key=lambda x: (float(np.mean([s.score for s in by_subject[x]])), x))
            k = min(int(round(fraction * len(subs))), len(subs) - 1)
            if k <= 0:
                continue
            offset = rng.uniform(0, len(subs) / k)
            picks = sorted({min(int(offset + i * len(subs) / k), len(subs) - 1) for i in range(k)})
            val_subjects |= {subs[i] for i in picks}
        if not val_subjects:          # every group too small for its share: one subject of the largest group
            g = max(sorted(groups), key=lambda x: len(groups[x]))
            val_subjects = {sorted(groups[g])[int(rng.integers(len(groups[g])))]}
        tr = [s for s in train if s.subject not in val_subjects]
        va = [s for s in train if s.subject in val_subjects]
        info["subjects"] = sorted(val_subjects)
    info["subjects"] = info.get("subjects") or sorted({s.subject for s in va})
    info["counts"] = {name: _counts(part) for name, part in (("train", tr), ("val", va))}
    return tr, va, info


def _counts(samples: Sequence[Sample]) -> dict:
    groups: dict[str, int] = defaultdict(int)
    scores: dict[str, int] = defaultdict(int)
    for s in samples:
        groups[s.group or "all"] += 1
        scores[str(int(np.floor(s.score + 0.5)))] += 1
    return {"clips": len(samples), "subjects": len({s.subject for s in samples}),
            "per_group": dict(sorted(groups.items())), "per_score": dict(sorted(scores.items()))}


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


def failure_reason(exc: BaseException) -> str:
    """The stable reason code of a clip that could not be extracted."""
    from model.errors import FeqaError
    from training.frames_source import RangeOutsideVideo

    if isinstance(exc, FeqaError):
        return exc.code
    if isinstance(exc, RangeOutsideVideo):
        return "range_outside_video"
    if isinstance(exc, FileNotFoundError):
        return "video_not_found"
    return "extraction_error"


def _json(d: dict) -> str:
    import json

    return json.dumps(d, indent=1, sort_keys=True)
