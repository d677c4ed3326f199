"""Face detection, single-image landmarks, and tracking one patient."""
from __future__ import annotations

import numpy as np

from worker.face import FaceTracker, detect_landmarks, iou, mesh_box


def test_detect_landmarks_single_image(face_frame, mesh):
    pts = detect_landmarks(face_frame, mesh)
    assert pts.shape == (468, 3) and pts.dtype == np.float32
    # subject's left eye outer corner (263) is on the image right; eyes above the nose tip above the lips
    assert pts[263, 0] > pts[33, 0]
    assert pts[33, 1] < pts[1, 1] < pts[13, 1]
    assert 0 <= pts[:, 0].min() and pts[:, 0].max() < face_frame.shape[1]


def test_detect_landmarks_none_without_face(mesh):
    rng = np.random.default_rng(0)
    assert detect_landmarks(np.zeros((360, 640, 3), np.uint8), mesh) is None
    assert detect_landmarks(rng.integers(0, 255, (360, 640, 3), dtype=np.uint8), mesh) is None


def _canvas(*faces, size=(1280, 480)):
    c = np.full((size[1], size[0], 3), 40, np.uint8)
    for img, (x, y) in faces:
        c[y:y + img.shape[0], x:x + img.shape[1]] = img
    return c


def test_tracker_follows_the_first_patient_when_another_appears(face_frames, mesh):
    # given the patient on the left, joined after 12 frames by a second (mirrored, larger) face on the right
    import cv2

    other = cv2.resize(face_frames[0][:, ::-1], (800, 450))[40:440, 120:700]
    frames = [_canvas((f, (0, 60))) for f in face_frames[:12]]
    frames += [_canvas((f, (0, 60)), (other, (680, 40))) for f in face_frames[12:30]]
    tracker = FaceTracker(mesh, redetect_every=5)
    steps = [tracker.step(f) for f in frames]
    # then every frame's mesh stays on the left face, and the second face is counted
    assert all(s.pts is not None for s in steps)
    assert all(mesh_box(s.pts)[2] < 640 for s in steps)
    assert any(s.other_faces >= 1 for s in steps[12:]) and not any(s.other_faces for s in steps[:12])


def test_tracker_loses_the_face_on_blank_frames_and_reacquires_it_elsewhere(face_frames, mesh):
    blank = np.full((480, 1280, 3), 40, np.uint8)
    frames = [_canvas((f, (300, 60))) for f in face_frames[:8]] + [blank] * 4
    frames += [_canvas((f, (600, 100))) for f in face_frames[8:16]]
    tracker = FaceTracker(mesh)
    steps = [tracker.step(f) for f in frames]
    assert all(s.pts is not None for s in steps[:8]) and all(s.pts is None for s in steps[8:12])
    assert steps[12].reacquired and steps[12].pts is not None
    # the new box is where the face moved to
    assert iou(mesh_box(steps[-1].pts), mesh_box(steps[7].pts) + np.array([300, 40, 300, 40])) > 0.7
