"""Slots, window formulas (reference parity), mirroring and time reversal."""
from __future__ import annotations

import numpy as np
import pytest

from model.contract import REGIONS
from tests.conftest import FIXTURES
from worker import landmarks as lm


def test_slot_matrix_rows():
    m = lm.SLOT_MATRIX_468
    assert m.shape == (63, 468)
    np.testing.assert_allclose(m.sum(1), 1.0)
    rs = lm.region_slices()
    assert [r for r in rs] == list(REGIONS)
    # 9th eye slot is the 16-point contour centroid; the nose tip (1) is the 6th nose slot
    assert (m[rs["left_eye"].stop - 1] > 0).sum() == 16 and m[rs["left_eye"].stop - 1, 263] == pytest.approx(1 / 16)
    assert m[rs["nose"].start + 5, lm.NOSE_TIP_468] == 1.0
    assert lm.SLOT_MATRIX_106.shape == (63, 106) and (lm.SLOT_MATRIX_106.sum(0) > 0).sum() == 61


def test_loop_padding_formula():
    idx, index_t = lm.trajectory_window(100, 128)
    assert list(idx) == [i % 100 for i in range(128)]
    np.testing.assert_array_equal(index_t, 2 * np.array([i % 100 for i in range(128)], np.float32) / 128 - 1)
    assert index_t.dtype == np.float32 and index_t[0] == -1 and index_t.max() == pytest.approx(0.546875)


def test_latter_portion_formula():
    idx, index_t = lm.trajectory_window(150, 128)
    ref = np.linspace(22, 149, 128).astype(np.int32)
    np.testing.assert_array_equal(idx, ref)
    np.testing.assert_array_equal(index_t, (2 * ref / 128 - 1).astype(np.float32))
    assert index_t.max() == pytest.approx(1.328125)
    idx, _ = lm.trajectory_window(128, 128)
    assert list(idx) == list(range(128))


def test_index_t_matches_reference_fixture():
    path = FIXTURES / "trajectory_encoder_tp128.safetensors"
    if not path.exists():
        pytest.fail(f"needs the reference fixtures at {path}")
    from safetensors import safe_open

    with safe_open(str(path), "np") as f:
        ref = f.get_tensor("input.index_t_b2")
    np.testing.assert_array_equal(lm.trajectory_window(100, 128)[1], ref[0])
    np.testing.assert_array_equal(lm.trajectory_window(150, 128)[1], ref[1])


def test_rgb_window_aligned_with_trajectory_span():
    even = lm.rgb_window(22, 149, 80)
    assert even[0] == 22 and even[-1] == 149 and len(even) == 80 and np.all(np.diff(even) >= 1)
    loop = lm.rgb_window(0, 49, 80)
    assert list(loop) == [i % 50 for i in range(80)]


def test_mirror_permutation_swaps_groups_and_is_an_involution():
    p = lm.MIRROR_PERMUTATION
    rs = lm.region_slices()
    assert sorted(p) == list(range(63)) and np.array_equal(p[p], np.arange(63))
    assert list(p[rs["left_eye"]]) == list(range(rs["right_eye"].start, rs["right_eye"].stop))
    assert list(p[rs["right_brow"]]) == list(range(rs["left_brow"].start, rs["left_brow"].stop))
    trajs = np.random.default_rng(0).normal(size=(63, 16, 5)).astype(np.float32)
    m = lm.mirror_trajs(trajs)
    np.testing.assert_array_equal(m[rs["left_eye"], :, 0], -trajs[rs["right_eye"], :, 0])
    np.testing.assert_array_equal(m[rs["left_eye"], :, 2:], trajs[rs["right_eye"], :, 2:])
    np.testing.assert_array_equal(lm.mirror_trajs(m), trajs)


def test_mirror_matches_the_mesh_of_a_flipped_face(face_frame, mesh):
    # given a real face and its horizontal mirror image
    from worker.face import detect_landmarks

    a = lm.slots_from_468(detect_landmarks(face_frame, mesh))[:, :2]
    b = lm.slots_from_468(detect_landmarks(np.ascontiguousarray(face_frame[:, ::-1]), mesh))[:, :2]
    # then mirroring the slots of one gives the slots found on the other (left eye stays the left eye)
    mirrored = lm.mirror_points(a, face_frame.shape[1])
    iod = np.linalg.norm(a[0] - a[18])
    # (the mesh model is not exactly mirror-equivariant: a common shift of ~2% iod is allowed, then each slot
    # must land on its mirrored partner)
    offset = (mirrored - b).mean(0)
    assert np.linalg.norm(offset) < 0.05 * iod
    err = np.linalg.norm(mirrored - offset - b, axis=-1)
    assert err.mean() < 0.015 * iod and err.max() < 0.05 * iod, (err.mean() / iod, err.max() / iod)
    # and without the permutation it would be far off
    naive = a.copy()
    naive[:, 0] = face_frame.shape[1] - 1 - naive[:, 0]
    assert np.linalg.norm(naive - b, axis=-1).mean() > 0.2 * iod


def test_reverse_time():
    trajs = np.arange(63 * 4 * 5, dtype=np.float32).reshape(63, 4, 5)
    frames = np.arange(4 * 2 * 2 * 3, dtype=np.uint8).reshape(4, 2, 2, 3)
    t, f = lm.reverse_time(trajs, frames)
    np.testing.assert_array_equal(t[:, 0], trajs[:, 3])
    np.testing.assert_array_equal(f[0], frames[3])
