"""Video -> model inputs (trajectories, index_t, RGB clip) with one code path for serving and training.

Steps: decode to upright RGB at the contract fps (worker/video.py); track one face with the 468-point mesh
(worker/face.py); per face frame, a square 256x256 face crop (box from the mesh, smoothed over time with an
exponential moving average so the crop does not jitter), the 63 slots in crop pixels and the RGB value at each
slot; then the reference's window rules (worker/landmarks.py) and the quality report (worker/quality.py).

Frames without a face are left out of the streams (the reference's per-frame detector did the same); the
quality report says how many and how long the gaps were. Coordinates are relative to the nose tip (mesh
index 1) of the first frame of the trajectory window.
"""
from __future__ import annotations

import collections
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from model.contract import PreprocessContract
from model.errors import VideoError
from worker import landmarks as lm
from worker.face import FaceMesh, FaceTracker, default_mesh, iou, mesh_box
from worker.quality import QualityAccumulator, QualityThresholds, head_pose
from worker.video import DecodeLimits, DecodeReport, iter_frames

CROP_MARGIN = 1.1          # crop side = 1.1 x the longest side of the mesh's bounding box
PICTURE_CROP = 128         # side of the face crops a Recording keeps for the pictures


@dataclass(frozen=True)
class ExtractLimits:
    decode: DecodeLimits = field(default_factory=DecodeLimits)
    quality: QualityThresholds = field(default_factory=QualityThresholds)
    min_face_frames: int = 8           # fewer face frames -> video_too_short
    refuse_face_share: float = 0.2     # face on fewer frames than this share -> face_too_rare
    redetect_every: int = 10           # detector period while tracking (frames)
    box_smoothing: tuple[float, float] = (0.5, 0.2)   # EMA weight of the new box centre / side (1 = none)
    split_gap_s: float = 2.0           # a face lost longer than this starts a new segment
    cut_threshold: float = 30.0        # mean abs. change of a 32x32 grey face-crop thumbnail that means a cut
    guess_rotation: bool = True        # no upright face at all: try the frames turned by 90/180/270 degrees
    # the per-frame work after tracking on a thread of its own: None = when the process may use 3 or more cores
    # (decode, tracking, frame work one core each). On 2 cores a third thread only adds CPU (measured: +0.05 to
    # 0.15 s per 10.8 s clip, concurrency and hand-over), and the total CPU is what bounds the time there.
    frames_thread: bool | None = None


@dataclass
class Extraction:
    trajs: np.ndarray          # (63, Tp, C) float32: channels per contract (x, y, r, g, b by default)
    index_t: np.ndarray        # (Tp,) float32
    frames: np.ndarray         # (Tf, 224, 224, 3) uint8 RGB
    quality: dict
    meta: dict
    landmarks: np.ndarray      # (T, 63, 2) float32 crop landmarks of the window's frames
    boxes: np.ndarray          # (T, 4) float32 crop boxes (x0, y0, side, side) in decoded-frame pixels
    crops: np.ndarray | None = None   # (T, 256, 256, 3) uint8 window crops, kept only when asked (plots)

    def save_npz(self, path: str | Path) -> None:
        import json

        np.savez_compressed(path, trajs=self.trajs, index_t=self.index_t, frames=self.frames,
                            landmarks=self.landmarks, boxes=self.boxes,
                            quality=json.dumps(self.quality), meta=json.dumps(self.meta))

    @classmethod
    def load_npz(cls, path: str | Path) -> Extraction:
        import json

        with np.load(path, allow_pickle=False) as z:
            return cls(z["trajs"], z["index_t"], z["frames"], json.loads(str(z["quality"])),
                       json.loads(str(z["meta"])), z["landmarks"], z["boxes"])


class _CropBox:
    """Square crop box following the face, smoothed by an exponential moving average."""

    def __init__(self, alpha: tuple[float, float]) -> None:
        # the centre follows the head within about a frame; the side (face size) changes slowly, so it is
        # smoothed harder: the crop scale then hardly jitters
        self.alpha = np.array([alpha[0], alpha[0], alpha[1]])
        self.state: np.ndarray | None = None     # (cx, cy, side)

    def update(self, pts: np.ndarray, reset: bool) -> tuple[np.ndarray, bool]:
        """New (cx, cy, side) and whether the face jumped (moved over half the box in one frame: a cut)."""
        lo, hi = pts[:, :2].min(0), pts[:, :2].max(0)
        new = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, CROP_MARGIN * max(hi - lo)], np.float64)
        jump = bool(self.state is not None and np.hypot(*(new[:2] - self.state[:2])) > 0.5 * self.state[2])
        if self.state is None or reset or jump:
            self.state = new
        else:
            self.state = self.alpha * new + (1 - self.alpha) * self.state
        assert self.state is not None
        return self.state.copy(), jump


def crop_face(rgb: np.ndarray, cx: float, cy: float, side: float, size: int) -> np.ndarray:
    """Axis-aligned square crop (zero padding outside the frame) resized to size x size, with the image's channels
    (an RGBA frame gives an RGBA crop whose RGB is the RGB frame's crop, exactly)."""
    k = size / side
    m = np.array([[k, 0, size / 2 - k * cx], [0, k, size / 2 - k * cy]], np.float64)
    return cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def to_crop(points: np.ndarray, cx: float, cy: float, side: float, size: int) -> np.ndarray:
    k = size / side
    out = (points[..., :2] - np.array([cx, cy])) * k + size / 2
    return out.astype(np.float32)


def sample_rgb(crop: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """RGB value (0..255) of the crop pixel under each point (nearest pixel, clamped to the crop; RGB or RGBA)."""
    h, w = crop.shape[:2]
    xi = np.clip(np.rint(xy[:, 0]).astype(int), 0, w - 1)
    yi = np.clip(np.rint(xy[:, 1]).astype(int), 0, h - 1)
    return crop[yi, xi, :3].astype(np.float32)


@dataclass
class _Track:
    """One continuous segment of face frames: small arrays for every frame, crops for the last Tp frames."""
    tp: int
    src: list = field(default_factory=list)        # output frame index of each face frame
    slots: list = field(default_factory=list)      # (63, 2) crop px
    nose: list = field(default_factory=list)       # (2,) crop px
    z: list = field(default_factory=list)          # (63,) crop-scaled depth
    rgb: list = field(default_factory=list)        # (63, 3)
    boxes: list = field(default_factory=list)      # (4,)
    crops: collections.deque | None = None         # last tp crops (RGBA from extraction; RGB accepted)
    mesh: list = field(default_factory=list)       # (468, 2) crop px, whole-recording tracking only
    small: list = field(default_factory=list)      # model-size crops of every frame, whole-recording only
    pics: list = field(default_factory=list)       # PICTURE_CROP crops of every frame, whole-recording only

    def __post_init__(self) -> None:
        self.crops = collections.deque(maxlen=self.tp)
        self.mesh_box: np.ndarray | None = None   # last mesh box in frame pixels


class _Segments:
    """Face frames split where the track was lost for long, re-found elsewhere, jumped, or the face crop changed
    all at once (a cut): a video may
    show someone else for a while. The longest segment is taken as the patient's. Crops are kept only for the
    current and the longest segment so far (memory stays bounded)."""

    def __init__(self, tp: int, split_gap: int) -> None:
        self.tp, self.split_gap = tp, split_gap
        self.all: list[_Track] = []

    def for_frame(self, index: int, pts: np.ndarray, reacquired: bool, jumped: bool) -> _Track:
        cur = self.all[-1] if self.all else None
        box = mesh_box(pts)
        if cur is None or jumped or (reacquired and (index - cur.src[-1] - 1 > self.split_gap
                                                      or (cur.mesh_box is not None
                                                          and iou(box, cur.mesh_box) < 0.2))):
            longest = self.longest()
            for seg in self.all:
                if seg is not longest:
                    seg.crops = None
            cur = _Track(self.tp)
            self.all.append(cur)
        cur.mesh_box = box
        return cur

    def longest(self) -> _Track | None:
        # ties go to the later segment (the reference keeps the latter portion of a clip)
        return max(reversed(self.all), key=lambda t: len(t.src)) if self.all else None

    def patient(self) -> _Track:
        """The longest segment, once a face was found (see _refuse_if_needed)."""
        track = self.longest()
        if track is None:
            raise VideoError("no face was found in the video; film the face from the front, well lit",
                             code="no_face")
        return track

    @property
    def n_frames(self) -> int:
        return sum(len(t.src) for t in self.all)


def _backend(contract: PreprocessContract, mesh: FaceMesh, limits: ExtractLimits) -> tuple[Any, Any, int]:
    """(tracker, points -> (63, k) slots, nose-tip point index) for the contract's landmark scheme."""
    if contract.landmark_scheme == "mediapipe468_63":
        return FaceTracker(mesh, redetect_every=limits.redetect_every), lm.slots_from_468, lm.NOSE_TIP_468
    if contract.landmark_scheme == "insightface106_63":
        from model.errors import ModelUnavailable
        from worker.face import InsightFaceBackend, insightface_available

        if not insightface_available():
            raise ModelUnavailable("the insightface model pack (SCRFD + 2d106det) is not installed on this worker")
        return InsightFaceBackend(), lm.slots_from_106, lm.NOSE_TIP_106
    raise ValueError(f"unknown landmark scheme {contract.landmark_scheme!r}")


_END = object()


def _prefetch(frames: Iterator, depth: int = 6, stats: dict | None = None) -> Iterator:
    """Run a frame iterator in a background thread (FFmpeg and onnxruntime release the GIL, so decoding
    overlaps tracking on a second core). Exceptions are re-raised in the consumer. `stats` gets the decode
    thread's CPU seconds ("decode_thread_cpu_s") when it ends."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():      # never block for good: the consumer may have stopped
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in frames:
                if not put(item):
                    return
            if stats is not None:
                stats["decode_thread_cpu_s"] = time.thread_time()
            put(_END)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            put(e)

    worker = threading.Thread(target=produce, name="feqa-decode", daemon=True)
    worker.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join(timeout=5)
        close = getattr(frames, "close", None)
        if close and not worker.is_alive():
            close()


class _FaceFrames:
    """The work on each tracked frame after the tracker: the smoothed crop box, the 256 face crop, the cut test,
    segments, the 63 slots and their colours, the quality accumulator (and for a whole recording the mesh in crop
    pixels and the two small crops). Frames come in order; `add` is all the per-frame state there is."""

    def __init__(self, contract: PreprocessContract, limits: ExtractLimits, to_slots: Any, nose_index: int,
                 whole: bool) -> None:
        self.contract, self.limits, self.to_slots, self.nose_index, self.whole = (contract, limits, to_slots,
                                                                                 nose_index, whole)
        self.box = _CropBox(limits.box_smoothing)
        self.acc = QualityAccumulator(fps=contract.fps, thresholds=limits.quality)
        self.segments = _Segments(contract.tp, int(round(limits.split_gap_s * contract.fps)))
        self.prev_thumb: np.ndarray | None = None   # the last face crop, small: a shot change swaps it all at once

    def add(self, index: int, image: np.ndarray, step: Any) -> None:
        """One frame: `image` the decoded frame (RGB or RGBA: the crop keeps its channels, see `crop_face`)."""
        c, limits, size = self.contract, self.limits, self.contract.crop_size
        crop = gray = None
        if step.pts is not None:
            (cx, cy, side), jumped = self.box.update(step.pts, reset=step.reacquired)
            crop = crop_face(image, cx, cy, side, size)
            # once: the cut test and the quality report use it (RGBA -> grey: the same weights, alpha unused)
            gray = cv2.cvtColor(crop, cv2.COLOR_RGBA2GRAY if crop.shape[2] == 4 else cv2.COLOR_RGB2GRAY)
            thumb = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA)
            cut = (self.prev_thumb is not None
                   and cv2.mean(cv2.absdiff(thumb, self.prev_thumb))[0] > limits.cut_threshold)
            self.prev_thumb = thumb
            track = self.segments.for_frame(index, step.pts, step.reacquired, jumped or cut)
            slots3 = self.to_slots(step.pts)
            xy = to_crop(slots3, cx, cy, side, size)
            track.src.append(index)
            track.slots.append(xy)
            track.nose.append(to_crop(step.pts[self.nose_index], cx, cy, side, size))
            track.z.append(slots3[:, 2] * size / side if slots3.shape[1] > 2 else np.zeros(len(xy), np.float32))
            track.rgb.append(sample_rgb(crop, xy))
            track.boxes.append(np.array([cx - side / 2, cy - side / 2, side, side], np.float32))
            assert track.crops is not None   # the current segment keeps its crops
            track.crops.append(crop)
            if self.whole:
                track.mesh.append(to_crop(step.pts, cx, cy, side, size))
                # 3-channel before the non-integer resize (OpenCV's 4-channel INTER_AREA is the slower one there)
                track.small.append(cv2.resize(_rgb(crop), (c.frame_size,) * 2, interpolation=cv2.INTER_AREA))
                track.pics.append(_rgb(cv2.resize(crop, (PICTURE_CROP,) * 2, interpolation=cv2.INTER_AREA)))
        self.acc.add_frame(index, image.shape, step, step.pts, crop, gray=gray)


def _rgb(image: np.ndarray) -> np.ndarray:
    """RGB of an RGB or RGBA image (the same three channels; a new array only for RGBA)."""
    return cv2.cvtColor(image, cv2.COLOR_RGBA2RGB) if image.shape[2] == 4 else image


class _Behind:
    """Runs `fn(*item)` for each item `put`, in order, on a thread of its own (a bounded queue between): the
    per-frame work after tracking runs beside the tracker instead of after it. An exception in `fn` comes back
    from the next `put` or from `close`; after one, the remaining items are dropped. `cpu_s`: the thread's CPU."""

    def __init__(self, fn: Callable[..., None], depth: int = 4, name: str = "feqa-frames") -> None:
        self.fn = fn
        self.q: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.cpu_s = 0.0
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        t0 = time.thread_time()
        try:
            while (item := self.q.get()) is not _END:
                if self.error is None:
                    try:
                        self.fn(*item)
                    except BaseException as e:  # noqa: BLE001 - handed to the producer
                        self.error = e
        finally:
            self.cpu_s = time.thread_time() - t0

    def put(self, *item: Any) -> None:
        if self.error is not None:
            raise self.error
        self.q.put(item)        # never blocks for good: the thread takes items until _END, error or not

    def close(self, raise_error: bool = True) -> None:
        """Wait for the items put so far; re-raise an exception from `fn` (unless the caller is failing)."""
        if self.thread.is_alive():
            self.q.put(_END)
            self.thread.join()
        if raise_error and self.error is not None:
            raise self.error


class _Inline:
    """`_Behind`'s interface, run on the caller's thread."""

    def __init__(self, fn: Callable[..., None]) -> None:
        self.fn, self.cpu_s = fn, 0.0

    def put(self, *item: Any) -> None:
        self.fn(*item)

    def close(self, raise_error: bool = True) -> None:
        pass


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:          # not on Linux
        return os.cpu_count() or 1


def _track_video(path: str | Path, contract: PreprocessContract, limits: ExtractLimits, mesh: FaceMesh,
                 progress: Callable[[str, float], None] | None, extra_rotation: int = 0, whole: bool = False
                 ) -> tuple[_Segments, QualityAccumulator, DecodeReport, dict]:
    """One tracking pass. `whole`: also keep, for every face frame, the mesh in crop pixels and the crop resized
    to the model's frame size (what a model window anywhere in the recording needs; see `Recording`).

    Frames are decoded as RGBA (the RGB values exactly, plus a 4th byte): FFmpeg converts to it faster and
    OpenCV warps 4 channels 2-3x faster than 3, in the tracker's crops and in the face crop here."""
    report = DecodeReport()
    tracker, to_slots, nose_index = _backend(contract, mesh, limits)
    work = _FaceFrames(contract, limits, to_slots, nose_index, whole)
    timing = {"decode_s": 0.0, "track_s": 0.0}
    t_mark, cpu0 = time.perf_counter(), time.thread_time()
    # decoding and tracking are interleaved frame by frame: report "decoding" once, then tracking progress,
    # always from this thread (a progress callback may write to a database session)
    if progress:
        progress("decoding", 0.0)
    frames = iter_frames(path, contract.fps, limits.decode, report, extra_rotation=extra_rotation,
                         pixel_format="rgba")
    # decoding (ahead, its own thread), tracking (here), the per-frame work on tracked frames (behind, on a third
    # thread when there is a core for it)
    own_thread = limits.frames_thread if limits.frames_thread is not None else _usable_cores() >= 3
    behind: _Behind | _Inline = _Behind(work.add) if own_thread else _Inline(work.add)
    try:
        for fr in _prefetch(frames, stats=timing):
            t1 = time.perf_counter()
            timing["decode_s"] += t1 - t_mark       # time waiting for the decoder thread
            behind.put(fr.index, fr.rgb, tracker.step(fr.rgb))
            t_mark = time.perf_counter()
            timing["track_s"] += t_mark - t1
            if progress and fr.index % 10 == 0 and report.duration_header_s:
                progress("tracking", min(0.99, fr.t / report.duration_header_s))
    except BaseException:
        behind.close(raise_error=False)
        raise
    behind.close()
    timing["main_thread_cpu_s"] = time.thread_time() - cpu0     # tracking (and the frame work when inline)
    timing["frames_thread_cpu_s"] = behind.cpu_s                # crops, slots, quality on their thread (or 0)
    return work.segments, work.acc, report, timing


def _sideways_turn(quality: dict) -> int:
    """Faces found but lying on their side (median roll beyond 60 degrees): the counter-clockwise turn of the
    frames that makes them upright. The full-range detector finds some sideways faces, so a lost rotation
    tag does not always end in no_face."""
    pose = quality.get("pose")
    if not pose or abs(pose["roll"]["median"]) <= 60:
        return 0
    return int(round(pose["roll"]["median"] / 90.0)) * 90 % 360


def guess_rotation(path: str | Path, mesh: FaceMesh, decode_limits: DecodeLimits, samples: int = 10) -> int:
    """For a video with no face found: the counter-clockwise turn (90, 180, 270) under which an upright face is
    found on at least 3 of `samples` frames, one a second (rotation metadata lost in re-encoding), else 0."""
    import itertools

    from worker.face import detect_landmarks

    # one frame per second is plenty to see a face
    frames = [f.rgb for f in itertools.islice(iter_frames(path, 1.0, decode_limits), samples)]
    if not frames:
        return 0
    def upright(img: np.ndarray) -> bool:
        # the mesh finds faces at any roll (its ROI turns with the eyes): count only faces that are upright
        pts = detect_landmarks(np.ascontiguousarray(img), mesh)
        return pts is not None and abs(head_pose(pts)[2]) < 45

    hits = {turn: sum(upright(np.rot90(f, k=turn // 90)) for f in frames) for turn in (90, 270, 180)}
    best = max(hits, key=lambda turn: hits[turn])
    return best if hits[best] >= min(3, len(frames)) else 0


def _refuse_if_needed(segments: _Segments, acc: QualityAccumulator, limits: ExtractLimits, quality: dict) -> None:
    n, total = segments.n_frames, acc.n_frames
    details = {"quality": quality}
    if total < limits.min_face_frames:
        raise VideoError(f"the video has only {total} frames; record at least a few seconds",
                         code="video_too_short", details=details)
    if n == 0:
        raise VideoError("no face was found in the video; film the face from the front, well lit",
                         code="no_face", details=details)
    if n / total < limits.refuse_face_share:
        raise VideoError(f"a face was found on only {n} of {total} frames; keep the face in view",
                         code="face_too_rare", details=details)
    longest = len(segments.patient().src)
    if longest < limits.min_face_frames:
        raise VideoError(f"the face was followed for only {longest} frames in a row; record at least a few "
                         "seconds with the face in view", code="video_too_short", details=details)


def _segment_quality(quality: dict, segments: _Segments, used: _Track, fps: float, limits: ExtractLimits) -> None:
    """Add what segment was used; a gap inside it over max_gap_s is the blocking `long_gap`."""
    src = np.asarray(used.src)
    inner = int((np.diff(src) - 1).max()) if src.size > 1 else 0
    quality["segments"] = len(segments.all)
    quality["used_segment_frames"] = [int(src[0]), int(src[-1])]
    quality["used_face_frames"] = int(src.size)
    quality["longest_inner_gap_frames"], quality["longest_inner_gap_s"] = inner, round(inner / fps, 3)
    reasons, warnings = quality["reasons"], quality["warnings"]
    if "long_gap" in reasons and inner / fps <= limits.quality.max_gap_s:
        reasons.remove("long_gap")
    elif "long_gap" not in reasons and inner / fps > limits.quality.max_gap_s:
        reasons.append("long_gap")
    # the patient's segment must itself cover enough of the video (cuts to other people do not count)
    quality["used_share"] = round(src.size / max(1, quality["n_frames"]), 4)
    if quality["used_share"] < limits.quality.min_face_share and "face_often_missing" not in reasons:
        reasons.append("face_often_missing")
    if len(segments.all) > 1:
        warnings.append("face_track_split")
    quality["scorable"] = not reasons


def _channels(contract: PreprocessContract, xy: np.ndarray, z: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    chans = {"x": xy[..., 0], "y": xy[..., 1], "z": z, "r": rgb[..., 0], "g": rgb[..., 1], "b": rgb[..., 2]}
    unknown = [c for c in contract.channels if c not in chans]
    if unknown:
        raise ValueError(f"unknown trajectory channels in contract: {unknown}")
    stacked = np.stack([chans[c] for c in contract.channels], axis=-1)   # (Tp, 63, C)
    return np.ascontiguousarray(stacked.transpose(1, 0, 2)).astype(np.float32)   # (63, Tp, C)


def _model_frames(crops: list, crop_slots: np.ndarray, span: int, contract: PreprocessContract) -> np.ndarray:
    """(Tf, S, S, 3) uint8 model frames from the selected crops (their slots in crop pixels; `span` source frames
    behind them): resized, then the contract's frame_norm. "aligned_first_frame_diff" first warps each crop onto
    the first (similarity on the anchor slots) and, after resizing, matches its per-channel mean brightness to the
    first frame's, so neither head motion nor a lighting change shows as change. Padding "zero" blanks the frames
    past the span."""
    aligned = contract.frame_norm == "aligned_first_frame_diff"
    if aligned:
        mats = lm.alignment_matrices(crop_slots, crop_slots[0])
        crops = [c if k == 0 else cv2.warpAffine(c, m, (c.shape[1], c.shape[0]), flags=cv2.INTER_LINEAR,
                                                 borderMode=cv2.BORDER_REPLICATE)
                 for k, (c, m) in enumerate(zip(crops, mats, strict=True))]
    # RGBA crops: to RGB first (OpenCV's 3-channel INTER_AREA is the faster one at 256 -> 224; same values)
    frames = np.stack([cv2.resize(_rgb(c), (contract.frame_size,) * 2, interpolation=cv2.INTER_AREA)
                       for c in crops])
    if aligned:
        f = frames.astype(np.float32)
        gain = f[:1].mean((1, 2), keepdims=True) / np.maximum(f.mean((1, 2), keepdims=True), 1.0)
        frames = np.clip(f * gain, 0, 255).round().astype(np.uint8)
    frames = lm.frame_normalise(frames, contract.frame_norm)
    if contract.pad == "zero" and span < contract.tf:
        frames[span:] = 0                                # padded RGB frames are black
    return frames


def _trajectory(slots: np.ndarray, nose: np.ndarray, z: np.ndarray, rgb: np.ndarray,
                contract: PreprocessContract) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(trajs (63, Tp, C), index_t (Tp,), idx (Tp,)) of a clip of n face frames given as arrays (n, 63, 2) slots,
    (n, 2) nose tips, (n, 63) depth, (n, 63, 3) colours: the reference's window rule (latter Tp frames, or the
    contract's padding when n < Tp), coordinates relative to the window's first nose tip, then the contract's
    coordinate and scale normalisation."""
    n = len(slots)
    idx, index_t = lm.trajectory_window(n, contract.tp, contract.pad)
    short = n < contract.tp
    rows = np.arange(n) if short and contract.pad == "interpolate" else idx    # resampled to Tp below
    lo = int(idx.min())
    xy = slots[rows] - nose[lo]                         # relative to the window's first nose tip
    xy = lm.coord_normalise(xy, contract.coord_norm)
    zz = z[rows]
    if contract.scale_norm == "interocular":
        iod = float(lm.interocular(slots[lo]))
        xy = xy / max(iod, 1e-6)
        zz = zz / max(iod, 1e-6)
    elif contract.scale_norm != "none":
        raise ValueError(f"unknown scale_norm {contract.scale_norm!r}")
    trajs = _channels(contract, xy, zz, rgb[rows])
    if short and contract.pad == "interpolate":
        trajs = lm.resample_time(trajs, contract.tp)
    elif short and contract.pad == "zero":
        trajs[:, n:] = 0.0                              # positions and colours of the padded frames
    return trajs, index_t, idx


def _build(track: _Track, contract: PreprocessContract, keep_crops: bool = True) -> tuple[Any, ...]:
    n = len(track.src)
    slots = np.stack(track.slots)                       # (n, 63, 2)
    trajs, index_t, idx = _trajectory(slots, np.stack(track.nose), np.stack(track.z), np.stack(track.rgb),
                                      contract)
    lo = int(idx.min())
    assert track.crops is not None   # the patient's (longest) segment keeps its crops
    kept_from = n - len(track.crops)                    # index of the oldest crop still held
    sel = lm.rgb_window(lo, n - 1, contract.tf, contract.pad)
    frames = _model_frames([track.crops[i - kept_from] for i in sel], slots[sel], n - lo, contract)
    window = np.arange(lo, n)
    # the window's crops only when asked (plots): 128 x 256 x 256 x 3 bytes that are otherwise thrown away
    crops = np.stack([_rgb(track.crops[i - kept_from]) for i in window]) if keep_crops else None
    return trajs, index_t, frames, slots[window], np.stack(track.boxes)[window], crops, idx, sel


def extract(video_path: str | Path, contract: PreprocessContract | None = None, *,
            progress: Callable[[str, float], None] | None = None, limits: ExtractLimits | None = None,
            mesh: FaceMesh | None = None, keep_crops: bool = False) -> Extraction:
    """Turn one video into model inputs. See docs/extraction.md. Raises VideoError with a stable code."""
    contract = contract or PreprocessContract()
    limits = limits or ExtractLimits()
    t0 = time.perf_counter()
    mesh = mesh or default_mesh()
    segments, acc, report, timing = _track_video(video_path, contract, limits, mesh, progress)
    quality = acc.report()
    guessed = _sideways_turn(quality) if limits.guess_rotation else 0
    if not segments.n_frames and limits.guess_rotation and acc.n_frames >= limits.min_face_frames:
        guessed = guess_rotation(video_path, mesh, limits.decode)
    if guessed:
        segments, acc, report, timing = _track_video(video_path, contract, limits, mesh, progress, guessed)
        quality = acc.report()
    _refuse_if_needed(segments, acc, limits, quality)
    track = segments.patient()
    trajs, index_t, frames, lms, boxes, crops, idx, sel = _build(track, contract, keep_crops)
    quality = acc.report(measure_frames=set(track.src[int(idx.min()):]))    # the frames the model sees
    _segment_quality(quality, segments, track, contract.fps, limits)
    if progress:
        progress("tracking", 1.0)
    src = np.asarray(track.src)
    meta = {
        **report.to_dict(),
        "rotation_guessed": guessed,      # extra counter-clockwise turn found by guess_rotation (0 = none)
        "landmark_scheme": contract.landmark_scheme,
        "crop_size": contract.crop_size,
        "contract_sha256": contract.sha256(),
        "n_face_frames": segments.n_frames,
        "n_used_face_frames": len(track.src),
        "window_frames": [int(src[idx.min()]), int(src[-1])],      # output-frame span of the window
        "window_s": [round(float(src[idx.min()]) / contract.fps, 3), round(float(src[-1]) / contract.fps, 3)],
        "traj_padding": contract.pad if len(track.src) < contract.tp else "latter",
        "rgb_sampling": contract.pad if len(track.src) - int(idx.min()) < contract.tf else "even",
        "rgb_source_frames": [int(src[i]) for i in sel],
        "rgb_window_index": [int(i - idx.min()) for i in sel],     # row of `landmarks` for each RGB frame
        "timing_s": {k: round(v, 3) for k, v in timing.items()} | {"total_s": round(time.perf_counter() - t0, 3)},
    }
    return Extraction(trajs, index_t, frames, quality, meta, lms.astype(np.float32), boxes, crops)


# ---- whole recording (issue 12): track once, build model windows anywhere -------------------------------------
@dataclass
class Window:
    """One model window cut from a Recording: inputs for the scorer plus where it lies."""
    trajs: np.ndarray          # (63, Tp, C) float32
    index_t: np.ndarray        # (Tp,) float32 (relative to the window's first frame: 2*i/Tp - 1)
    frames: np.ndarray         # (Tf, S, S, 3) uint8
    rows: tuple[int, int]      # [start, stop) rows of the Recording
    src: tuple[int, int]       # first and last output frame index
    padded: str | None         # None, or the contract's pad when the run was shorter than Tp
    rgb_rows: np.ndarray       # (Tf,) Recording rows of the RGB frames


@dataclass
class Recording:
    """Every kept face frame of a video from one tracking pass (`extract_recording`).

    Rows are face frames in time order (frames without a face are left out, as in `extract`). `run` numbers the
    face-presence runs: a new run starts where the face was lost for longer than the quality threshold's
    `max_gap_s`, or where the tracker started a new segment (face lost > 2 s, re-found elsewhere, a cut). Model
    windows never span two runs."""
    contract: PreprocessContract
    src: np.ndarray            # (N,) output frame index
    run: np.ndarray            # (N,) int run id, 0..R-1, non-decreasing
    slots: np.ndarray          # (N, 63, 2) crop px
    nose: np.ndarray           # (N, 2) crop px nose tip
    z: np.ndarray              # (N, 63) crop-scaled depth
    rgb: np.ndarray            # (N, 63, 3) colour under each slot
    boxes: np.ndarray          # (N, 4) crop boxes in decoded-frame px
    mesh: np.ndarray           # (N, 468, 2) the full mesh in crop px (measures use it)
    small: np.ndarray          # (N, S, S, 3) uint8 crops resized to the contract's frame size
    pictures: np.ndarray       # (N, 128, 128, 3) uint8 face crops for the pictures
    quality: dict
    meta: dict

    @property
    def fps(self) -> float:
        return float(self.contract.fps)

    @property
    def n(self) -> int:
        return int(self.src.size)

    def runs(self) -> list[tuple[int, int]]:
        """[start, stop) rows of each face-presence run."""
        if not self.n:
            return []
        cuts = np.flatnonzero(np.diff(self.run)) + 1
        edges = np.r_[0, cuts, self.n]
        return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]

    def window(self, start: int, stop: int) -> Window:
        """Model inputs from rows [start, stop) of one run (stop - start <= Tp: shorter spans are padded by the
        contract's rule; longer ones keep their latter Tp rows, as `extract`)."""
        c = self.contract
        if not (0 <= start < stop <= self.n) or self.run[start] != self.run[stop - 1]:
            raise ValueError(f"rows [{start}, {stop}) are not inside one face-presence run")
        sl = slice(start, stop)
        trajs, index_t, idx = _trajectory(self.slots[sl], self.nose[sl], self.z[sl], self.rgb[sl], c)
        n, lo = stop - start, int(idx.min())
        sel = lm.rgb_window(lo, n - 1, c.tf, c.pad)
        frames = _small_frames(self.small[sl][sel], self.slots[sl][sel], n - lo, c)
        return Window(trajs, index_t, frames, (start + lo, stop),
                      (int(self.src[start + lo]), int(self.src[stop - 1])), c.pad if n < c.tp else None,
                      start + sel)

    def overview(self) -> Extraction:
        """The whole recording as an `Extraction` for the pictures: every face frame's slots and face crop
        (128 px; `meta["crop_size"]` says the slots' scale); trajs/index_t/frames are left empty."""
        meta = {**self.meta, "window_frames": [int(self.src[0]), int(self.src[-1])],
                "window_s": [round(self.src[0] / self.fps, 3), round(self.src[-1] / self.fps, 3)],
                "row_frames": self.src.tolist(), "row_fps": self.fps}   # the pictures' time axis
        c = self.contract
        return Extraction(np.zeros((63, 0, c.cp), np.float32), np.zeros(0, np.float32),
                          np.zeros((0, c.frame_size, c.frame_size, 3), np.uint8), self.quality, meta,
                          self.slots, self.boxes, self.pictures)

    def extraction(self, win: Window) -> Extraction:
        """An `Extraction` of one window (for the pictures and callers that want the single-window view)."""
        a, b = win.rows
        meta = {**self.meta, "window_frames": list(win.src),
                "window_s": [round(win.src[0] / self.fps, 3), round(win.src[1] / self.fps, 3)],
                "traj_padding": win.padded or "latter", "rgb_sampling": win.padded or "even",
                "rgb_source_frames": [int(self.src[r]) for r in win.rgb_rows],
                "rgb_window_index": [int(r - a) for r in win.rgb_rows]}
        return Extraction(win.trajs, win.index_t, win.frames, self.quality, meta, self.slots[a:b].astype(np.float32),
                          self.boxes[a:b].astype(np.float32))


def _small_frames(small: np.ndarray, slots: np.ndarray, span: int, contract: PreprocessContract) -> np.ndarray:
    """`_model_frames` for crops already resized to the frame size (what a Recording keeps). Identical for the
    frame norms "none" and "first_frame_diff"; "aligned_first_frame_diff" warps the small crops (slots scaled to
    them) instead of the 256 crops, a close approximation."""
    frames = small
    if contract.frame_norm == "aligned_first_frame_diff":
        k = contract.frame_size / contract.crop_size
        mats = lm.alignment_matrices(slots * k, slots[0] * k)
        size = (frames.shape[2], frames.shape[1])
        frames = np.stack([f if i == 0 else cv2.warpAffine(f, m, size, flags=cv2.INTER_LINEAR,
                                                           borderMode=cv2.BORDER_REPLICATE)
                           for i, (f, m) in enumerate(zip(frames, mats, strict=True))])
        f = frames.astype(np.float32)
        gain = f[:1].mean((1, 2), keepdims=True) / np.maximum(f.mean((1, 2), keepdims=True), 1.0)
        frames = np.clip(f * gain, 0, 255).round().astype(np.uint8)
    frames = lm.frame_normalise(np.ascontiguousarray(frames), contract.frame_norm)
    if contract.pad == "zero" and span < contract.tf:
        frames = frames.copy()
        frames[span:] = 0
    return frames


def _kept_segments(segments: _Segments, limits: ExtractLimits, fps: float) -> list[_Track]:
    """The patient's segments: the longest, plus every other of at least half a second whose face size is
    within a factor 1.5 of it (a cut to someone much nearer or farther is left out)."""
    longest = segments.patient()
    side = float(np.median(np.stack(longest.boxes)[:, 2]))
    keep: list[_Track] = []
    for t in segments.all:
        if t is longest:
            keep.append(t)
            continue
        if len(t.src) < max(limits.min_face_frames, int(round(0.5 * fps))):
            continue
        s = float(np.median(np.stack(t.boxes)[:, 2]))
        if 1 / 1.5 <= s / side <= 1.5:
            keep.append(t)
    return sorted(keep, key=lambda t: t.src[0])


def extract_recording(video_path: str | Path, contract: PreprocessContract | None = None, *,
                      progress: Callable[[str, float], None] | None = None, limits: ExtractLimits | None = None,
                      mesh: FaceMesh | None = None) -> Recording:
    """Track the whole video once and keep what model windows anywhere in it and the movement measures need.
    Same decoding, tracking, refusals and quality report as `extract`, except that the quality report is measured
    on every kept face frame and a gap between face frames is no reason to refuse: windows are cut inside
    face-presence runs (quality warning `segmented_by_face_presence` when there is more than one)."""
    contract = contract or PreprocessContract()
    limits = limits or ExtractLimits()
    t0 = time.perf_counter()
    mesh = mesh or default_mesh()
    segments, acc, report, timing = _track_video(video_path, contract, limits, mesh, progress, whole=True)
    quality = acc.report()
    guessed = _sideways_turn(quality) if limits.guess_rotation else 0
    if not segments.n_frames and limits.guess_rotation and acc.n_frames >= limits.min_face_frames:
        guessed = guess_rotation(video_path, mesh, limits.decode)
    if guessed:
        segments, acc, report, timing = _track_video(video_path, contract, limits, mesh, progress, guessed,
                                                     whole=True)
        quality = acc.report()
    _refuse_if_needed(segments, acc, limits, quality)
    kept = _kept_segments(segments, limits, contract.fps)
    src = np.concatenate([np.asarray(t.src) for t in kept])
    seg_id = np.concatenate([np.full(len(t.src), k) for k, t in enumerate(kept)])
    max_gap = int(round(limits.quality.max_gap_s * contract.fps))
    new_run = np.r_[False, (np.diff(src) - 1 > max_gap) | (np.diff(seg_id) != 0)]
    run = np.cumsum(new_run)

    def cat(name: str) -> np.ndarray:
        return np.concatenate([np.stack(getattr(t, name)) for t in kept])

    quality = acc.report(measure_frames=set(src.tolist()))
    _segment_quality(quality, segments, segments.patient(), contract.fps, limits)
    # a gap is handled by cutting windows at it: not blocking here; coverage is over every kept frame
    quality["reasons"] = [r for r in quality["reasons"] if r not in ("long_gap", "face_often_missing")]
    quality["used_face_frames"] = int(src.size)
    quality["used_share"] = round(src.size / max(1, quality["n_frames"]), 4)
    if quality["used_share"] < limits.quality.min_face_share:
        quality["reasons"].append("face_often_missing")
    quality["measured_on"] = "all_used_face_frames"
    quality["runs"] = int(run[-1]) + 1
    if run[-1] > 0 and "segmented_by_face_presence" not in quality["warnings"]:
        quality["warnings"].append("segmented_by_face_presence")
    quality["scorable"] = not quality["reasons"]
    if progress:
        progress("tracking", 1.0)
    meta = {**report.to_dict(), "rotation_guessed": guessed, "landmark_scheme": contract.landmark_scheme,
            "crop_size": contract.crop_size, "contract_sha256": contract.sha256(), "n_face_frames": segments.n_frames,
            "n_used_face_frames": int(src.size),
            "timing_s": {k: round(v, 3) for k, v in timing.items()} | {"total_s": round(time.perf_counter() - t0, 3)}}
    return Recording(contract, src, run, cat("slots").astype(np.float32), cat("nose").astype(np.float32),
                     cat("z").astype(np.float32), cat("rgb").astype(np.float32), cat("boxes").astype(np.float32),
                     cat("mesh").astype(np.float32), cat("small"), cat("pics"), quality, meta)
