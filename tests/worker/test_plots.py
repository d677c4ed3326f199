"""worker.plots: movement in inter-ocular units over seconds, neutral/peak frames, pictures on real frames."""
from __future__ import annotations

import numpy as np

from worker import landmarks as lm
from worker import plots


def _face(n: int = 50, lift: float = 0.2, at: int = 30) -> np.ndarray:
    """(n, 63, 2) landmarks: a fixed face with an inter-ocular distance of 50 px whose upper lip moves
    `lift` IOD upwards at frame `at` onwards, while the whole head shifts and turns (to be removed)."""
    rng = np.random.default_rng(0)
    base = rng.uniform(60, 200, (63, 2))
    rs = lm.region_slices()
    base[rs["left_eye"].stop - 1] = (155, 100)
    base[rs["right_eye"].stop - 1] = (105, 100)       # eye centres 50 px apart
    pts = np.repeat(base[None], n, 0)
    pts[at:, rs["upper_lip"], 1] -= lift * 50
    # head motion: a small turn and a shift that grows over time
    ang = np.linspace(0, 0.1, n)[:, None]
    c = pts - 128
    rot = np.stack([c[..., 0] * np.cos(ang) - c[..., 1] * np.sin(ang),
                    c[..., 0] * np.sin(ang) + c[..., 1] * np.cos(ang)], -1)
    return (rot + 128 + np.linspace(0, 8, n)[:, None, None]).astype(np.float32)


def test_movement_is_in_interocular_units_over_seconds_with_head_motion_removed():
    mv = plots.movement(_face(), fps=25.0, start_s=2.0)
    assert mv.t[0] == 2.0 and abs(mv.t[-1] - (2.0 + 49 / 25)) < 1e-9
    assert abs(mv.iod_px - 50) < 1
    assert mv.neutral < 30 <= mv.peak                  # rest before the lift, peak after it
    assert abs(mv.regions["upper_lip"][mv.peak] - 0.2) < 0.02
    assert mv.regions["left_brow"].max() < 0.01      # the head's turn and shift are not movement


def test_pictures_are_drawn_on_the_kept_real_frames(tmp_path):
    from types import SimpleNamespace

    lms = _face(20, at=12)
    crops = np.zeros((20, 256, 256, 3), np.uint8)
    crops[:, :, :, 0] = 200                            # "real" frames are red; model frames grey
    ex = SimpleNamespace(landmarks=lms, crops=crops, frames=np.full((4, 64, 64, 3), 128, np.uint8),
                         meta={"fps_out": 25.0, "window_s": [1.0, 1.76], "crop_size": 256})
    assert plots._real_frames(ex)[2] is True
    for draw, name in ((plots.overlay_png, "o.png"), (plots.trajectory_png, "t.png")):
        out = draw(ex, tmp_path / name)
        assert out.read_bytes()[:4] == b"\x89PNG"
    from PIL import Image

    img = np.asarray(Image.open(tmp_path / "o.png").convert("RGB")).astype(int)
    red = (img[..., 0] > 180) & (img[..., 1] < 40) & (img[..., 2] < 40)
    assert red.mean() > 0.2                            # the picture shows the real (red) frames
    ex.crops = None                                    # no crops kept: falls back to the model frames
    assert plots._real_frames(ex)[2] is False
    plots.overlay_png(ex, tmp_path / "o2.png")


def test_the_tasks_own_rest_and_peak_frames_are_used_when_given():
    mv = plots.movement(_face(), neutral=40, peak=5)        # e.g. a patient who starts with the expression held
    assert (mv.neutral, mv.peak) == (40, 5)
    assert abs(mv.regions["upper_lip"][5] - 0.2) < 0.02 and mv.regions["upper_lip"][45] < 0.01
