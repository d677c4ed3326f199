"""The 63 trajectory slots, windowing/padding of the trajectory and RGB streams, and augmentations.

Slot order follows the reference implementation's regions: left eye, left brow, right eye, right brow, nose,
bottom lip, upper lip (9 slots each; left/right are the subject's own). In the 468-point MediaPipe mesh an eye
has no pupil point, so its 9th slot is the centroid of the eye's 16-point contour.

Window rules (the reference's `pad_type='loop'` and test-mode `latter_truncate`, index_t formulas included;
the contract's `pad` picks another padding for short clips, see `trajectory_window`):
- n < Tp frames: idx = [i % n for i in range(Tp)], index_t = 2*idx/Tp - 1 (the index restarts each loop);
- n >= Tp: idx = linspace(n-Tp, n-1, Tp) as int32, index_t = 2*idx/Tp - 1 (can exceed 1, as the reference).
The RGB clip takes Tf frames from the same source span: evenly spaced when the span has >= Tf frames, looped
otherwise.
"""
from __future__ import annotations

import numpy as np

from model.contract import COORD_NORMS, FRAME_NORMS, PADS, REGIONS, SLOTS_PER_REGION

# ---- 468-point mesh (MediaPipe) -------------------------------------------------------------------------
LEFT_EYE_CONTOUR = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
RIGHT_EYE_CONTOUR = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
SLOTS_468: dict[str, tuple] = {
    "left_eye": (263, 388, 386, 384, 362, 381, 374, 390, LEFT_EYE_CONTOUR),
    "left_brow": (300, 293, 334, 296, 336, 285, 295, 282, 283),
    "right_eye": (33, 161, 159, 157, 133, 154, 145, 163, RIGHT_EYE_CONTOUR),
    "right_brow": (70, 63, 105, 66, 107, 55, 65, 52, 53),
    "nose": (6, 197, 195, 5, 4, 1, 2, 98, 327),
    "bottom_lip": (95, 88, 178, 87, 14, 317, 402, 318, 324),
    "upper_lip": (191, 80, 81, 82, 13, 312, 311, 310, 415),
}
NOSE_TIP_468 = 1

# ---- 106-point insightface scheme (what the paper used) -------------------------------------------------
SLOTS_106: dict[str, tuple[int, ...]] = {
    "left_eye": (33, 35, 36, 37, 38, 39, 40, 41, 42),
    "left_brow": (43, 44, 45, 46, 47, 48, 49, 50, 51),
    "right_eye": (87, 89, 90, 91, 92, 93, 94, 95, 96),
    "right_brow": (97, 98, 99, 100, 101, 102, 103, 104, 105),
    "nose": (72, 74, 75, 76, 78, 80, 84, 82, 81),
    "bottom_lip": (52, 54, 60, 57, 61, 58, 59, 56, 55),
    "upper_lip": (52, 63, 67, 61, 69, 70, 62, 66, 65),
}
NOSE_TIP_106 = 86


def _matrix(slots: dict[str, tuple], n_points: int) -> np.ndarray:
    """(63, n_points) averaging matrix: one row per slot, a centroid where the slot lists several points."""
    m = np.zeros((len(REGIONS) * SLOTS_PER_REGION, n_points), np.float64)
    row = 0
    for region in REGIONS:
        for entry in slots[region]:
            idx = entry if isinstance(entry, tuple) else (entry,)
            m[row, list(idx)] = 1.0 / len(idx)
            row += 1
    return m


SLOT_MATRIX_468 = _matrix(SLOTS_468, 468)
SLOT_MATRIX_106 = _matrix(SLOTS_106, 106)


def slots_from_468(pts: np.ndarray) -> np.ndarray:
    """(..., 468, k) mesh points -> (..., 63, k) slots."""
    # matmul on float64 (BLAS): 20x faster than the mixed-dtype einsum per frame, same values
    return np.matmul(SLOT_MATRIX_468, np.asarray(pts, np.float64)).astype(np.float32)


def slots_from_106(pts: np.ndarray) -> np.ndarray:
    """(..., 106, k) insightface points -> (..., 63, k) slots (the two mouth corners sit in both lip regions)."""
    return np.matmul(SLOT_MATRIX_106, np.asarray(pts, np.float64)).astype(np.float32)


def region_slices() -> dict[str, slice]:
    return {r: slice(i * SLOTS_PER_REGION, (i + 1) * SLOTS_PER_REGION) for i, r in enumerate(REGIONS)}


def interocular(slots: np.ndarray) -> np.ndarray:
    """Distance between the two eye centroids (slot 9 of each eye) for (..., 63, >=2) slots."""
    rs = region_slices()
    le, re = slots[..., rs["left_eye"].stop - 1, :2], slots[..., rs["right_eye"].stop - 1, :2]
    return np.linalg.norm(le - re, axis=-1)


def _anchor_slots() -> np.ndarray:
    """Slots that an expression barely moves: the nine nose slots and the four eye corners."""
    rs = region_slices()
    return np.r_[np.arange(rs["nose"].start, rs["nose"].stop),
                 [rs[e].start + k for e in ("left_eye", "right_eye") for k in (0, 4)]]


ANCHOR_SLOTS = _anchor_slots()


def _similarity(za: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares similarity from anchor points za (T, A) to ref (A,), complex coordinates: the map is
    z -> a (z - mu) + mu_ref; returns (a, mu, mu_ref) with a and mu of shape (T, 1)."""
    mu, mu_ref = za.mean(1, keepdims=True), ref.mean()
    src, dst = za - mu, ref[None] - mu_ref
    a = (np.conj(src) * dst).sum(1, keepdims=True) / np.maximum((np.abs(src) ** 2).sum(1, keepdims=True), 1e-12)
    return a, mu, mu_ref


def _complex(xy: np.ndarray) -> np.ndarray:
    return xy[..., 0].astype(np.float64) + 1j * xy[..., 1].astype(np.float64)


def align_to_first(xy: np.ndarray, anchors: np.ndarray = ANCHOR_SLOTS) -> np.ndarray:
    """Map every frame of (T, S, 2) points onto frame 0 by the least-squares similarity (rotation, uniform
    scale, translation) that best superimposes its anchor points on frame 0's: head motion is removed, the
    face's own motion stays."""
    z = _complex(xy)
    a, mu, mu_ref = _similarity(z[:, anchors], z[0, anchors])
    out = a * (z - mu) + mu_ref
    return np.stack([out.real, out.imag], -1).astype(xy.dtype)


def alignment_matrices(slots: np.ndarray, ref: np.ndarray, anchors: np.ndarray = ANCHOR_SLOTS) -> np.ndarray:
    """(T, 2, 3) affine matrices (for cv2.warpAffine) mapping each frame's image onto the frame whose slots are
    `ref` (S, 2), fitted on the anchor slots of (T, S, 2) `slots` given in the same pixel coordinates."""
    a, mu, mu_ref = _similarity(_complex(slots)[:, anchors], _complex(ref)[anchors])
    a, mu = a[:, 0], mu[:, 0]
    t = mu_ref - a * mu
    return np.stack([np.stack([a.real, -a.imag, t.real], -1), np.stack([a.imag, a.real, t.imag], -1)], 1)


def frame_normalise(frames: np.ndarray, frame_norm: str) -> np.ndarray:
    """Apply the contract's `frame_norm` to (Tf, H, W, 3) uint8 model frames: "none" keeps them;
    "first_frame_diff" gives 128 + (frame - first frame), clipped to 0-255, i.e. what moved, not who it is;
    "aligned_first_frame_diff" is the same on crops first aligned to the first one (`alignment_matrices`) and
    brought to its per-channel mean brightness (both done by the extractor, which holds the crops and their
    slots), so neither head motion nor a lighting change shows as change."""
    if frame_norm == "none":
        return frames
    if frame_norm in ("first_frame_diff", "aligned_first_frame_diff"):   # the alignment is done on the crops
        f = frames.astype(np.int16)
        return np.clip(128 + f - f[:1], 0, 255).astype(np.uint8)
    raise ValueError(f"unknown frame_norm {frame_norm!r}; expected one of {FRAME_NORMS}")


def coord_normalise(xy: np.ndarray, coord_norm: str) -> np.ndarray:
    """Apply the contract's `coord_norm` to (Tp, 63, 2) window coordinates already relative to the window's
    first nose tip (row 0 is the window's first frame: `trajectory_window` always starts at its lowest index).

    * "first_frame_nose_tip" (the reference): unchanged.
    * "first_frame_per_slot": each slot relative to its own position in the window's first frame, so the
      fixed face shape is removed and only the motion remains (row 0 becomes all zeros).
    * "first_frame_aligned": as "first_frame_per_slot" after each frame is aligned to the first by the
      similarity transform fitted on the nose and eye-corner slots (`align_to_first`), so head translation,
      roll and distance to the camera are removed as well and what remains is the expression.
    """
    if coord_norm == "first_frame_nose_tip":
        return xy
    if coord_norm == "first_frame_per_slot":
        return xy - xy[:1]
    if coord_norm == "first_frame_aligned":
        xy = align_to_first(xy)
        return xy - xy[:1]
    raise ValueError(f"unknown coord_norm {coord_norm!r}; expected one of {COORD_NORMS}")


# ---- windows ---------------------------------------------------------------------------------------------
def trajectory_window(n: int, tp: int, pad: str = "loop") -> tuple[np.ndarray, np.ndarray]:
    """Source frame indices (tp,) int64 and index_t (tp,) float32 for a clip of n frames.

    n >= tp: the latter tp frames (reference formula, whatever `pad`). n < tp, by the contract's `pad` (the paper's
    padding ablation): "loop" (the reference) repeats the clip, index_t restarting each loop; "duplicate" repeats
    the last frame (index_t stays at the last frame's); "zero" holds the last index but the extractor zeroes the
    padded rows; "interpolate" stretches the clip over tp frames (the extractor resamples the values with a cubic
    spline; idx is the nearest source frame, for pictures and metadata)."""
    if n <= 0:
        raise ValueError("no frames")
    if pad not in PADS:
        raise ValueError(f"unknown pad {pad!r}; expected one of {PADS}")
    if n >= tp:
        idx = np.linspace(n - tp, n - 1, tp).astype(np.int32).astype(np.int64)
    elif pad == "loop":
        idx = np.array([i % n for i in range(tp)], dtype=np.int64)
    elif pad in ("duplicate", "zero"):
        idx = np.minimum(np.arange(tp), n - 1).astype(np.int64)
    else:
        idx = np.round(np.linspace(0, n - 1, tp)).astype(np.int64)
    t = idx if (n >= tp or pad in ("loop", "duplicate")) else np.arange(tp)
    index_t = (2 * t.astype(np.float32) / tp - 1).astype(np.float32)
    return idx, index_t


def rgb_window(lo: int, hi: int, tf: int, pad: str = "loop") -> np.ndarray:
    """Tf source indices within [lo, hi] (the trajectory span): evenly spaced, or, when the span is short, looped
    ("loop", the reference), stretched ("interpolate": evenly spaced with repeats) or held at the last frame
    ("duplicate"; "zero" too, whose padded frames the extractor blanks)."""
    span = hi - lo + 1
    if span >= tf or pad == "interpolate":
        return lo + np.round(np.linspace(0, span - 1, tf)).astype(np.int64)
    if pad in ("duplicate", "zero"):
        return lo + np.minimum(np.arange(tf), span - 1).astype(np.int64)
    return lo + np.array([i % span for i in range(tf)], dtype=np.int64)


def resample_time(trajs: np.ndarray, tp: int) -> np.ndarray:
    """(V, n, C) -> (V, tp, C) by a cubic spline along time (the "interpolate" padding; linear for n < 4)."""
    n = trajs.shape[1]
    if n == 1:
        return np.repeat(trajs, tp, axis=1)
    q = np.linspace(0, n - 1, tp)
    if n < 4:                                           # linear between neighbouring frames
        i0 = np.minimum(q.astype(np.int64), n - 2)
        w = (q - i0)[None, :, None]
        return (trajs[:, i0] * (1 - w) + trajs[:, i0 + 1] * w).astype(trajs.dtype)
    from scipy.interpolate import CubicSpline

    return CubicSpline(np.arange(n), trajs, axis=1)(q).astype(trajs.dtype)


# ---- augmentations (training) ----------------------------------------------------------------------------
def _mirror_permutation() -> np.ndarray:
    """Slot permutation of a horizontally mirrored face (468 scheme): swap left/right groups slot by slot
    (the lists above are built so that slot j of one side mirrors slot j of the other), swap the two nostril
    wings in the nose, and reverse the lip rows (their points run from one mouth corner to the other)."""
    rs = region_slices()
    perm = np.arange(len(REGIONS) * SLOTS_PER_REGION)
    for a, b in (("left_eye", "right_eye"), ("left_brow", "right_brow")):
        perm[rs[a]], perm[rs[b]] = np.arange(63)[rs[b]], np.arange(63)[rs[a]]
    nose = np.arange(63)[rs["nose"]].copy()
    nose[7], nose[8] = nose[8], nose[7]
    perm[rs["nose"]] = nose
    for lip in ("bottom_lip", "upper_lip"):
        perm[rs[lip]] = np.arange(63)[rs[lip]][::-1]
    return perm


MIRROR_PERMUTATION = _mirror_permutation()


def mirror_trajs(trajs: np.ndarray, x_channel: int = 0) -> np.ndarray:
    """Mirror (63, T, C) trajectories of a horizontally flipped clip: x -> -x (coordinates are relative to the
    nose tip, so the flip is a sign change) and slots permuted so that each slot keeps its anatomical meaning."""
    out = trajs[MIRROR_PERMUTATION].copy()
    out[..., x_channel] = -out[..., x_channel]
    return out


def mirror_frames(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) -> horizontally flipped copy."""
    return np.ascontiguousarray(frames[:, :, ::-1])


def mirror_points(points: np.ndarray, width: float) -> np.ndarray:
    """(..., 63, >=2) slot coordinates in an image of `width` -> the same slots in the flipped image."""
    out = points[..., MIRROR_PERMUTATION, :].copy()
    out[..., 0] = (width - 1) - out[..., 0]
    return out


def reverse_time(trajs: np.ndarray,
                 frames: np.ndarray | None = None) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Time reversal as in the reference: the trajectory runs backwards, index_t is left as it is.
    Returns reversed trajs, or (trajs, frames) when frames are given."""
    t = np.ascontiguousarray(trajs[:, ::-1])
    if frames is None:
        return t
    return t, np.ascontiguousarray(frames[::-1])
