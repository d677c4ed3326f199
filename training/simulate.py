"""Simulated patients: videos of the five PFED5 expressions (known severity 0-4, MDS-UPDRS 3.2) and the five
Toronto NeuroFace tasks (known rating 1-5, the Toronto raters' scale), as single-movement clips and as whole
recordings (several repetitions with pauses and a neutral lead-in, 6 to 12 s, with known episode bounds).

SIMULATED DATA, NOT FOR CLINICAL USE. The clips exist to train and test the pipeline end to end (the shipped
demo models), never to stand in for patients.

How a clip is made:
1. A real face photograph from `training/identities/` (licences in `identities.json`) and its 468-point face
   mesh (`worker.face.detect_landmarks`, cached next to the photo).
2. Per frame, mesh points move by an expression's displacement (mouth corners out/up for a smile, brows down
   and in for a frown, lids closed for squeezed eyes, lips drawn apart over the teeth for clenched teeth,
   near stillness with blinks at rest; Toronto: cheeks puffed out for blow, lips puckered for kiss, brows raised
   for brow, jaw and lower lip dropped for open, mouth corners drawn straight out for spread), scaled by an
   activation curve over time (one rise for a clip; rise, hold and fall per repetition for a whole recording).
3. The image follows the mesh through a displacement field interpolated linearly over a Delaunay
   triangulation of the mesh (plus fixed anchors around the image border), i.e. a piecewise-affine warp.
4. Severity (PFED5 0-4; a Toronto rating r is severity r - 1) models hypomimia / weakness: lower amplitude and slower rise, later onset, left/right asymmetry and a resting
   tremor; at rest fewer blinks, less spontaneous movement and lips parted. Head motion, lighting, colour and
   noise vary at random, independent of severity.
"""
from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model.contract import PFED5_EXPRESSIONS, TORONTO_EXPRESSIONS

IDENTITY_DIR = Path(__file__).resolve().parent / "identities"
FPS = 25.0
FRAME_SIZE = 256
DISCLAIMER = "SIMULATED DATA - NOT FOR CLINICAL USE"
# 64 frames: the whole clip fits the demo's Tp=64 trajectory window, so every window starts from a neutral face
SIM_EXPRESSIONS = PFED5_EXPRESSIONS + TORONTO_EXPRESSIONS
CLIP_SECONDS = {e: 2.56 for e in SIM_EXPRESSIONS}
RECORDING_SECONDS = (6.0, 12.0)   # whole recordings: several repetitions with pauses and a neutral lead-in

# Face-mesh (MediaPipe 468) indices; "right"/"left" are the subject's own.
MOUTH_CORNERS = {"right": 61, "left": 291}
UPPER_LIP = [0, 37, 39, 40, 185, 267, 269, 270, 409, 13, 82, 81, 80, 191, 312, 311, 310, 415]
LOWER_LIP = [17, 84, 181, 91, 146, 314, 405, 321, 375, 14, 87, 178, 88, 95, 317, 402, 318, 324]
INNER_MOUTH = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95]
LID_PAIRS = {  # (upper lid point, lower lid point below it)
    "right": [(246, 7), (161, 163), (160, 144), (159, 145), (158, 153), (157, 154), (173, 155)],
    "left": [(466, 249), (388, 390), (387, 373), (386, 374), (385, 380), (384, 381), (398, 382)],
}
BROW_INNER = {"right": [107, 66, 55, 65], "left": [336, 296, 285, 295]}
BROW_OUTER = {"right": [70, 63, 105, 46, 53, 52], "left": [300, 293, 334, 276, 283, 282]}
CHEEKS = {"right": [205, 50, 101], "left": [425, 280, 330]}
EYE_CENTRE_IDS = {"right": [33, 133], "left": [263, 362]}
JAW = [152, 148, 377, 176, 400, 149, 378, 175, 199, 200]
# the lower cheek between the mouth corner and the face's edge (what puffs out when blowing)
LOWER_CHEEKS = {"right": [207, 192, 187, 147, 213], "left": [427, 416, 411, 376, 433]}
BROWS = {s: BROW_INNER[s] + BROW_OUTER[s] for s in ("right", "left")}
# Where each Toronto task moves the face (the points its motion is defined on; tests check that severity lowers
# the movement there).
TORONTO_REGIONS = {"blow": LOWER_CHEEKS["right"] + LOWER_CHEEKS["left"],
                   "kiss": list(MOUTH_CORNERS.values()),
                   "brow": BROWS["right"] + BROWS["left"],
                   "open": LOWER_LIP + JAW,
                   "spread": list(MOUTH_CORNERS.values())}


def score_for(expression: str, severity: int) -> int:
    """The label of a simulated clip on its task's clinical scale: PFED5 severity 0-4 as it is (MDS-UPDRS 3.2),
    a Toronto task's rating 1 (normal) .. 5 (severely impaired) = severity + 1 (model.scales.TORONTO)."""
    return int(severity) + 1 if expression in TORONTO_EXPRESSIONS else int(severity)


@dataclass(frozen=True)
class Identity:
    id: str            # pseudo-identity id, e.g. "astronaut" or "astronaut-mirror"
    base: str          # base identity (splits are made on this)
    photo: str         # file name under training/identities/
    mirrored: bool = False
    shape: int = 0     # 0: the photograph's own face; k > 0: a fixed shape/skin-tone variant (see shape_field)

    def variant(self, k: int) -> Identity:
        return Identity(f"{self.id}-shape{k}", self.base, self.photo, self.mirrored, k)


# --------------------------------------------------------------------------------------------- identities
def load_identities(identity_dir: Path = IDENTITY_DIR) -> list[dict]:
    return json.loads((identity_dir / "identities.json").read_text())["identities"]


def pseudo_identities(n: int, identity_dir: Path = IDENTITY_DIR) -> list[Identity]:
    """n pseudo-identities: every base photo first, then mirrored variants (same base identity).
    Shape variants are added per split by `simulate(shapes=...)`."""
    bases = load_identities(identity_dir)
    out: list[Identity] = []
    for i in range(n):
        b = bases[i % len(bases)]
        variant = i // len(bases)
        if variant > 1:
            raise ValueError(f"at most {2 * len(bases)} identities (each base photo and its mirror image)")
        out.append(Identity(b["id"] + ("-mirror" if variant else ""), b["id"], b["photo"], bool(variant)))
    return out


def identity_face(ident: Identity, identity_dir: Path = IDENTITY_DIR) -> tuple[np.ndarray, np.ndarray]:
    """(image RGB uint8 (H,W,3), mesh (468,3)) for a pseudo-identity; the mesh is cached on disk."""
    import cv2

    img = cv2.cvtColor(cv2.imread(str(identity_dir / ident.photo)), cv2.COLOR_BGR2RGB)
    if ident.mirrored:
        img = np.ascontiguousarray(img[:, ::-1])
    cache = identity_dir / "mesh_cache" / f"{Path(ident.photo).stem}{'-mirror' if ident.mirrored else ''}.npy"
    if cache.exists():
        return img, np.load(cache)
    from worker.face import detect_landmarks

    pts = detect_landmarks(img)
    if pts is None:
        raise RuntimeError(f"no face found in identity photo {ident.photo}")
    cache.parent.mkdir(exist_ok=True)
    np.save(cache, pts.astype(np.float32))
    return img, pts.astype(np.float32)


# --------------------------------------------------------------------------------------------- the warp
class MeshWarp:
    """Backward warp of an image by displacements given at mesh points, linear over a Delaunay mesh."""

    def __init__(self, mesh_xy: np.ndarray, size: tuple[int, int], step: int = 2) -> None:
        from scipy.spatial import Delaunay

        h, w = size
        border = [(x, y) for x in np.linspace(0, w - 1, 9) for y in (0, h - 1)]
        border += [(x, y) for y in np.linspace(0, h - 1, 9)[1:-1] for x in (0, w - 1)]
        centre = mesh_xy.mean(0)
        ring = (mesh_xy - centre) * 1.35 + centre  # a zero-displacement ring just outside the face
        hull = Delaunay(mesh_xy).convex_hull
        ring_ids = np.unique(hull)
        pts = np.vstack([mesh_xy, ring[ring_ids], np.asarray(border, np.float32)])
        self.n_mesh = len(mesh_xy)
        self.n_points = len(pts)
        tri = Delaunay(pts)
        # the field is smooth: evaluate it on a coarser grid and upsample
        gh, gw = (h + step - 1) // step, (w + step - 1) // step
        yy, xx = np.mgrid[0:gh, 0:gw] * step
        q = np.stack([xx.ravel(), yy.ravel()], 1).astype(np.float64)
        simplex = tri.find_simplex(q)
        simplex[simplex < 0] = 0
        t = tri.transform[simplex]  # (P, 3, 2)
        bary2 = np.einsum("pij,pj->pi", t[:, :2], q - t[:, 2])
        self.weights = np.hstack([bary2, 1 - bary2.sum(1, keepdims=True)]).astype(np.float32)  # (P, 3)
        self.vertices = tri.simplices[simplex]  # (P, 3)
        yy, xx = np.mgrid[0:h, 0:w]
        self.grid = np.stack([xx, yy], -1).astype(np.float32)
        self.size = size
        self.coarse = (gh, gw)

    def __call__(self, image: np.ndarray, disp: np.ndarray) -> np.ndarray:
        import cv2

        full = np.zeros((self.n_points, 2), np.float32)
        full[: self.n_mesh] = disp
        d = (full[self.vertices] * self.weights[..., None]).sum(1).reshape(*self.coarse, 2)
        d = cv2.resize(d, (self.size[1], self.size[0]), interpolation=cv2.INTER_LINEAR)
        m = self.grid - d
        return cv2.remap(image, m[..., 0], m[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


# --------------------------------------------------------------------------------------------- motion
def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _bump(mesh: np.ndarray, centre: np.ndarray, vec: np.ndarray, radius: float) -> np.ndarray:
    """Gaussian-weighted displacement of mesh points around a handle."""
    w = np.exp(-((mesh - centre) ** 2).sum(1) / (2 * radius**2))
    return w[:, None] * vec[None, :]


class FaceGeometry:
    def __init__(self, mesh: np.ndarray) -> None:
        self.xy = mesh[:, :2].astype(np.float32)
        self.eye = {s: self.xy[ids].mean(0) for s, ids in EYE_CENTRE_IDS.items()}
        self.iod = float(np.linalg.norm(self.eye["left"] - self.eye["right"]))
        # image x direction pointing from the subject's right to left (handles mirrored photos)
        self.lr = np.sign(self.eye["left"][0] - self.eye["right"][0]) or 1.0
        self.mid_x = float(self.xy[[1, 168, 6]][:, 0].mean())
        self.side = np.where((self.xy[:, 0] - self.mid_x) * self.lr > 0, 1.0, -1.0)  # +1 subject's left

    def out(self, s: str) -> float:
        """Image-x sign pointing away from the midline on the subject's side s."""
        return self.lr * (1.0 if s == "left" else -1.0)


def expression_field(geo: FaceGeometry, expression: str) -> np.ndarray:
    """(468, 2) displacement at full healthy amplitude (image pixels)."""
    xy, u = geo.xy, geo.iod
    d = np.zeros_like(xy)
    if expression == "smile":
        for s, i in MOUTH_CORNERS.items():
            d += _bump(xy, xy[i], np.array([0.16 * u * geo.out(s), -0.10 * u]), 0.22 * u)
        for s, ids in CHEEKS.items():
            d += _bump(xy, xy[ids].mean(0), np.array([0.02 * u * geo.out(s), -0.05 * u]), 0.2 * u)
        d[UPPER_LIP] += np.array([0.0, -0.02 * u])
        d[LOWER_LIP] += np.array([0.0, 0.03 * u])
    elif expression == "frown":
        for s in ("left", "right"):
            inner = xy[BROW_INNER[s]].mean(0)
            d += _bump(xy, inner, np.array([-0.07 * u * geo.out(s), 0.09 * u]), 0.13 * u)
            d += _bump(xy, xy[BROW_OUTER[s]].mean(0), np.array([0.0, 0.04 * u]), 0.15 * u)
            d += _bump(xy, xy[MOUTH_CORNERS[s]], np.array([0.0, 0.04 * u]), 0.15 * u)
    elif expression == "squeeze_eyes":
        for s, pairs in LID_PAIRS.items():
            for up, lo in pairs:
                gap = xy[lo, 1] - xy[up, 1]
                d[up, 1] += 0.85 * gap
                d[lo, 1] -= 0.1 * gap
            d += _bump(xy, xy[BROW_INNER[s] + BROW_OUTER[s]].mean(0), np.array([0.0, 0.06 * u]), 0.18 * u)
            d += _bump(xy, xy[CHEEKS[s]].mean(0), np.array([0.0, -0.05 * u]), 0.18 * u)
    elif expression == "clench_teeth":
        d[UPPER_LIP] += np.array([0.0, -0.07 * u])
        d[LOWER_LIP] += np.array([0.0, 0.09 * u])
        for s, i in MOUTH_CORNERS.items():
            d += _bump(xy, xy[i], np.array([0.12 * u * geo.out(s), 0.0]), 0.18 * u)
    elif expression == "blow":      # cheeks puffed out, lips sealed and pressed a little together
        for s, ids in LOWER_CHEEKS.items():
            d += _bump(xy, xy[ids].mean(0), np.array([0.11 * u * geo.out(s), 0.01 * u]), 0.24 * u)
            d += _bump(xy, xy[MOUTH_CORNERS[s]], np.array([-0.05 * u * geo.out(s), 0.01 * u]), 0.1 * u)
        d[UPPER_LIP] += np.array([0.0, 0.015 * u])
        d[LOWER_LIP] += np.array([0.0, -0.015 * u])
    elif expression == "kiss":      # lips puckered: corners drawn in towards the midline, the lips rounded
        for s, i in MOUTH_CORNERS.items():
            d += _bump(xy, xy[i], np.array([-0.15 * u * geo.out(s), 0.01 * u]), 0.14 * u)
            d += _bump(xy, xy[CHEEKS[s]].mean(0), np.array([-0.02 * u * geo.out(s), 0.0]), 0.2 * u)
        d[UPPER_LIP] += np.array([0.0, -0.02 * u])
        d[LOWER_LIP] += np.array([0.0, 0.025 * u])
    elif expression == "brow":      # brows raised, the forehead with them, the eyes a little wider
        for s in ("left", "right"):
            d += _bump(xy, xy[BROW_INNER[s]].mean(0), np.array([0.0, -0.10 * u]), 0.14 * u)
            d += _bump(xy, xy[BROW_OUTER[s]].mean(0), np.array([0.0, -0.09 * u]), 0.16 * u)
        for pairs in LID_PAIRS.values():
            for up, lo in pairs:
                d[up, 1] -= 0.12 * (xy[lo, 1] - xy[up, 1])
    elif expression == "open":      # mouth opened wide: the jaw and lower lip drop, the corners come in
        d += _bump(xy, xy[JAW].mean(0), np.array([0.0, 0.18 * u]), 0.4 * u)
        d[LOWER_LIP] += np.array([0.0, 0.06 * u])
        d[UPPER_LIP] += np.array([0.0, -0.02 * u])
        for s, i in MOUTH_CORNERS.items():
            d += _bump(xy, xy[i], np.array([-0.03 * u * geo.out(s), 0.05 * u]), 0.12 * u)
    elif expression == "spread":    # lips spread wide ("eee"): corners drawn straight out, lips a little apart
        for s, i in MOUTH_CORNERS.items():
            d += _bump(xy, xy[i], np.array([0.19 * u * geo.out(s), 0.0]), 0.2 * u)
        d[UPPER_LIP] += np.array([0.0, -0.015 * u])
        d[LOWER_LIP] += np.array([0.0, 0.025 * u])
    elif expression != "sit_at_rest":
        raise ValueError(f"unknown expression {expression!r}")
    return d


def shape_field(geo: FaceGeometry, rng: np.random.Generator) -> np.ndarray:
    """(468, 2) fixed displacement that changes a face's proportions: a shape variant of the same photograph
    (face width and height, eye spacing and height, brow height, nose length, mouth width and height)."""
    xy, u = geo.xy, geo.iod
    centre = xy.mean(0)
    d = (xy - centre) * (rng.uniform(0.92, 1.08, 2) - 1.0)                    # face width / height
    for s in ("left", "right"):
        eye = geo.eye[s]
        d += _bump(xy, eye, np.array([rng.uniform(-0.04, 0.04) * u * geo.out(s), 0.0]), 0.3 * u)
        d += _bump(xy, xy[BROW_INNER[s] + BROW_OUTER[s]].mean(0), np.array([0.0, rng.uniform(-0.04, 0.04) * u]),
                   0.2 * u)
        d += _bump(xy, xy[MOUTH_CORNERS[s]], np.array([rng.uniform(-0.05, 0.05) * u * geo.out(s), 0.0]), 0.2 * u)
    d += _bump(xy, (geo.eye["left"] + geo.eye["right"]) / 2, np.array([0.0, rng.uniform(-0.03, 0.03) * u]),
               0.45 * u)
    d += _bump(xy, xy[1], np.array([0.0, rng.uniform(-0.03, 0.03) * u]), 0.25 * u)  # nose tip: nose length
    mouth = xy[[13, 14]].mean(0)
    d += _bump(xy, mouth, np.array([0.0, rng.uniform(-0.04, 0.04) * u]), 0.35 * u)  # lower-face height
    return d.astype(np.float32)


def skin_tone(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A fixed colour and brightness change of the photograph (per-channel gain, gamma)."""
    gain = rng.uniform(0.82, 1.12, 3) * rng.uniform(0.9, 1.1)
    gamma = rng.uniform(0.8, 1.25)
    out = 255.0 * (img.astype(np.float32) / 255.0) ** gamma * gain
    return np.clip(out, 0, 255).astype(np.uint8)


def _variant_rng(ident: Identity) -> np.random.Generator:
    key = f"shape|{ident.base}|{ident.mirrored}|{ident.shape}"
    return np.random.default_rng(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little"))


def variant_face(ident: Identity, img: np.ndarray, mesh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(photo, static (468, 2) displacement) of a pseudo-identity; shape 0 is the photo as it is."""
    if ident.shape == 0:
        return img, np.zeros((len(mesh), 2), np.float32)
    rng = _variant_rng(ident)
    return skin_tone(img, rng), shape_field(FaceGeometry(mesh), rng)


def blink_field(geo: FaceGeometry) -> np.ndarray:
    d = np.zeros_like(geo.xy)
    for pairs in LID_PAIRS.values():
        for up, lo in pairs:
            d[up, 1] += 0.9 * (geo.xy[lo, 1] - geo.xy[up, 1])
    return d


def lips_part_field(geo: FaceGeometry) -> np.ndarray:
    d = np.zeros_like(geo.xy)
    d[LOWER_LIP] += np.array([0.0, 0.06 * geo.iod])
    d[JAW] += np.array([0.0, 0.04 * geo.iod])
    return d


def _blink_curve(t: np.ndarray, times: list[float], dur: float = 0.22) -> np.ndarray:
    a = np.zeros_like(t)
    for b in times:
        a = np.maximum(a, np.clip(1 - np.abs(t - b) / (dur / 2), 0, 1))
    return a


@dataclass
class ClipPlan:
    expression: str
    severity: int
    n_frames: int
    amplitude: float
    onset_s: float
    rise_s: float
    asym: float
    weak_side: float          # +1: subject's left weaker, -1: right
    tremor_px: float
    tremor_hz: float
    blinks: list
    lips_part: float
    twitch: float


def plan_clip(expression: str, severity: int, rng: np.random.Generator) -> ClipPlan:
    n = int(round(CLIP_SECONDS[expression] * FPS))
    s = float(severity)
    dur = n / FPS
    if expression == "sit_at_rest":
        rate = max(0.05, 0.6 - 0.14 * s) * rng.uniform(0.8, 1.2)   # blinks per second
        nb = rng.poisson(rate * dur)
    else:
        nb = rng.integers(0, 2) if expression != "squeeze_eyes" else 0
    blinks = sorted(rng.uniform(0.2, dur - 0.2, size=int(nb)).tolist())
    return ClipPlan(
        expression=expression, severity=severity, n_frames=n,
        amplitude=float(np.clip(1.0 - 0.2 * s + rng.normal(0, 0.035), 0.1, 1.1)),
        onset_s=float(0.35 + 0.2 * s + rng.uniform(0, 0.15)),
        rise_s=float(0.3 + 0.15 * s + rng.uniform(-0.05, 0.05)),
        asym=float(np.clip(0.08 * s * rng.uniform(0.6, 1.4), 0, 0.6)),
        weak_side=float(rng.choice([-1.0, 1.0])),
        tremor_px=float(0.012 * s * rng.uniform(0.7, 1.3)),     # in interocular units
        tremor_hz=float(rng.uniform(4.0, 6.0)),
        blinks=blinks,
        lips_part=float(np.clip((s - 1.5) / 2.5, 0, 1) * rng.uniform(0.7, 1.2)),
        twitch=float(max(0.0, 0.35 - 0.09 * s) * rng.uniform(0.7, 1.3)),
    )


def mesh_motion(geo: FaceGeometry, plan: ClipPlan, rng: np.random.Generator) -> np.ndarray:
    """(T, 468, 2) mesh displacements for one clip."""
    t = np.arange(plan.n_frames) / FPS
    base = expression_field(geo, plan.expression)
    act = plan.amplitude * _smoothstep((t - plan.onset_s) / plan.rise_s)
    disp = act[:, None, None] * base[None]
    if plan.expression == "sit_at_rest":
        # spontaneous small movements (a slight smile, brow lift), which fade with hypomimia
        smile = expression_field(geo, "smile")
        phase = rng.uniform(0, 2 * np.pi)
        disp += (plan.twitch * 0.5 * (1 + np.sin(2 * np.pi * 0.6 * t + phase)))[:, None, None] * smile * 0.5
        # the lips fall open as the face relaxes (parted lips at rest are a sign of hypomimia)
        disp += (plan.lips_part * _smoothstep((t - 0.3) / 1.5))[:, None, None] * lips_part_field(geo)[None]
    # asymmetry: the weak side moves less
    weak = np.where(geo.side == plan.weak_side, 1.0 - plan.asym, 1.0)
    disp *= weak[None, :, None]
    disp += _blink_curve(t, plan.blinks)[:, None, None] * blink_field(geo)[None]
    # resting tremor of the jaw and lips (vertical), lower face only
    lower = np.clip((geo.xy[:, 1] - geo.xy[1, 1]) / (0.6 * geo.iod), 0, 1)
    trem = plan.tremor_px * geo.iod * np.sin(2 * np.pi * plan.tremor_hz * t + rng.uniform(0, 6.3))
    disp[:, :, 1] += trem[:, None] * lower[None]
    return disp.astype(np.float32)


# --------------------------------------------------------------------------------------------- rendering
def _smooth_walk(rng: np.random.Generator, n: int, scale: float, smooth: int = 12) -> np.ndarray:
    x = np.cumsum(rng.normal(0, 1, n + smooth))
    x = np.convolve(x, np.ones(smooth) / smooth, mode="valid")[:n]
    x = x - x[0]
    return scale * x / (np.abs(x).max() + 1e-6) * rng.uniform(0.3, 1.0)


def _paint_mouth(frame: np.ndarray, mouth: np.ndarray, colour: tuple[int, int, int], opacity: float) -> None:
    import cv2

    if opacity <= 0.02:
        return
    mask = np.zeros(frame.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(mouth).astype(np.int32)], 255)
    mask = cv2.GaussianBlur(mask, (3, 3), 0).astype(np.float32)[..., None] / 255 * opacity
    frame[:] = (frame * (1 - mask) + np.asarray(colour, np.float32) * mask).astype(np.uint8)


def _compose_frames(img: np.ndarray, warp: MeshWarp, geo: FaceGeometry, disp: np.ndarray,
                    static: np.ndarray | None, expression: str, lips_part: float,
                    head: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
                    light: tuple[np.ndarray, np.ndarray, float, np.ndarray],
                    rng: np.random.Generator) -> np.ndarray:
    """The frames of a clip or recording: per frame the mesh warp (plus `static`), the mouth's inside
    (teeth for clench/spread, dark for an open mouth), the head's similarity motion `head` = (rotation in
    degrees, tx, ty, scale) and the lighting `light` = (gain, colour, noise level, noise bank). Draws from
    `rng` only for the noise field's offset, in frame order (the callers' random streams depend on it)."""
    import cv2

    rot, tx, ty, sc = head
    gain, colour, noise, bank = light
    n = disp.shape[0]
    h, w = img.shape[:2]
    centre = tuple(float(v) for v in geo.xy[1])
    teeth = expression in ("clench_teeth", "spread")
    dark = expression == "open" or lips_part > 0      # the open mouth's inside
    mouth_open = (disp[:, 14, 1] - disp[:, 13, 1]) / (0.1 * geo.iod)
    frames = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        f = warp(img, disp[i] if static is None else disp[i] + static)
        if teeth or dark:
            shade = (235, 232, 220) if teeth else (70, 40, 40)
            _paint_mouth(f, geo.xy[INNER_MOUTH] + disp[i, INNER_MOUTH], shade,
                         float(np.clip(mouth_open[i], 0, 1)) * (0.85 if teeth else 0.6))
        m = cv2.getRotationMatrix2D(centre, float(rot[i]), float(sc[i]))
        m[:, 2] += (tx[i], ty[i])
        f = cv2.warpAffine(f, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        g = f.astype(np.float32) * (gain[i] * colour)
        if noise > 0.3:
            g += np.roll(bank[i % 4], int(rng.integers(0, h)), axis=0)
        frames[i] = np.clip(g, 0, 255).astype(np.uint8)
    return frames


def render_clip(img: np.ndarray, mesh: np.ndarray, warp: MeshWarp, plan: ClipPlan,
                rng: np.random.Generator, static: np.ndarray | None = None) -> np.ndarray:
    """(T, H, W, 3) uint8 RGB frames of one simulated clip; `static` is a shape variant's fixed displacement
    (the expression then moves the reshaped face)."""

    if static is not None:
        mesh = mesh.copy()
        mesh[:, :2] += static
    geo = FaceGeometry(mesh)
    disp = mesh_motion(geo, plan, rng)                 # motion of the (reshaped) face; the warp adds `static`
    n = plan.n_frames
    h, w = img.shape[:2]
    rot = _smooth_walk(rng, n, 2.0)                    # degrees
    tx, ty = _smooth_walk(rng, n, 3.0), _smooth_walk(rng, n, 2.0)
    sc = 1 + _smooth_walk(rng, n, 0.02)
    gain = rng.uniform(0.8, 1.15) * (1 + _smooth_walk(rng, n, 0.05))
    colour = rng.uniform(0.9, 1.1, 3).astype(np.float32)
    noise = rng.uniform(0.0, 4.0)
    bank = rng.normal(0, noise, (4, h, w, 3)).astype(np.float32)  # sensor noise, a few fields reused
    frames = _compose_frames(img, warp, geo, disp, static, plan.expression, plan.lips_part, (rot, tx, ty, sc),
                             (gain, colour, noise, bank), rng)
    return frames


def write_video(path: Path, frames: np.ndarray, fps: float = FPS, *, lossless: bool = False) -> None:
    """H.264 mp4 (yuv420p, crf 18; `lossless`: qp 0) with the disclaimer in the container metadata.

    libx264 under PyAV 18.1 does not always write the same bitstream for the same frames, even in one process on
    one thread (seen on 224 px recordings: 3 writes, 3 files), so crf 18 files decode to slightly different frames
    from run to run. Where a result must repeat exactly (the measures' validation), write `lossless`: whatever
    the bitstream, it decodes to the same frames."""
    import av

    with av.open(str(path), "w") as out:
        out.metadata["comment"] = DISCLAIMER
        st = out.add_stream("libx264", rate=int(round(fps)))
        st.width, st.height = frames.shape[2], frames.shape[1]
        st.pix_fmt = "yuv420p"
        st.options = {"qp": "0", "preset": "veryfast"} if lossless else {"crf": "18", "preset": "veryfast"}
        st.codec_context.thread_count = 1
        for f in frames:
            # converted to yuv420p here on one swscale thread: left to the encoder, FFmpeg's threaded conversion
            # (PyAV 18.1) now and then writes a row wrongly, so the same frames gave different files from run to run
            yuv = av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format="yuv420p", threads=1)
            for pkt in st.encode(yuv):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)


# --------------------------------------------------------------------------------------------- driver
MANIFEST_FIELDS = ["video", "subject", "expression", "score", "group", "split", "note"]


def assign_splits(bases: list[str], test: list[str], val: list[str]) -> dict[str, str]:
    return {b: ("test" if b in test else "val" if b in val else "train") for b in bases}


def simulate(out_dir: str | Path, *, identities: int = 10, per_severity: int = 2,
             expressions: tuple[str, ...] = PFED5_EXPRESSIONS, seed: int = 0,
             test_identities: tuple[str, ...] = ("tfjs_woman",), val_identities: tuple[str, ...] = (),
             shapes: int = 1, workers: int = 1, progress: bool = True) -> Path:
    """Render the simulated set and write `manifest.csv` (generic manifest format). Returns the manifest.
    `shapes` > 1 adds shape variants 1..shapes-1 of every *training* pseudo-identity (validation and test
    identities are always the photographs as they are)."""
    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    idents = pseudo_identities(identities)
    splits = assign_splits(sorted({i.base for i in idents}), list(test_identities), list(val_identities))
    idents = idents + [i.variant(k) for k in range(1, max(1, shapes)) for i in idents if splits[i.base] == "train"]
    rows = [{"video": f"videos/{_clip_name(ident, expr, sev, k)}", "subject": ident.id, "expression": expr,
             "score": score_for(expr, sev), "group": ident.base, "split": splits[ident.base], "note": "simulated; not for clinical use"}
            for ident in idents for expr in expressions for sev in range(5) for k in range(per_severity)]
    jobs = [(ident, tuple(expressions), per_severity, seed, str(out)) for ident in idents]
    for ident in {(i.photo, i.mirrored): i for i in idents}.values():
        identity_face(ident)                  # fill the mesh cache here, not concurrently in the workers
    bar = _bar(len(rows), "simulate", progress)
    if workers <= 1:
        for j in jobs:
            bar.update(_render_identity(j))
    else:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers) as pool:
            for n in pool.imap_unordered(_render_identity, jobs):
                bar.update(n)
    bar.close()
    manifest = out / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        fh.write(f"# {DISCLAIMER}: simulated patients, known severity (PFED5 0-4; Toronto NeuroFace rating 1-5); "
                 "identities and licences in training/identities/identities.json\n")
        wr = csv.DictWriter(fh, fieldnames=MANIFEST_FIELDS)
        wr.writeheader()
        wr.writerows(rows)
    (out / "README.txt").write_text(
        f"{DISCLAIMER}\n\nSimulated patient videos made by `feqa simulate` from {len({i.base for i in idents})} "
        "real face photographs warped by a face-mesh expression model with a known severity 0-4.\n"
        "Photos and licences: training/identities/identities.json. These videos are not patient data and "
        "must never be used to make or support a clinical decision.\n")
    return manifest


def _clip_name(ident: Identity, expr: str, sev: int, k: int) -> str:
    """`<identity>_<task>_s<score>_<k>.mp4`: the label on the task's own scale (Toronto 1-5, PFED5 0-4)."""
    return f"{ident.id}_{expr}_s{score_for(expr, sev)}_{k}.mp4"


def _render_identity(job: tuple) -> int:
    """Render (or keep, when already on disk) every clip of one pseudo-identity; returns the clip count."""
    ident, expressions, per_severity, seed, out = job
    img, mesh = identity_face(ident)
    img, static = variant_face(ident, img, mesh)
    warp = MeshWarp(mesh[:, :2], img.shape[:2])
    n = 0
    for expr in expressions:
        for sev in range(5):
            for k in range(per_severity):
                key = f"{ident.id}|{expr}|{sev}|{k}|{seed}"
                rng = np.random.default_rng(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little"))
                path = Path(out) / "videos" / _clip_name(ident, expr, sev, k)
                if not path.exists():
                    frames = render_clip(img, mesh, warp, plan_clip(expr, sev, rng), rng,
                                         static if ident.shape else None)
                    tmp = path.with_suffix(".tmp.mp4")
                    write_video(tmp, frames)
                    tmp.rename(path)
                n += 1
    return n


RECORDINGS_PER_SEVERITY = {"train": 1, "val": 1, "test": 2}


def simulate_recordings(out_dir: str | Path, *, identities: int = 10,
                        expressions: tuple[str, ...] = SIM_EXPRESSIONS, seed: int = 0,
                        test_identities: tuple[str, ...] = ("tfjs_woman",), val_identities: tuple[str, ...] = (),
                        per_severity: dict[str, int] | None = None, workers: int = 1,
                        progress: bool = True, seconds: float | None = None,
                        severities: Sequence[int] = range(5)) -> Path:
    """Render whole recordings (`demo_recording_plan`: lead-in, repetitions, pauses; 6-12 s) of the photographs and
    their mirror images (no shape variants), `per_severity[split]` per identity, task and severity. Writes
    `recordings.csv` (generic manifest) and `episodes.json` (per video: the ground truth `RecordingPlan.truth()`,
    plus `episode_frames`: each repetition's onset, peak and offset frames). `seconds` fixes every recording's length (default: 6-12 s at random).
    Returns the manifest."""
    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    per = {**RECORDINGS_PER_SEVERITY, **(per_severity or {})}
    idents = pseudo_identities(identities)
    splits = assign_splits(sorted({i.base for i in idents}), list(test_identities), list(val_identities))
    jobs = [(ident, expr, sev, k, seed, str(out), seconds) for ident in idents for expr in expressions
            for sev in severities for k in range(per[splits[ident.base]])]
    for ident in {(i.photo, i.mirrored): i for i in idents}.values():
        identity_face(ident)
    bar = _bar(len(jobs), "simulate recordings", progress)
    plans = {}
    if workers <= 1:
        for j in jobs:
            name, plan = _render_recording(j)
            plans[name] = plan
            bar.update(1)
    else:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers) as pool:
            for name, plan in pool.imap_unordered(_render_recording, jobs, chunksize=2):
                plans[name] = plan
                bar.update(1)
    bar.close()
    rows = [{"video": f"videos/{_recording_name(ident, expr, sev, k)}", "subject": ident.id, "expression": expr,
             "score": score_for(expr, sev), "group": ident.base, "split": splits[ident.base],
             "note": "simulated whole recording; not for clinical use"} for ident, expr, sev, k, *_ in jobs]
    manifest = out / "recordings.csv"
    with open(manifest, "w", newline="") as fh:
        fh.write(f"# {DISCLAIMER}: simulated whole recordings (repetitions with pauses), known severity "
                 "(PFED5 0-4; Toronto NeuroFace rating 1-5); episode bounds in episodes.json\n")
        wr = csv.DictWriter(fh, fieldnames=MANIFEST_FIELDS)
        wr.writeheader()
        wr.writerows(rows)
    (out / "episodes.json").write_text(json.dumps({f"videos/{k}": plans[k] for k in sorted(plans)}, indent=1,
                                                  sort_keys=True) + "\n")
    return manifest


def load_episodes(manifest: str | Path) -> dict[str, dict]:
    """{absolute video path: known plan} for a `simulate_recordings` manifest (its `episodes.json`)."""
    manifest = Path(manifest)
    known = json.loads((manifest.parent / "episodes.json").read_text())
    return {str(manifest.parent / k): v for k, v in known.items()}


def _recording_name(ident: Identity, expr: str, sev: int, k: int) -> str:
    return f"rec_{ident.id}_{expr}_s{score_for(expr, sev)}_{k}.mp4"


def _recording_rng(ident: Identity, expr: str, sev: int, k: int, seed: int) -> np.random.Generator:
    key = f"recording|{ident.id}|{expr}|{sev}|{k}|{seed}"
    return np.random.default_rng(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little"))


def demo_recording_plan(expression: str, severity: int, rng: np.random.Generator,
                        seconds: float | None = None) -> RecordingPlan:
    """A `plan_recording` of 6-12 s (RECORDING_SECONDS): as many repetitions as the protocol asks (3 for PFED5,
    5 for Toronto NeuroFace) or fewer, so that the recording fits, drawn at random from 2 up; `seconds` fixes
    the length (repetitions that do not fit are dropped). sit_at_rest: still for 6-12 s."""
    lo, hi = RECORDING_SECONDS
    if expression == "sit_at_rest":
        return plan_recording(expression, severity, rng, duration_s=seconds or float(rng.uniform(lo, hi)))
    most = 5 if expression in TORONTO_EXPRESSIONS else 3
    reps = int(rng.integers(2, most + 1))
    state = rng.bit_generator.state
    while True:
        rng.bit_generator.state = state
        plan = plan_recording(expression, severity, rng, repetitions=reps)
        dur = plan.n_frames / plan.fps
        if dur <= hi or reps == 1:
            break
        reps -= 1
    if seconds is not None or dur < lo:
        plan.n_frames = int(round((seconds or lo) * plan.fps))
        plan.episodes = [e for e in plan.episodes if e[0] + 2 * e[1] + e[2] < plan.n_frames / plan.fps - 0.1]
    return plan


def known_episodes(truth: dict) -> list[list[int]]:
    """[onset, peak, offset] frame numbers of each repetition of a recording's ground truth (inclusive)."""
    fps, last = truth["fps"], truth["n_frames"] - 1
    return [[min(int(round(e[k] * fps)), last) for k in ("onset_s", "peak_s", "offset_s")] for e in truth["episodes"]]


def _render_recording(job: tuple) -> tuple[str, dict]:
    """Render one whole recording (or keep it when on disk; the plan is re-derived from the same seed)."""
    ident, expr, sev, k, seed, out, seconds = job
    rng = _recording_rng(ident, expr, sev, k, seed)
    plan = demo_recording_plan(expr, sev, rng, seconds)
    name = _recording_name(ident, expr, sev, k)
    path = Path(out) / "videos" / name
    truth = plan.truth()
    if not path.exists():
        img, mesh = identity_face(ident)
        warp = MeshWarp(mesh[:, :2], img.shape[:2])
        frames, truth = render_recording(img, mesh, warp, plan, rng)
        tmp = path.with_suffix(".tmp.mp4")
        write_video(tmp, frames)
        tmp.rename(path)
    return name, {**truth, "score": score_for(expr, sev), "episode_frames": known_episodes(truth)}


def _bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False)


# --------------------------------------------------------------------------------------------- whole recordings
# (issue 12) A recording as the web form asks for it: a neutral lead-in, then several repetitions of the task with
# pauses, 6-12 s; the ground truth (episode bounds and the movement parameters) comes back with the frames, so
# segmentation and the movement measures can be checked against known values.
@dataclass
class RecordingPlan:
    expression: str
    severity: int | None
    n_frames: int
    fps: float
    episodes: list            # [(onset_s, rise_s, hold_s, fall_s, amplitude)] per repetition
    asym: float               # the weak side's displacement is scaled by (1 - asym)
    weak_side: float          # +1: subject's left weaker, -1: right
    tremor_iod: float         # lower-face vertical tremor amplitude, interocular units
    tremor_hz: float
    blinks: list              # blink times (s)
    lips_part: float          # 0..1 lips falling open at rest
    twitch: float             # spontaneous movement at rest (slow slight smile), 0..~0.4
    head_motion: float = 1.0  # scale of the random head motion (0: none)
    lips_intervals: list = field(default_factory=list)   # [(t0, t1)] s with the lips apart (instead of lips_part)

    def truth(self) -> dict:
        """Ground truth, JSON-friendly: episode bounds (onset, peak = full activation, offset = back to
        neutral), amplitudes (fraction of the healthy field), and the other known parameters."""
        eps = [{"onset_s": round(o, 4), "peak_s": round(o + r, 4), "offset_s": round(o + r + h + f, 4),
                "amplitude": round(a, 4), "rise_s": round(r, 4)} for o, r, h, f, a in self.episodes]
        return {"expression": self.expression, "severity": self.severity, "fps": self.fps,
                "n_frames": self.n_frames, "duration_s": round(self.n_frames / self.fps, 4), "episodes": eps,
                "asymmetry": self.asym, "weak_side": "left" if self.weak_side > 0 else "right",
                "asymmetry_index": round(self.asym / (2 - self.asym), 4),
                "tremor_iod": self.tremor_iod, "tremor_hz": self.tremor_hz, "blinks": list(self.blinks),
                "lips_part": self.lips_part, "twitch": self.twitch,
                "lips_apart_share": round(sum(b - a for a, b in self.lips_intervals) * self.fps / self.n_frames, 4)}


def plan_recording(expression: str, severity: int | None, rng: np.random.Generator, *, repetitions: int = 3,
                   fps: float = FPS, lead_s: float | None = None, pause_s: float | None = None,
                   tail_s: float | None = None, duration_s: float | None = None, amplitude: float | None = None,
                   rise_s: float | None = None, hold_s: float | None = None, asym: float | None = None,
                   tremor_iod: float | None = None, tremor_hz: float | None = None,
                   blink_rate: float | None = None, lips_part: float | None = None, twitch: float | None = None,
                   fatigue: float = 0.0, head_motion: float = 1.0,
                   lips_intervals: list | None = None) -> RecordingPlan:
    """A whole recording's plan. Unset parameters follow the severity as `plan_clip` does (severity None: a
    healthy face with no tremor); `fatigue` shrinks the amplitude linearly from the first repetition to the last
    (0.3: the last is 30% smaller). sit_at_rest has no repetitions (duration_s default 8 s)."""
    s = float(severity or 0)
    amp = float(np.clip(1.0 - 0.2 * s + rng.normal(0, 0.035), 0.1, 1.1)) if amplitude is None else amplitude
    rise = float(0.3 + 0.15 * s + rng.uniform(-0.05, 0.05)) if rise_s is None else rise_s
    eps = []
    t = float(rng.uniform(0.6, 1.5)) if lead_s is None else lead_s
    if expression != "sit_at_rest":
        for k in range(repetitions):
            hold = float(rng.uniform(0.4, 0.8)) if hold_s is None else hold_s
            a = amp * (1.0 - fatigue * (k / max(1, repetitions - 1)))
            eps.append((t, rise, hold, rise, a))
            t += 2 * rise + hold + (float(rng.uniform(0.6, 1.2)) if pause_s is None else pause_s)
        end = eps[-1][0] + 2 * rise + eps[-1][2] + (float(rng.uniform(0.5, 1.0)) if tail_s is None else tail_s)
    else:
        end = 8.0
    dur = float(duration_s) if duration_s is not None else end
    n = int(round(dur * fps))
    rate = (max(0.05, 0.6 - 0.14 * s) * rng.uniform(0.8, 1.2)) if blink_rate is None else blink_rate
    nb = int(rng.poisson(rate * dur)) if expression in ("sit_at_rest",) or blink_rate is not None else \
        int(rng.integers(0, 2)) if expression != "squeeze_eyes" else 0
    blinks = sorted(rng.uniform(0.3, dur - 0.3, size=nb).tolist())
    # blinks closer than 0.5 s merge into one to the eye: keep them apart so that the truth is countable
    kept: list[float] = []
    for b in blinks:
        if not kept or b - kept[-1] >= 0.5:
            kept.append(b)
    return RecordingPlan(
        expression=expression, severity=severity, n_frames=n, fps=fps, episodes=eps,
        asym=float(np.clip(0.08 * s * rng.uniform(0.6, 1.4), 0, 0.6)) if asym is None else asym,
        weak_side=float(rng.choice([-1.0, 1.0])),
        tremor_iod=(float(0.012 * s * rng.uniform(0.7, 1.3)) if tremor_iod is None else tremor_iod),
        tremor_hz=float(rng.uniform(4.0, 6.0)) if tremor_hz is None else tremor_hz,
        blinks=kept,
        lips_part=(float(np.clip((s - 1.5) / 2.5, 0, 1) * rng.uniform(0.7, 1.2)) if lips_part is None
                   else lips_part),
        twitch=(float(max(0.0, 0.35 - 0.09 * s) * rng.uniform(0.7, 1.3)) if twitch is None else twitch),
        head_motion=head_motion, lips_intervals=list(lips_intervals or []))


def episode_activation(t: np.ndarray, episodes: list) -> np.ndarray:
    """Activation over time: per repetition a smoothstep rise, a hold, a smoothstep fall (max over repetitions)."""
    act = np.zeros_like(t, dtype=np.float64)
    for onset, rise, hold, fall, amp in episodes:
        up = _smoothstep((t - onset) / rise)
        down = 1.0 - _smoothstep((t - onset - rise - hold) / fall)
        act = np.maximum(act, amp * np.minimum(up, down))
    return act


def recording_motion(geo: FaceGeometry, plan: RecordingPlan, rng: np.random.Generator) -> np.ndarray:
    """(T, 468, 2) mesh displacements of a whole recording."""
    t = np.arange(plan.n_frames) / plan.fps
    disp = np.zeros((plan.n_frames, len(geo.xy), 2), np.float64)
    if plan.expression != "sit_at_rest":
        disp += episode_activation(t, plan.episodes)[:, None, None] * expression_field(geo, plan.expression)[None]
    else:
        smile = expression_field(geo, "smile")
        phase = rng.uniform(0, 2 * np.pi)
        disp += (plan.twitch * 0.5 * (1 + np.sin(2 * np.pi * 0.6 * t + phase)))[:, None, None] * smile * 0.5
        if plan.lips_intervals:      # lips apart (fully) during known intervals, 0.1 s to open or close
            lips = np.zeros_like(t)
            for a, b in plan.lips_intervals:
                lips = np.maximum(lips, np.minimum(_smoothstep((t - a + 0.05) / 0.1), 1 - _smoothstep((t - b + 0.05) / 0.1)))
            disp += lips[:, None, None] * lips_part_field(geo)[None] * 1.5
        else:
            disp += (plan.lips_part * _smoothstep((t - 0.3) / 1.5))[:, None, None] * lips_part_field(geo)[None]
    weak = np.where(geo.side == plan.weak_side, 1.0 - plan.asym, 1.0)
    disp *= weak[None, :, None]
    disp += _blink_curve(t, plan.blinks)[:, None, None] * blink_field(geo)[None]
    lower = np.clip((geo.xy[:, 1] - geo.xy[1, 1]) / (0.6 * geo.iod), 0, 1)
    trem = plan.tremor_iod * geo.iod * np.sin(2 * np.pi * plan.tremor_hz * t + rng.uniform(0, 6.3))
    disp[:, :, 1] += trem[:, None] * lower[None]
    return disp.astype(np.float32)


def render_recording(img: np.ndarray, mesh: np.ndarray, warp: MeshWarp, plan: RecordingPlan,
                     rng: np.random.Generator, static: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """(frames (T, H, W, 3) uint8 RGB, ground truth `plan.truth()`) of one simulated whole recording: the same
    warp, mouth shading, head motion, lighting and noise as `render_clip`, over several repetitions."""

    if static is not None:
        mesh = mesh.copy()
        mesh[:, :2] += static
    geo = FaceGeometry(mesh)
    disp = recording_motion(geo, plan, rng)
    n = plan.n_frames
    h, w = img.shape[:2]
    hm = plan.head_motion
    rot = _smooth_walk(rng, n, 2.0 * hm, smooth=int(plan.fps / 2))
    tx, ty = _smooth_walk(rng, n, 3.0 * hm, smooth=int(plan.fps / 2)), _smooth_walk(rng, n, 2.0 * hm,
                                                                                   smooth=int(plan.fps / 2))
    sc = 1 + _smooth_walk(rng, n, 0.02 * hm, smooth=int(plan.fps / 2))
    gain = rng.uniform(0.85, 1.1) * (1 + _smooth_walk(rng, n, 0.03))
    colour = rng.uniform(0.9, 1.1, 3).astype(np.float32)
    noise = rng.uniform(0.0, 3.0)
    bank = rng.normal(0, noise, (4, h, w, 3)).astype(np.float32)
    frames = _compose_frames(img, warp, geo, disp, static, plan.expression, plan.lips_part, (rot, tx, ty, sc),
                             (gain, colour, noise, bank), rng)
    return frames, plan.truth()


def simulated_recording(identity: str, plan: RecordingPlan, seed: int = 0, *, size: int | None = None,
                        face_crop: float | None = None) -> tuple[np.ndarray, dict]:
    """Convenience: render `plan` on a named pseudo-identity (e.g. "tfjs_woman", "astronaut-mirror").
    `face_crop`: first cut the photo to a square of this many face-mesh widths around the face; `size`: then
    scale it so that its longer side is `size` px (small frames with a large face keep tests fast)."""
    import cv2

    ident = next(i for i in pseudo_identities(2 * len(load_identities())) if i.id == identity)
    img, mesh = identity_face(ident)
    mesh = mesh.copy()
    if face_crop is not None:
        lo, hi = mesh[:, :2].min(0), mesh[:, :2].max(0)
        centre, half = (lo + hi) / 2, face_crop * float((hi - lo).max()) / 2
        x0 = int(max(0, centre[0] - half))
        y0 = int(max(0, centre[1] - half))
        x1 = int(min(img.shape[1], centre[0] + half))
        y1 = int(min(img.shape[0], centre[1] + half))
        img = np.ascontiguousarray(img[y0:y1, x0:x1])
        mesh[:, 0] -= x0
        mesh[:, 1] -= y0
    if size is not None:
        k = size / max(img.shape[:2])
        img = cv2.resize(img, (int(round(img.shape[1] * k)), int(round(img.shape[0] * k))),
                         interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR)
        mesh = mesh * np.float32(k)
    img = np.ascontiguousarray(img[: img.shape[0] // 2 * 2, : img.shape[1] // 2 * 2])   # even sides for H.264
    warp = MeshWarp(mesh[:, :2], img.shape[:2])
    rng = np.random.default_rng(seed)
    return render_recording(img, mesh, warp, plan, rng)
