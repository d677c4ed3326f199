"""The motion-relative contract options: `coord_norm` ("first_frame_per_slot", "first_frame_aligned") and
`frame_norm` ("first_frame_diff", "aligned_first_frame_diff")."""
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


def test_frame_norm_first_frame_diff_keeps_what_moved_and_drops_the_face():
    frames = np.zeros((4, 8, 8, 3), np.uint8)
    frames[:] = 90                                           # a fixed appearance
    frames[2:, 2:4, 2:4] = 150                               # something moves in from frame 2
    out = lm.frame_normalise(frames, "first_frame_diff")
    assert out.dtype == np.uint8 and out.shape == frames.shape
    assert (out[0] == 128).all() and (out[1] == 128).all()
    assert (out[2:, 2:4, 2:4] == 128 + 60).all() and (out[2:, 5:] == 128).all()
    assert lm.frame_normalise(frames, "none") is frames
    with pytest.raises(ValueError):
        lm.frame_normalise(frames, "bogus")


def test_extract_build_applies_the_contract_frame_norm():
    tp, motion = 16, _motion(16)
    nose = np.full((tp, 2), 100, np.float32)
    track = _track(motion + 100, nose)
    for i, crop in enumerate(track.crops):
        crop[:] = 40 + i                                     # brightness rises frame by frame
    c = PreprocessContract(tp=tp, tf=16, channels=("x", "y"), frame_size=32, frame_norm="first_frame_diff")
    frames = ex._build(track, c)[2]
    assert frames[0].min() == frames[0].max() == 128 and frames[-1].min() == 128 + 15
    plain = ex._build(track, c.with_(frame_norm="none"))[2]
    assert plain[0].max() == 40 and plain[-1].max() == 55


def _similarity(pts: np.ndarray, angle: float, scale: float, shift) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return (pts @ np.array([[c, s], [-s, c]], np.float32) * scale + np.asarray(shift, np.float32)).astype(np.float32)


def test_first_frame_aligned_removes_head_motion_and_keeps_the_expression():
    """Head roll, scale and translation applied on top of a face's own motion: "first_frame_per_slot" keeps
    the head motion, "first_frame_aligned" gives back the face's motion (anchors: nose and eye corners)."""
    tp = 16
    rng = np.random.default_rng(3)
    shape = rng.normal(0, 40, (63, 2)).astype(np.float32)
    motion = _motion(tp)
    motion[:, lm.ANCHOR_SLOTS] = 0                                  # the expression leaves the anchors alone
    t = np.linspace(0, 1, tp)
    moved = np.stack([_similarity(shape + motion[i], 0.08 * t[i], 1 + 0.05 * t[i], (6 * t[i], -4 * t[i]))
                      for i in range(tp)])
    aligned = lm.coord_normalise(moved, "first_frame_aligned")
    np.testing.assert_allclose(aligned, motion, atol=0.05 * np.abs(motion).max())
    per_slot = lm.coord_normalise(moved, "first_frame_per_slot")
    assert np.abs(per_slot - motion).max() > 5 * np.abs(aligned - motion).max()
    assert np.abs(aligned[0]).max() == 0


def test_alignment_matrices_map_each_frame_onto_the_reference():
    rng = np.random.default_rng(4)
    ref = rng.normal(100, 30, (63, 2)).astype(np.float32)
    frames = np.stack([_similarity(ref - 100, a, s, (100 + dx, 100 + dy))
                       for a, s, dx, dy in [(0.0, 1.0, 0, 0), (0.1, 0.9, 5, -3), (-0.2, 1.1, -7, 2)]])
    mats = lm.alignment_matrices(frames, ref)
    assert mats.shape == (3, 2, 3)
    back = np.einsum("tij,tsj->tsi", mats, np.concatenate([frames, np.ones((3, 63, 1), np.float32)], -1))
    np.testing.assert_allclose(back, np.broadcast_to(ref, back.shape), atol=1e-3)


def test_extract_build_aligned_frame_diff_cancels_head_motion_and_lighting():
    """A textured face that only moves rigidly and brightens: the aligned, gain-matched difference frames
    stay near 128 where the plain difference frames light up."""
    import cv2

    tp, size = 16, 64
    rng = np.random.default_rng(5)
    tex = cv2.GaussianBlur(rng.integers(40, 200, (size, size, 3)).astype(np.uint8), (7, 7), 2)
    ref = rng.uniform(20, 44, (63, 2)).astype(np.float32)
    track = _track(np.repeat(ref[None], tp, 0), np.full((tp, 2), 32, np.float32), crop=size)
    for i in range(tp):
        a, dx = 0.006 * i, 0.2 * i
        fwd = np.array([[np.cos(a), -np.sin(a), dx], [np.sin(a), np.cos(a), 0]], np.float32)
        fwd[:, 2] += np.array([32, 32], np.float32) - fwd[:, :2] @ np.array([32, 32], np.float32)
        track.crops[i] = np.clip(cv2.warpAffine(tex, fwd, (size, size), borderMode=cv2.BORDER_REFLECT)
                                 * (1 + 0.01 * i), 0, 255).astype(np.uint8)
        track.slots[i] = ref @ fwd[:, :2].T + fwd[:, 2]
    c = PreprocessContract(tp=tp, tf=16, channels=("x", "y"), frame_size=size, frame_norm="first_frame_diff")
    plain = ex._build(track, c)[2].astype(np.float32) - 128
    aligned = ex._build(track, c.with_(frame_norm="aligned_first_frame_diff"))[2].astype(np.float32) - 128
    inner = (slice(None), slice(12, -12), slice(12, -12))                  # away from the warped border
    assert np.abs(aligned[inner]).mean() < 0.4 * np.abs(plain[inner]).mean()
    assert (aligned[0] == 0).all()


@pytest.mark.parametrize("pad", ["loop", "duplicate", "zero", "interpolate"])
def test_padding_kinds_of_a_short_clip(pad):
    """The contract's `pad` (the paper's padding ablation) for a clip shorter than Tp and Tf."""
    n, tp = 10, 16
    motion = _motion(n) + 50.0                                         # steadily moving slots
    track = _track(motion, np.full((n, 2), 50, np.float32))
    for i, crop in enumerate(track.crops):
        crop[:] = 100 + 10 * i
    c = PreprocessContract(tp=tp, tf=16, channels=("x", "y"), frame_size=32, pad=pad)
    trajs, index_t, frames = ex._build(track, c)[:3]
    assert trajs.shape == (63, tp, 2) and index_t.shape == (tp,) and frames.shape == (16, 32, 32, 3)
    want = (motion - 50.0).transpose(1, 0, 2)                          # (63, n, 2), relative to the first nose
    if pad == "interpolate":
        np.testing.assert_allclose(trajs[:, [0, -1]], want[:, [0, -1]], atol=1e-3)     # stretched end to end
        np.testing.assert_allclose(index_t, 2 * np.arange(tp) / tp - 1, atol=1e-6)
        assert (np.diff(frames[:, 0, 0, 0].astype(int)) >= 0).all() and frames[-1].max() == 190
    else:
        np.testing.assert_allclose(trajs[:, :n], want, atol=1e-3)
        tail = trajs[:, n:]
        if pad == "loop":
            np.testing.assert_allclose(tail, want[:, : tp - n], atol=1e-3)
            assert frames[n, 0, 0, 0] == 100
        elif pad == "duplicate":
            np.testing.assert_allclose(tail, np.repeat(want[:, -1:], tp - n, 1), atol=1e-3)
            assert index_t[-1] == index_t[n - 1] and (frames[n:] == 190).all()
        else:
            assert (tail == 0).all() and (frames[n:] == 0).all() and frames[n - 1].max() == 190
    with pytest.raises(ValueError):
        lm.trajectory_window(n, tp, "bogus")
