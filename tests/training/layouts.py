"""Small datasets in the exact PFED5 and Toronto NeuroFace layouts, built from the real face videos in
../shared/videos (segments of real people's faces, scaled to 320 px; labels are made up for the tests: the
models trained on them mean nothing clinically).

PFED5: `<root>/<pid>/<video_id>/<n>.jpg` frame folders and split CSVs (videoID_subjectID, label, frame count,
..., class), the training split without a header and the test split in the spreadsheet form with one.
Toronto NeuroFace: `<root>/<File Name>.mp4` videos, the published repetition table (File Name, repID, Number of
Frames, start, end; 1-based inclusive) and a rater-scores file.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from tests.conftest import VIDEOS

FRAMES = 24
# (video, first frame): segments with one real face each; the last one has no face at all
SEGMENTS = [("pyfeat_single_face.mp4", 0), ("liveportrait_d6.mp4", 0), ("liveportrait_d6.mp4", 300),
            ("liveportrait_d13.mp4", 0), ("tfjs-models_facemesh_input.mp4", 0),
            ("pyfeat_WolfgangLanger_Pexels.mp4", 0), ("liveportrait_d6.mp4", 600), ("pyfeat_single_face.mp4", 40),
            ("liveportrait_d13.mp4", 150), ("pyfeat_WolfgangLanger_Pexels.mp4", 200)]
NO_FACE = ("pyfeat_no_face.mp4", 0)

# The tiny model the tests train (a `compact` variant with minimal widths; 1 epoch, a few steps)
TINY_MODEL = dict(streams="both", tp=32, tf=16, frame_size=32, rgb_size=32, traj_channels=[32, 32],
                  traj_depths=[1, 1], dim=32, rgb_widths=[8, 8, 16, 32], temporal_layers=1, fusion_blocks=1,
                  fusion_heads=2, fusion_mlp=64, head_hidden=[16], spatial_heads=2, spatial_head_dim=8,
                  spatial_mlp=32, temporal_heads=2, temporal_head_dim=8, temporal_mlp=32, traj_attn_drop=0.0,
                  traj_drop_path=0.0)
TINY_RECIPE = ["--epochs", "1", "--optimizer", "adam", "--batch-size", "4", "--repeat", "1", "--threads", "1",
               "--lr-step", "10"]


def read_segment(name: str, start: int, n: int = FRAMES, max_side: int = 320) -> list[np.ndarray]:
    import av

    out = []
    with av.open(str(VIDEOS / name)) as c:
        for i, fr in enumerate(c.decode(video=0)):
            if i < start:
                continue
            if len(out) == n:
                break
            f = fr.to_ndarray(format="rgb24")
            h, w = f.shape[:2]
            s = max_side / max(h, w)
            out.append(cv2.resize(f, (round(w * s) // 2 * 2, round(h * s) // 2 * 2), interpolation=cv2.INTER_AREA))
    assert len(out) == n, (name, start, len(out))
    return out


def write_jpgs(folder: Path, frames) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"{i + 1}.jpg"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])


def write_mp4(path: Path, frames, fps: int = 25) -> None:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        st = out.add_stream("libx264", rate=Fraction(fps))
        st.width, st.height = frames[0].shape[1], frames[0].shape[0]
        st.pix_fmt = "yuv420p"
        st.options = {"crf": "18", "preset": "ultrafast"}
        for f in frames:
            for pkt in st.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)


@dataclass
class Pfed5Layout:
    root: Path
    train_csv: Path
    test_csv: Path
    bad_lines: dict[int, str]        # line of train_csv -> reason code expected


@dataclass
class TorontoLayout:
    root: Path
    repetitions: Path
    scores: Path
    bad_lines: dict[int, str]


def build_pfed5(base: Path, segments: dict) -> Pfed5Layout:
    """10 subjects: 8 in the training split, 2 in the test split; smile (class 1) and frown (class 2), one clip
    each; labels 0-4 spread over subjects. The training split (no header) also has a bad label, a missing
    folder, a wrong frame count and a face-less clip; the test split is in the spreadsheet form with a header."""
    root = base / "PFED5" / "frames"
    train_rows, test_rows = [], []
    k = 0
    for subj in range(1, 11):
        sid = f"{subj:03d}"
        for cls, label_shift in ((1, 0), (2, 2)):
            vid = f"12-{100000 + subj * 10 + cls:06d}_{cls}"        # 11 characters, as PFED5 video ids
            assert len(vid) == 11
            label = (subj + label_shift) % 5
            write_jpgs(root / sid / vid, segments[SEGMENTS[k % len(SEGMENTS)]])
            k += 1
            row = f"{vid}_{sid}"
            if subj <= 8:
                train_rows.append(f"{row},{label},{FRAMES},rough,{cls}")
            else:
                test_rows.append(f"{row},{label},yes,{label},{FRAMES},{FRAMES / 25:.2f},{cls},2020-01-01,on,1,"
                                 "test clip,")
    bad = {}
    train_rows.append("12-999999_1_001,7,24,rough,1")                 # label outside 0-4
    bad[len(train_rows)] = "bad_row"
    train_rows.append("12-888888_1_002,2,24,rough,1")                 # no such folder
    bad[len(train_rows)] = "missing_frames"
    write_jpgs(root / "003" / "12-777777_2", segments[SEGMENTS[0]][:20])
    train_rows.append("12-777777_2_003,1,24,rough,2")                 # the folder has 20 frames
    bad[len(train_rows)] = "frame_count_mismatch"
    write_jpgs(root / "004" / "12-666666_1", segments[NO_FACE])
    train_rows.append(f"12-666666_1_004,3,{FRAMES},rough,1")          # no face in any frame
    bad[len(train_rows)] = "no_face"
    train_csv = base / "PFED5" / "train_split.csv"
    train_csv.write_text("\n".join(train_rows) + "\n")
    test_csv = base / "PFED5" / "test_split.csv"
    test_csv.write_text("videoID_subjectID,label,clinical,Rough score,frame length,duration,class,date,med state,"
                        "visit,description,Note\n" + "\n".join(test_rows) + "\n")
    return Pfed5Layout(root, train_csv, test_csv, bad)


def build_toronto(base: Path, segments: dict) -> TorontoLayout:
    """6 subjects (2 ALS, 2 stroke, 2 healthy): BLOW videos with two repetitions each, plus one KISS video
    (too few clips: that task is skipped while BLOW trains). Start/end are 1-based inclusive, as published;
    one row has end before start and one a Number of Frames that disagrees with start..end."""
    root = base / "Toronto" / "videos"
    reps = ["File Name,repID,Number of Frames,start,end"]
    scores = ["File Name,rater1_symmetry,rater1_overall,rater2_symmetry,rater2_overall"]
    subjects = ["A001", "A002", "S001", "S002", "N001", "N002"]
    for i, sub in enumerate(subjects):
        name = f"{sub}_02_NSM_BLOW_color"
        frames = segments[SEGMENTS[i]] + segments[SEGMENTS[(i + 5) % len(SEGMENTS)]]
        write_mp4(root / f"{name}.mp4", frames)
        reps.append(f"{name},1,{FRAMES},1,{FRAMES}")
        reps.append(f"{name},2,{FRAMES},{FRAMES + 1},{2 * FRAMES}")
        r1 = 1 + (i * 2) % 5
        scores.append(f"{name},{r1},{r1},{r1},{min(5, r1 + 1)}")
    kiss = "A001_02_NSM_KISS_color"
    write_mp4(root / f"{kiss}.mp4", segments[SEGMENTS[3]])
    reps.append(f"{kiss},1,{FRAMES},1,{FRAMES}")
    scores.append(f"{kiss},2,2,2,3")
    bad = {}
    reps.append("N001_02_NSM_BLOW_color,3,10,40,30")
    bad[len(reps)] = "bad_range"
    reps.append("N002_02_NSM_BLOW_color,3,50,1,24")
    bad[len(reps)] = "frame_count_mismatch"
    rep_csv = base / "Toronto" / "Toronto_NeuroFace_split.csv"
    rep_csv.write_text("\n".join(reps) + "\n")
    sc_csv = base / "Toronto" / "scores.csv"
    sc_csv.write_text("\n".join(scores) + "\n")
    return TorontoLayout(root, rep_csv, sc_csv, bad)


def build_all(base: Path) -> tuple[Pfed5Layout, TorontoLayout]:
    segments = {seg: read_segment(*seg) for seg in SEGMENTS + [NO_FACE]}
    return build_pfed5(base, segments), build_toronto(base, segments)
