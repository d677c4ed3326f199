"""The motion-relative coordinate option of the contract (`coord_norm="first_frame_per_slot"`)."""
from __future__ import annotations

import numpy as np
import pytest

from model.contract import PreprocessContract
from worker import extract as ex
from worker import landmarks as lm


def _motion(tp: int) -> np.ndarray:
    t = np.linspace(0, 1, tp, dtype=np.float32)[:, None, None]
    rng = np.random.default_rng(1)
    return (t * rng.normal(0, 5, (1, 63, 2))).astype(np.float32)     # (tp, 63, 2), zero in frame 0


def _track(slots: np.ndarray, nose: np.ndarray, crop: int = 32) -> ex._Track:
    n = len(slots)
    tr = ex._Track(tp=n)
    for i in range(n):
        tr.src.append(i)
        tr.slots.append(slots[i])
        tr.nose.append(nose[i])
        tr.z.append(np.zeros(63, np.float32))
        tr.rgb.append(np.full((63, 3), 128, np.float32))
        tr.boxes.append(np.zeros(4, np.float32))
        tr.crops.append(np.zeros((crop, crop, 3), np.uint8))
    return tr


def test_per_slot_removes_a_constant_per_slot_offset():
    motion = _motion(16)
    rng = np.random.default_rng(0)
    a = motion + rng.normal(0, 40, (1, 63, 2)).astype(np.float32)     # two different fixed face shapes
    b = motion + rng.normal(0, 40, (1, 63, 2)).astype(np.float32)
    np.testing.assert_allclose(lm.coord_normalise(a, "first_frame_per_slot"), motion, atol=1e-4)
    np.testing.assert_allclose(lm.coord_normalise(b, "first_frame_per_slot"), motion, atol=1e-4)
    assert lm.coord_normalise(a, "first_frame_nose_tip") is a                  # the reference: unchanged
    with pytest.raises(ValueError):
        lm.coord_normalise(a, "bogus")


@pytest.mark.parametrize("scale_norm", ["none", "interocular"])
def test_extract_build_per_slot(scale_norm):
    tp, motion = 16, _motion(16)
    rng = np.random.default_rng(2)
    shape = rng.normal(100, 30, (1, 63, 2)).astype(np.float32)
    nose = np.tile(rng.normal(100, 5, (1, 2)).astype(np.float32), (tp, 1))
    c = PreprocessContract(tp=tp, tf=16, channels=("x", "y"), frame_size=32, scale_norm=scale_norm,
                           coord_norm="first_frame_per_slot")
    trajs = ex._build(_track(motion + shape, nose), c)[0]                  # (63, tp, 2)
    want = motion / (float(lm.interocular(shape[0])) if scale_norm == "interocular" else 1.0)
    np.testing.assert_allclose(trajs.transpose(1, 0, 2), want, rtol=1e-4, atol=1e-4)
    # the reference contract keeps the face shape (relative to the first nose tip)
    ref = ex._build(_track(motion + shape, nose), c.with_(coord_norm="first_frame_nose_tip", scale_norm="none"))[0]
    np.testing.assert_allclose(ref.transpose(1, 0, 2), motion + shape - nose[0], rtol=1e-4, atol=1e-3)
