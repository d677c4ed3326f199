"""Face detection, 468-point face mesh and single-face tracking on RGB frames.

Models: MediaPipe's full-range BlazeFace detector and its 468-point face landmark model, converted to ONNX
(see worker/assets/NOTICE.md) and run in onnxruntime with one intra-op thread (faster than two on small
machines, and one session per worker process keeps cores free for decoding).

Single image (used for simulated patients)::

    from worker.face import detect_landmarks
    pts = detect_landmarks(image_rgb)   # (468, 3) float32 in image pixels (x, y, z) or None

Video: `FaceTracker(FaceMesh()).step(frame_rgb)` per frame. The next region of interest comes from the
previous landmarks; the detector runs every `redetect_every` frames and whenever presence drops. The tracker
starts on the highest-scoring face and then follows that one (overlap with its last box), counting other faces.

An optional insightface backend (SCRFD + 2d106det, what the paper used) is `InsightFaceBackend`; it is used
only when its model pack exists on disk (see `insightface_available`).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ASSETS = Path(__file__).resolve().parent / "assets"
DETECTOR_FILE = "face_detection_full_range.onnx"
LANDMARK_FILE = "face_landmark_468.onnx"
INPUT = 192          # both models take 192x192 RGB
GRID = 48            # full-range BlazeFace: one anchor per cell of a 48x48 grid
ROI_SCALE = 1.5      # landmark ROI side = 1.5 x the face box
RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 33, 263   # mesh indices used to align the tracked ROI
# Tight crops: nothing passed the threshold, but a box at least RETRY_MIN_SIZE of the frame's longer side scored
# RETRY_SCORE or more: detect again with the frame letterboxed to RETRY_FILL of the input side. Measured on the
# first frames of five shared videos cropped to 0.9-1.1 x the mesh box at 512x512: best boxes 0.26-0.62 with sides
# 0.46-1.06 of the frame, 0.70-0.95 after the retry; near misses on frames without a face: sides <= 0.35.
RETRY_SCORE, RETRY_MIN_SIZE, RETRY_FILL = 0.25, 0.4, 0.5


def _with_nodes(model: Any, nodes: list, drop_value_info: bool = False) -> bytes:
    """The graph rewritten to `nodes`, keeping only the initializers they still use (the rewrites' common end).
    `drop_value_info`: forget the inferred shapes (they name tensors that no longer exist)."""
    g = model.graph
    used = {i for n in nodes for i in n.input}
    kept = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(kept)
    del g.node[:]
    g.node.extend(nodes)
    if drop_value_info:
        del g.value_info[:]
    return bytes(model.SerializeToString())


def prelu_as_convs(model_bytes: bytes) -> bytes:
    """The same network with every per-channel PRelu written as Relu and two 1x1 depthwise convolutions:
    PRelu(x) = (1 - a) * Relu(x) + a * x, i.e. Add(DWConv_{1-a}(Relu(x)), DWConv_a(x)).

    Why: onnxruntime's CPU PRelu is a slow broadcasting kernel that also forces its blocked (NCHWc) layout to be
    undone and redone around it; in the 468-point mesh it took 64% of the time (2.3 of 3.6 ms). Relu, depthwise
    Conv and Add stay in the blocked layout (the Add is fused into the second convolution), and the model runs in
    about a third of the time. Equal up to float rounding: the outputs differ by < 1e-4 crop pixels."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load_from_string(model_bytes)
    g = model.graph
    consts = {i.name: i for i in g.initializer}
    nodes, changed = [], False
    for n in g.node:
        slope = consts.get(n.input[1]) if n.op_type == "PRelu" and len(n.input) == 2 else None
        a = numpy_helper.to_array(slope).astype(np.float32) if slope is not None else None
        if a is None or a.ndim != 4 or a.shape[0] != 1 or a.shape[2:] != (1, 1):
            nodes.append(n)
            continue
        c, x, y, p = a.shape[1], n.input[0], n.output[0], n.name or n.output[0]
        w = a.reshape(c, 1, 1, 1)
        g.initializer.extend([numpy_helper.from_array(w, p + "/slope_dw"),
                              numpy_helper.from_array((1.0 - w).astype(np.float32), p + "/one_minus_slope_dw")])
        nodes += [helper.make_node("Relu", [x], [p + "/relu"], name=p + "/relu"),
                  helper.make_node("Conv", [x, p + "/slope_dw"], [p + "/neg_part"], name=p + "/slope_conv",
                                   group=c, kernel_shape=[1, 1]),
                  helper.make_node("Conv", [p + "/relu", p + "/one_minus_slope_dw"], [p + "/pos_part"],
                                   name=p + "/one_minus_slope_conv", group=c, kernel_shape=[1, 1]),
                  helper.make_node("Add", [p + "/pos_part", p + "/neg_part"], [y], name=p + "/sum")]
        changed = True
    return _with_nodes(model, nodes) if changed else model_bytes


def channel_pad_as_conv(model_bytes: bytes) -> bytes:
    """Zero padding of the channel axis (the BlazeFace residual shortcuts that widen) as a 1x1 convolution by
    [I; 0]: onnxruntime keeps a Conv in its blocked layout, while a Pad makes it convert the tensor out and back
    (10-14% of both models' time). Identity weights: the same values."""
    import onnx
    from onnx import helper, numpy_helper, shape_inference

    model = shape_inference.infer_shapes(onnx.load_from_string(model_bytes))
    g = model.graph
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in [*g.value_info, *g.input]}
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    nodes, changed = [], False
    for n in g.node:
        pads = consts.get(n.input[1]) if n.op_type == "Pad" and len(n.input) >= 2 else None
        mode = next((a.s for a in n.attribute if a.name == "mode"), b"constant")
        value = consts.get(n.input[2], 0) if len(n.input) > 2 and n.input[2] else 0
        c = (shapes.get(n.input[0]) or [0, 0])[1]
        if (pads is None or pads.shape != (8,) or mode != b"constant" or np.any(value != 0) or not c
                or any(pads[[0, 1, 2, 3, 4, 6, 7]])):
            nodes.append(n)
            continue
        w = np.zeros((c + int(pads[5]), c, 1, 1), np.float32)
        w[np.arange(c), np.arange(c)] = 1.0
        g.initializer.append(numpy_helper.from_array(w, n.name + "/pad_as_conv"))
        nodes.append(helper.make_node("Conv", [n.input[0], n.name + "/pad_as_conv"], list(n.output),
                                      name=n.name + "/pad_as_conv", kernel_shape=[1, 1]))
        changed = True
    return _with_nodes(model, nodes, drop_value_info=True) if changed else model_bytes


def uint8_hwc_input(model_bytes: bytes, scale: float, offset: float = 0.0, divide: bool = False) -> bytes:
    """The same network taking the image itself: a (1, H, W, C) uint8 input named "image" (C = 3: RGB; C = 4:
    RGBA, whose 4th channel is dropped), sliced to RGB, cast, transposed to NCHW and mapped to `x * scale + offset`
    (`x / scale + offset` when `divide`) inside the graph (what the Python side did per frame, with a copy for the
    transpose). The caller hands onnxruntime its crop buffer, no copy. Four channels: OpenCV's SIMD warps and
    resizes have 1- and 4-channel paths; a 3-channel warp costs 2-3x as much (same values per channel)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load_from_string(model_bytes)
    g = model.graph
    old = g.input[0]
    dims = [d.dim_value for d in old.type.tensor_type.shape.dim]          # (1, 3, H, W)
    nodes = [helper.make_node("Slice", ["image", "image/c0", "image/c3", "image/axis"], ["image/rgb"],
                              name="image/rgb"),
             helper.make_node("Cast", ["image/rgb"], ["image/float"], to=TensorProto.FLOAT, name="image/cast"),
             helper.make_node("Transpose", ["image/float"], ["image/nchw"], perm=[0, 3, 1, 2], name="image/nchw"),
             helper.make_node("Div" if divide else "Mul", ["image/nchw", "image/scale"],
                              ["image/scaled" if offset else old.name], name="image/scale")]
    g.initializer.append(numpy_helper.from_array(np.array(scale, np.float32), "image/scale"))
    if offset:
        nodes.append(helper.make_node("Add", ["image/scaled", "image/offset"], [old.name], name="image/add"))
        g.initializer.append(numpy_helper.from_array(np.array(offset, np.float32), "image/offset"))
    g.initializer.extend([numpy_helper.from_array(np.array([v], np.int64), name)
                          for name, v in (("image/c0", 0), ("image/c3", 3), ("image/axis", 3))])
    new_input = helper.make_tensor_value_info("image", TensorProto.UINT8, [dims[0], dims[2], dims[3], "channels"])
    body = list(g.node)
    del g.node[:]
    g.node.extend(nodes + body)
    del g.input[:]
    g.input.append(new_input)
    return model.SerializeToString()


def _session(path: Path, threads: int = 1, scale: float = 1.0, offset: float = 0.0,
             divide: bool = False) -> Any:
    """onnxruntime session for one of the face models: PRelu and channel padding rewritten (`prelu_as_convs`,
    `channel_pad_as_conv`), uint8 HWC input (`uint8_hwc_input`), one intra-op thread by default."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")   # no busy-waiting between frames
    graph = uint8_hwc_input(channel_pad_as_conv(prelu_as_convs(Path(path).read_bytes())), scale, offset, divide)
    return ort.InferenceSession(graph, sess_options=opts, providers=["CPUExecutionProvider"])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def _sigmoid1(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-min(60.0, max(-60.0, float(x)))))


@dataclass
class Detection:
    box: np.ndarray          # (4,) x0, y0, x1, y1 in image pixels
    score: float
    keypoints: np.ndarray    # (6, 2): subject's right eye, left eye, nose tip, mouth, right ear, left ear

    @property
    def size(self) -> float:
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))


@dataclass
class Roi:
    """A rotated square in image pixels: centre, side and rotation (radians, image y axis down)."""
    cx: float
    cy: float
    size: float
    angle: float = 0.0

    def crop_to_image(self) -> np.ndarray:
        """2x3 affine mapping 192x192 crop pixels to image pixels."""
        k = self.size / INPUT
        c, s = math.cos(self.angle) * k, math.sin(self.angle) * k
        h = INPUT / 2
        return np.array([[c, -s, self.cx - (c - s) * h], [s, c, self.cy - (s + c) * h]], dtype=np.float64)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _anchors() -> np.ndarray:
    ys, xs = np.meshgrid(np.arange(GRID), np.arange(GRID), indexing="ij")
    return np.stack([(xs.ravel() + 0.5) / GRID, (ys.ravel() + 0.5) / GRID], axis=1).astype(np.float32)


def _shrink(image: np.ndarray, w: int, h: int) -> np.ndarray:
    """Resize; a large reduction goes through a bilinear step to twice the size, then a 2x area average
    (as smooth as INTER_AREA at a tenth of its cost for arbitrary factors)."""
    if image.shape[1] > 4 * w and image.shape[0] > 4 * h:
        image = cv2.resize(image, (2 * w, 2 * h), interpolation=cv2.INTER_LINEAR)
        return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if w < image.shape[1] else cv2.INTER_LINEAR)


class FaceDetector:
    """Full-range BlazeFace: letterboxed 192x192 input in [-1, 1], 2304 anchors, weighted NMS."""

    def __init__(self, model_path: str | Path | None = None, *, threads: int = 1,
                 score_threshold: float = 0.6, iou_threshold: float = 0.3, retry_score: float = RETRY_SCORE) -> None:
        self.session = _session(Path(model_path or ASSETS / DETECTOR_FILE), threads, 127.5, -1.0, divide=True)
        self.score_threshold = score_threshold
        self.retry_score = retry_score
        self.iou_threshold = iou_threshold
        self.anchors = _anchors()
        self._canvas = np.zeros((1, INPUT, INPUT, 3), np.uint8)     # letterbox: black (-1) around the image
        self._placed: tuple[int, ...] | None = None

    def __call__(self, image_rgb: np.ndarray) -> list[Detection]:
        dets, best, size = self._detect(image_rgb, 1.0)
        if not dets and best >= self.retry_score and size >= RETRY_MIN_SIZE:
            # a face filling the frame scores low (0.3-0.6 on tight crops: the full-range model is trained on
            # smaller faces): look again with the frame at half size in the middle of the letterbox. Gated on a
            # large near-miss box, so frames without a face (near misses there are small boxes) cost no more.
            dets = self._detect(image_rgb, RETRY_FILL)[0]
        return dets

    def _detect(self, image_rgb: np.ndarray, fill: float) -> tuple[list[Detection], float, float]:
        """Detections with the frame letterboxed to `fill` x 192 pixels; the best raw score and that box's side
        as a share of the frame's longer side."""
        h, w = image_rgb.shape[:2]
        scale = fill * INPUT / max(h, w)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        small = _shrink(image_rgb, nw, nh)
        px, py = (INPUT - nw) // 2, (INPUT - nh) // 2
        channels = image_rgb.shape[2]           # 3 (RGB) or 4 (RGBA: the graph drops the 4th)
        if self._canvas.shape[3] != channels:
            self._canvas, self._placed = np.zeros((1, INPUT, INPUT, channels), np.uint8), None
        if self._placed != (px, py, nw, nh):
            self._canvas[:] = 0
            self._placed = (px, py, nw, nh)
        self._canvas[0, py:py + nh, px:px + nw] = small
        reg, cls = self.session.run(None, {"image": self._canvas})
        logits = cls[0, :, 0]
        top = int(logits.argmax())
        best = _sigmoid1(logits[top])
        if best < self.score_threshold:
            return [], best, float(max(reg[0, top, 2], reg[0, top, 3]) / (fill * INPUT))
        scores = _sigmoid(logits)
        keep = np.nonzero(scores >= self.score_threshold)[0]
        reg = reg[0, keep] / INPUT                      # (k, 16) in letterbox units
        anc = self.anchors[keep]
        cx, cy = reg[:, 0] + anc[:, 0], reg[:, 1] + anc[:, 1]
        boxes = np.stack([cx - reg[:, 2] / 2, cy - reg[:, 3] / 2, cx + reg[:, 2] / 2, cy + reg[:, 3] / 2], 1)
        kps = reg[:, 4:16].reshape(-1, 6, 2) + anc[:, None, :]
        # letterbox units -> image pixels
        boxes = (boxes * INPUT - np.array([px, py, px, py])) / scale
        kps = (kps * INPUT - np.array([px, py])) / scale
        return self._weighted_nms(boxes, kps, scores[keep]), best, 1.0

    def _weighted_nms(self, boxes: np.ndarray, kps: np.ndarray, scores: np.ndarray) -> list[Detection]:
        order = list(np.argsort(-scores))
        out: list[Detection] = []
        while order:
            top = order[0]
            group = [i for i in order if iou(boxes[top], boxes[i]) > self.iou_threshold]
            wts = scores[group][:, None]
            box = (boxes[group] * wts).sum(0) / wts.sum()
            kp = (kps[group] * wts[:, :, None]).sum(0) / wts.sum()
            out.append(Detection(box.astype(np.float32), float(scores[top]), kp.astype(np.float32)))
            order = [i for i in order if i not in group]
        return out


class Landmarker:
    """468-point face mesh on a rotated square ROI warped to 192x192 (RGB in [0, 1])."""

    def __init__(self, model_path: str | Path | None = None, *, threads: int = 1) -> None:
        self.session = _session(Path(model_path or ASSETS / LANDMARK_FILE), threads, 1 / 255)
        self._crop = np.empty((1, INPUT, INPUT, 3), np.uint8)

    def __call__(self, image_rgb: np.ndarray, roi: Roi) -> tuple[np.ndarray, float]:
        """Returns (468, 3) points in image pixels (z scaled like x) and the face-presence probability."""
        m = roi.crop_to_image()
        if self._crop.shape[3] != image_rgb.shape[2]:        # 3 (RGB) or 4 (RGBA: the graph drops the 4th)
            self._crop = np.empty((1, INPUT, INPUT, image_rgb.shape[2]), np.uint8)
        # outside the frame: edge pixels repeated (MediaPipe's rule; zeros give a different mesh near the border)
        cv2.warpAffine(image_rgb, m, (INPUT, INPUT), dst=self._crop[0],
                       flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
        pts, presence = self.session.run(None, {"image": self._crop})
        pts = pts.reshape(468, 3)
        out = np.empty((468, 3), np.float32)
        out[:, :2] = pts[:, :2] @ m[:, :2].T.astype(np.float32) + m[:, 2].astype(np.float32)
        out[:, 2] = pts[:, 2] * np.float32(roi.size / INPUT)
        return out, _sigmoid1(presence.ravel()[0])


def roi_from_detection(det: Detection, scale: float = ROI_SCALE) -> Roi:
    kp = det.keypoints
    angle = math.atan2(kp[1, 1] - kp[0, 1], kp[1, 0] - kp[0, 0])
    cx, cy = (det.box[0] + det.box[2]) / 2, (det.box[1] + det.box[3]) / 2
    return Roi(float(cx), float(cy), scale * det.size, angle)


def roi_from_landmarks(pts: np.ndarray, scale: float = ROI_SCALE) -> Roi:
    """The next frame's ROI from a mesh, MediaPipe's rule: centre and longer side of the axis-aligned box of the
    points in image pixels (side x `scale`), turned so that the outer eye corners (33 -> 263) are level."""
    d = pts[LEFT_EYE_OUTER, :2] - pts[RIGHT_EYE_OUTER, :2]
    lo, hi = pts[:, :2].min(0), pts[:, :2].max(0)
    return Roi(float(lo[0] + hi[0]) / 2, float(lo[1] + hi[1]) / 2, float(scale * max(hi - lo)),
               math.atan2(float(d[1]), float(d[0])))


def mesh_box(pts: np.ndarray) -> np.ndarray:
    lo, hi = pts[:, :2].min(0), pts[:, :2].max(0)
    return np.array([lo[0], lo[1], hi[0], hi[1]], np.float32)


class FaceMesh:
    """Detector + landmarker pair (one onnxruntime session each, loaded once)."""

    scheme = "mediapipe468"

    def __init__(self, assets_dir: str | Path | None = None, *, threads: int = 1,
                 score_threshold: float = 0.6) -> None:
        d = Path(assets_dir or ASSETS)
        self.detector = FaceDetector(d / DETECTOR_FILE, threads=threads, score_threshold=score_threshold)
        self.landmarker = Landmarker(d / LANDMARK_FILE, threads=threads)

    def landmarks_for(self, image_rgb: np.ndarray, det: Detection,
                      refine: bool = True) -> tuple[np.ndarray, float]:
        pts, presence = self.landmarker(image_rgb, roi_from_detection(det))
        if refine and presence >= 0.5:
            # a second pass on the mesh's own box is closer to what tracking converges to
            pts2, presence2 = self.landmarker(image_rgb, roi_from_landmarks(pts))
            if presence2 >= 0.5:
                return pts2, presence2
        return pts, presence


@lru_cache(maxsize=1)
def default_mesh() -> FaceMesh:
    return FaceMesh()


def detect_landmarks(image_rgb: np.ndarray, mesh: FaceMesh | None = None,
                     min_presence: float = 0.8) -> np.ndarray | None:
    """468 face-mesh points of the highest-scoring face in one RGB uint8 image.

    Returns (468, 3) float32 (x, y in image pixels; z relative depth in the same pixel scale, smaller =
    nearer the camera) or None when no face is found. Left/right are the subject's own (mesh index 263 is
    the subject's left eye outer corner, 1 the nose tip). `min_presence`: the mesh's face-presence
    probability needed (real faces give about 1.0; cartoon faces reach about 0.5).
    """
    mesh = mesh or default_mesh()
    image_rgb = np.ascontiguousarray(image_rgb)
    for det in mesh.detector(image_rgb):
        pts, presence = mesh.landmarks_for(image_rgb, det)
        if presence >= min_presence:
            return pts
    return None


@dataclass
class TrackStep:
    """What the tracker saw on one frame."""
    pts: np.ndarray | None            # (468, 3) image pixels, or None when no face on this frame
    presence: float = 0.0
    detected: bool = False            # the detector ran on this frame
    n_faces: int = 0                  # faces the detector saw (when it ran)
    other_faces: int = 0              # faces other than the tracked one (when it ran)
    reacquired: bool = False          # the track was (re)started from a detection on this frame


@dataclass
class FaceTracker:
    """Follows one face through a sequence of frames.

    It starts on the highest-scoring detection; afterwards the ROI comes from the previous mesh, the detector
    runs every `redetect_every` frames (to count other faces and catch cuts) and whenever presence drops,
    and a lost track is re-acquired on the detection overlapping the last known box when there is one.
    """
    mesh: FaceMesh
    redetect_every: int = 10
    presence_threshold: float = 0.5
    acquire_presence: float = 0.8
    # no face for `idle_after` frames (1 s at 25 fps): look for one on every `idle_detect_every`-th frame only (a
    # returning face is picked up at most one frame later; frames without a face cost half)
    idle_after: int = 25
    idle_detect_every: int = 2
    roi: Roi | None = None
    last_box: np.ndarray | None = None
    frames_since_detect: int = 0
    _since_seen: int = field(default=0, repr=False)

    def reset(self) -> None:
        self.roi, self.last_box, self.frames_since_detect = None, None, 0

    def _pick(self, dets: list[Detection]) -> Detection | None:
        if not dets:
            return None
        if self.last_box is not None and self._since_seen < 50:
            ious = [iou(d.box, self.last_box) for d in dets]
            best = int(np.argmax(ious))
            if ious[best] > 0.2:
                return dets[best]
        return max(dets, key=lambda d: d.score)

    def _others(self, dets: list[Detection], box: np.ndarray | None) -> int:
        if box is None:     # nothing confirmed by the mesh on this frame: no "other" face either
            return 0

        def same(d: Detection) -> bool:
            # the detector's box is tighter than the mesh's, so overlap alone can be low for the same face
            cx, cy = (d.box[0] + d.box[2]) / 2, (d.box[1] + d.box[3]) / 2
            return iou(d.box, box) >= 0.3 or (box[0] <= cx <= box[2] and box[1] <= cy <= box[3])
        return sum(1 for d in dets if not same(d))

    def step(self, image_rgb: np.ndarray) -> TrackStep:
        st = TrackStep(pts=None)
        if (self.roi is None and self._since_seen >= self.idle_after
                and (self._since_seen - self.idle_after) % self.idle_detect_every):
            self._since_seen += 1
            return st
        dets: list[Detection] | None = None
        if self.roi is None or self.frames_since_detect >= self.redetect_every:
            dets = self.mesh.detector(image_rgb)
            self.frames_since_detect = 0
            st.detected, st.n_faces = True, len(dets)
            if self.roi is None:
                det = self._pick(dets)
                if det is not None:
                    self.roi, st.reacquired = roi_from_detection(det), True
        self.frames_since_detect += 1
        if self.roi is not None:
            pts, presence = self.mesh.landmarker(image_rgb, self.roi)
            if presence < self.presence_threshold and not st.reacquired:
                if dets is None:
                    dets = self.mesh.detector(image_rgb)
                    self.frames_since_detect = 1
                    st.detected, st.n_faces = True, len(dets)
                det = self._pick(dets)
                if det is not None:
                    pts, presence = self.mesh.landmarker(image_rgb, roi_from_detection(det))
                    st.reacquired = True
            st.presence = presence
            # a new track must be convincing (cartoon faces reach presence ~0.5); a running one may dip lower
            needed = self.acquire_presence if st.reacquired else self.presence_threshold
            if presence >= needed:
                st.pts = pts
                self.roi = roi_from_landmarks(pts)
                self.last_box = mesh_box(pts)
                self._since_seen = 0
            else:
                self.roi = None
        if st.pts is None:
            self._since_seen += 1
        if st.detected and dets is not None:
            st.other_faces = self._others(dets, self.last_box if st.pts is not None else None)
        return st


# ----------------------------------------------------------------------------------------------------------
# Optional insightface backend (SCRFD + 2d106det), only when its model pack is on disk.

def insightface_pack_dir() -> Path:
    root = Path(os.environ.get("FEQA_INSIGHTFACE_DIR", Path.home() / ".insightface" / "models"))
    return root / os.environ.get("FEQA_INSIGHTFACE_PACK", "buffalo_l")


def insightface_available() -> bool:
    d = insightface_pack_dir()
    if not (d.is_dir() and any(d.glob("det_*.onnx")) and any(d.glob("2d106*.onnx"))):
        return False
    try:
        import insightface  # noqa: F401
    except ImportError:
        return False
    return True


class InsightFaceBackend:
    """SCRFD detection + 2d106 landmarks via the insightface package (as in the paper).

    `step(frame_rgb)` returns a TrackStep whose `pts` are the 106 points (106, 2) of the highest-scoring face
    (or the one overlapping the previous box); map them to the 63 slots with `landmarks.slots_from_106`.
    """
    scheme = "insightface106"

    def __init__(self) -> None:
        from insightface.app import FaceAnalysis  # guarded: optional dependency

        d = insightface_pack_dir()
        self.app = FaceAnalysis(name=d.name, root=str(d.parent.parent), allowed_modules=["detection",
                                                                                          "landmark_2d_106"],
                                providers=["CPUExecutionProvider"])
        self.app.prepare(ctx_id=-1, det_size=(640, 640))
        self.last_box: np.ndarray | None = None

    def step(self, image_rgb: np.ndarray) -> TrackStep:
        faces = self.app.get(np.ascontiguousarray(image_rgb[:, :, 2::-1]))  # insightface expects BGR (RGB/RGBA in)
        st = TrackStep(pts=None, detected=True, n_faces=len(faces))
        if not faces:
            return st
        face = max(faces, key=lambda f: f.det_score)
        if self.last_box is not None:
            ious = [iou(np.asarray(f.bbox), self.last_box) for f in faces]
            if max(ious) > 0.2:
                face = faces[int(np.argmax(ious))]
        self.last_box = np.asarray(face.bbox, np.float32)
        st.pts = np.asarray(face.landmark_2d_106, np.float32)
        st.presence = float(face.det_score)
        st.other_faces = len(faces) - 1
        return st
