"""The peer benchmark's measures on known inputs (the comparison itself runs MediaPipe in a side virtualenv and
is a benchmark, not a test)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from bench.peers import mediapipe_facemesh as peer


def test_jitter_is_zero_on_steady_motion_and_sees_a_shaking_point():
    base = np.zeros((468, 2))
    iod = [10.0] * 5
    steady = [base + k for k in range(5)]                 # constant velocity: no second difference
    assert peer._jitter(steady, iod) == [0.0, 0.0, 0.0]
    shaky = [base + (k % 2) for k in range(5)]            # every point hops 1 px diagonally each frame
    assert np.allclose(peer._jitter(shaky, iod), np.sqrt(2) / 10)
    assert peer._jitter([base, base, base, None, base], [10.0] * 5) == [0.0]    # gaps are skipped


def test_stats_and_mediapipe_points_in_pixels():
    s = peer._stats([0.01, 0.02, 0.03])
    assert s == {"median": 0.02, "p95": 0.029, "n": 3} and peer._stats([])["median"] is None
    lm = [SimpleNamespace(x=0.5, y=0.25, z=0.0)] * 468
    res = SimpleNamespace(multi_face_landmarks=[SimpleNamespace(landmark=lm)])
    pts = peer._mediapipe_points(res, 640, 360)
    assert pts.shape == (468, 2) and tuple(pts[0]) == (320.0, 90.0)
    assert peer._mediapipe_points(SimpleNamespace(multi_face_landmarks=None), 640, 360) is None
