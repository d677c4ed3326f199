"""Robust video decoding with PyAV: probe an upload, decode to upright RGB frames at the contract fps.

Frame times come from the frames' own timestamps (pts x time_base), never from the header frame rate, which
can be wrong (a QuickTime HEVC file in the test set claims 120 fps and runs at about 26.5) or meaningless
(variable frame rate phone video). Resampling picks, for each output instant k/fps, the nearest source frame;
only the frames kept are converted to RGB (the conversion costs about as much as decoding); extraction asks for
RGBA (`pixel_format="rgba"`: the same RGB values plus a 4th byte, converted faster and warped faster).

Rotation: phone video often stores landscape pixels plus a display matrix (or, in older files, a 'rotate'
tag); frames are rotated so that they come out the way a player shows them.

This module imports only PyAV and numpy so that the API can `probe` an upload cheaply.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model.errors import VideoError

IMAGE_FORMATS = {"image2", "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe", "tiff_pipe", "gif_pipe",
                 "pgm_pipe", "ppm_pipe", "svg_pipe", "jpegxl_pipe", "qoi_pipe", "dpx_pipe", "exr_pipe"}
STILL_CODECS = {"png", "mjpeg", "bmp", "tiff", "webp", "gif", "jpeg2000", "jpegls", "ppm", "pgm"}


@dataclass(frozen=True)
class DecodeLimits:
    max_duration_s: float = 60.0        # longer -> video_too_long
    max_side: int = 1920                # frames with a longer side are scaled down to this
    max_dimension: int = 8192           # a side above this -> video_too_large (refused before decoding)
    # Pixels per picture: checked on every decoded frame and passed to the decoder (FFmpeg `max_pixels`), so
    # a stream that switches to huge pictures after a small first one is refused without allocating them.
    max_pixels: int = 4096 * 4096
    max_samples: int = 0                # MP4/MOV index entries per video track; 0 = 500 per second of max
    max_file_bytes: int = 2 * 1024**3   # larger -> video_too_large
    threads: int = 0                    # decoder threads; 0 = FFmpeg's choice


def _max_samples(limits: DecodeLimits) -> int:
    return limits.max_samples or int(limits.max_duration_s * 500) + 1000


def _open(path: str | Path, limits: DecodeLimits | None = None) -> Any:
    import av

    from worker.mp4index import check_sample_index

    p = Path(path)
    if not p.exists():
        raise VideoError(f"file not found: {p.name}", code="not_a_video")
    if p.stat().st_size == 0:
        raise VideoError("the file is empty (0 bytes); upload the recording again", code="empty_file")
    # FFmpeg allocates an MP4's whole sample index while opening it: check the declared counts first.
    check_sample_index(p, max_samples=_max_samples(limits or DecodeLimits()))
    try:
        container = av.open(str(p), mode="r", metadata_errors="ignore")
    except (av.error.InvalidDataError, UnicodeDecodeError) as e:
        raise VideoError("not a readable video file", code="not_a_video") from e
    except av.error.FFmpegError as e:
        raise VideoError("not a readable video file", code="not_a_video") from e   # its text names the path
    except (OSError, ValueError) as e:       # unreadable path, odd metadata: still "not a video we can read"
        raise VideoError("not a readable video file", code="not_a_video") from e
    return container


def _video_stream(container: Any) -> Any:
    fmt = container.format.name
    if not container.streams.video:
        container.close()
        kind = "audio only" if container.streams.audio else "no video stream"
        raise VideoError(f"the file has no video ({kind}); record the face with a camera", code="not_a_video")
    stream = container.streams.video[0]
    codec = stream.codec_context.name if stream.codec_context is not None else None
    if set(fmt.split(",")) & IMAGE_FORMATS or (codec in STILL_CODECS and (stream.frames or 0) <= 1
                                               and not stream.duration):
        container.close()
        raise VideoError("the file is a still image, not a video", code="not_a_video")
    if codec is None:
        container.close()
        raise VideoError("the video codec is not supported; use MP4 (H.264) or WebM", code="unsupported_codec")
    return stream


def _tag_rotation(stream: Any) -> int:
    """Counter-clockwise degrees from an old-style 'rotate' tag (which is clockwise)."""
    try:
        return -int(float(stream.metadata.get("rotate", 0))) % 360
    except (TypeError, ValueError):
        return 0


def _normalise_rotation(deg: int) -> int:
    return int(round(deg / 90.0)) * 90 % 360


def _duration_s(container: Any, stream: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None


def _limit_decoder(stream: Any, limits: DecodeLimits) -> None:
    """The decoder itself refuses pictures above `max_pixels` (it never allocates them)."""
    cc = stream.codec_context
    cc.options = {**(cc.options or {}), "max_pixels": str(limits.max_pixels)}


def _refuse_if_oversized(stream: Any, limits: DecodeLimits) -> None:
    """After a decode error: a stream whose parameters switched to pictures over the limit."""
    cc = stream.codec_context
    w, h = cc.width or cc.coded_width, cc.height or cc.coded_height
    if w and h:
        _check_dims(w, h, limits)


def _first_frame(container: Any, stream: Any, limits: DecodeLimits, max_packets: int = 300) -> Any:
    import av

    n = 0
    _limit_decoder(stream, limits)
    try:
        for packet in container.demux(stream):
            n += 1
            for frame in packet.decode():
                _check_dims(frame.width, frame.height, limits)
                return frame
            if n >= max_packets:
                break
    except av.error.FFmpegError as e:
        _refuse_if_oversized(stream, limits)
        raise VideoError(f"the video stream cannot be decoded: {e}", code="unsupported_codec") from e
    return None


def probe(path: str | Path, limits: DecodeLimits | None = None) -> dict:
    """Cheap check that a file is a usable video: container opens, a video stream decodes, and its facts.

    Returns {container, codec, width, height (as displayed, after rotation), rotation, duration_s, fps_header,
    n_frames_header, has_audio, size_bytes}. Raises VideoError (not_a_video, empty_file, unsupported_codec,
    video_too_long, video_too_large).
    """
    limits = limits or DecodeLimits()
    size = Path(path).stat().st_size if Path(path).exists() else 0
    if size > limits.max_file_bytes:
        raise VideoError(f"the file is too large ({size / 1e6:.0f} MB)", code="video_too_large")
    container = _open(path, limits)
    try:
        stream = _video_stream(container)
        _check_dims(stream.width, stream.height, limits)
        frame = _first_frame(container, stream, limits)
        if frame is None:
            raise VideoError("no frame could be decoded from the video stream", code="not_a_video")
        rotation = _normalise_rotation(frame.rotation) or _tag_rotation(stream)
        w, h = frame.width, frame.height
        if rotation in (90, 270):
            w, h = h, w
        duration = _duration_s(container, stream)
        if duration is None:        # e.g. browser MediaRecorder WebM: no duration in the header
            duration = _scan_duration(container, stream, frame, limits)
        if duration is not None and duration > limits.max_duration_s + 0.5:
            raise VideoError(f"the video is {duration:.1f} s long; the limit is {limits.max_duration_s:.0f} s",
                             code="video_too_long", details={"duration_s": duration})
        rate = stream.average_rate or stream.guessed_rate
        return {
            "container": container.format.name, "codec": stream.codec_context.name, "width": w, "height": h,
            "rotation": rotation, "duration_s": duration, "fps_header": float(rate) if rate else None,
            "n_frames_header": int(stream.frames or 0), "has_audio": bool(container.streams.audio),
            "size_bytes": size,
        }
    finally:
        container.close()


def _scan_duration(container: Any, stream: Any, first_frame: Any, limits: DecodeLimits) -> float | None:
    """Duration from packet timestamps (demuxing only, no decoding); stops once past the limit."""
    import av

    tb = stream.time_base
    if tb is None or first_frame.pts is None:
        return None
    t0, end = float(first_frame.pts * tb), None
    try:
        for packet in container.demux(stream):
            if packet.pts is None:
                continue
            t = float((packet.pts + (packet.duration or 0)) * tb)
            end = t if end is None else max(end, t)
            if end - t0 > limits.max_duration_s + 0.5:
                break
    except av.error.FFmpegError:
        pass                        # a damaged tail: the duration so far is what can be said
    return None if end is None else end - t0


def _check_dims(w: int, h: int, limits: DecodeLimits) -> None:
    if not w or not h:
        raise VideoError("the video stream has no picture size", code="not_a_video")
    if max(w, h) > limits.max_dimension or w * h > limits.max_pixels:
        raise VideoError(f"the picture is {w}x{h}; the largest accepted side is {limits.max_dimension} and "
                         f"the most pixels {limits.max_pixels}", code="video_too_large",
                         details={"width": w, "height": h})


@dataclass
class DecodedFrame:
    index: int          # output index at the target fps
    t: float            # output time (s) from the first frame
    src_index: int      # source frame it came from
    rgb: np.ndarray     # (H, W, 3) uint8 RGB, upright; (H, W, 4) RGBA when iter_frames(pixel_format="rgba")


@dataclass
class DecodeReport:
    container: str = ""
    codec: str = ""
    width: int = 0              # output frames (after rotation and downscaling)
    height: int = 0
    src_width: int = 0          # stored picture size
    src_height: int = 0
    rotation: int = 0           # counter-clockwise degrees applied to make the frames upright
    scaled: bool = False
    fps_header: float | None = None
    fps_in: float | None = None  # measured from timestamps
    fps_out: float = 25.0
    vfr: bool = False
    resampled: bool = False
    n_frames_in: int = 0
    n_frames: int = 0
    duplicated: int = 0
    dropped: int = 0
    duration_s: float = 0.0
    duration_header_s: float | None = None
    decode_errors: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


PIXEL_FORMATS = ("rgb24", "rgba")   # (H, W, 3) RGB, or (H, W, 4) RGB + a 4th byte (255) that OpenCV's SIMD paths like


class _Converter:
    """Turns a decoded frame into upright RGB (or RGBA) of bounded size, once per source frame."""

    def __init__(self, limits: DecodeLimits, rotation: int, pixel_format: str = "rgb24") -> None:
        self.limits, self.rotation, self.pixel_format = limits, rotation, pixel_format
        self.key: int | None = None
        self.rgb: np.ndarray | None = None

    def __call__(self, key: int, frame: Any, report: DecodeReport) -> np.ndarray:
        if key == self.key and self.rgb is not None:
            return self.rgb
        w, h = frame.width, frame.height
        scale = min(1.0, self.limits.max_side / max(w, h))
        # one swscale thread: the conversion runs on the decode thread beside tracking (threads cost CPU in waking
        # and waiting), and FFmpeg's threaded RGBA conversion writes a row at a slice boundary wrongly now and then
        # (PyAV 18.1: 29 of 180 conversions of a 1080x720 frame differed from the one-thread result by one row)
        if scale < 1.0:
            w2, h2 = max(2, int(round(w * scale / 2)) * 2), max(2, int(round(h * scale / 2)) * 2)
            # scaled: FFmpeg's scaled RGBA differs from its scaled RGB (up to 5 levels on most pixels), so RGB it is
            rgb = frame.reformat(width=w2, height=h2, format="rgb24", threads=1).to_ndarray()
            if self.pixel_format == "rgba":
                rgba = np.empty((*rgb.shape[:2], 4), np.uint8)
                rgba[..., :3], rgba[..., 3] = rgb, 255
                rgb = rgba
            report.scaled = True
        else:
            rgb = frame.to_ndarray(format=self.pixel_format, threads=1)
        if self.rotation:
            rgb = np.ascontiguousarray(np.rot90(rgb, k=self.rotation // 90))
        self.key, self.rgb = key, rgb
        return rgb


def iter_frames(path: str | Path, fps: float = 25.0, limits: DecodeLimits | None = None,
                report: DecodeReport | None = None,
                progress: Callable[[float], None] | None = None, extra_rotation: int = 0,
                pixel_format: str = "rgb24") -> Iterator[DecodedFrame]:
    """Decode `path` to upright RGB frames resampled to `fps` by timestamps (nearest source frame).

    `extra_rotation` (counter-clockwise degrees) is applied on top of the file's own rotation: for video whose
    rotation metadata was lost (see `worker.extract`). `pixel_format` "rgba" gives (H, W, 4) frames whose first
    three channels are the "rgb24" frame's, exactly (FFmpeg converts to it faster, and OpenCV warps and resizes
    4 channels 2-3x faster than 3: what extraction uses).

    Fills `report` (a DecodeReport) as it goes; it is complete when the iterator is exhausted. Raises
    VideoError for unreadable, empty, too long or too large input.
    """

    limits = limits or DecodeLimits()
    report = report if report is not None else DecodeReport()
    if pixel_format not in PIXEL_FORMATS:
        raise ValueError(f"pixel_format must be one of {PIXEL_FORMATS}, not {pixel_format!r}")
    if Path(path).exists() and Path(path).stat().st_size > limits.max_file_bytes:
        raise VideoError("the file is too large", code="video_too_large")
    container = _open(path, limits)
    try:
        stream = _video_stream(container)
        _check_dims(stream.width, stream.height, limits)
        _limit_decoder(stream, limits)
        cc = stream.codec_context
        cc.thread_type = "AUTO"
        if limits.threads:
            cc.thread_count = limits.threads
        rate = stream.average_rate or stream.guessed_rate
        report.container, report.codec = container.format.name, cc.name
        report.src_width, report.src_height = stream.width, stream.height
        report.fps_header, report.fps_out = (float(rate) if rate else None), float(fps)
        duration = report.duration_header_s = _duration_s(container, stream)
        if duration is not None and duration > limits.max_duration_s + 0.5:
            raise VideoError(f"the video is {duration:.1f} s long; the limit is {limits.max_duration_s:.0f} s",
                             code="video_too_long", details={"duration_s": duration})
        yield from _resample(container, stream, fps, limits, report, duration, progress, extra_rotation,
                             pixel_format)
    finally:
        container.close()


def _frame_time(frame: Any, stream: Any, fallback_rate: float, n: int) -> float | None:
    if frame.pts is not None and stream.time_base is not None:
        return float(frame.pts * stream.time_base)
    if frame.time is not None:
        return float(frame.time)
    return n / fallback_rate if fallback_rate else None


def _decoded(container: Any, stream: Any, report: DecodeReport, limits: DecodeLimits) -> Iterator[Any]:
    """Decoded frames, tolerating a few corrupt packets; every frame's size is checked against the limits
    (a stream may switch to other picture sizes after its header and first frame)."""
    import av

    size = None
    try:
        for packet in container.demux(stream):
            try:
                for frame in packet.decode():
                    if (frame.width, frame.height) != size:
                        _check_dims(frame.width, frame.height, limits)
                        size = (frame.width, frame.height)
                    yield frame
            except av.error.InvalidDataError:
                _refuse_if_oversized(stream, limits)
                report.decode_errors += 1
                if report.decode_errors > 50:
                    raise VideoError("the video stream is corrupt", code="not_a_video") from None
    except av.error.FFmpegError as e:
        _refuse_if_oversized(stream, limits)
        if report.n_frames_in == 0:
            raise VideoError(f"the video stream cannot be decoded: {e}", code="unsupported_codec") from e
        report.decode_errors += 1   # truncated file: keep what was decoded


def _resample(container: Any, stream: Any, fps: float, limits: DecodeLimits, report: DecodeReport,
              duration: float | None, progress: Callable[[float], None] | None, extra_rotation: int = 0,
              pixel_format: str = "rgb24") -> Iterator[DecodedFrame]:
    step = 1.0 / fps
    fallback = float(report.fps_header or fps)
    convert: _Converter | None = None
    prev: tuple[float, Any, int] | None = None   # (time, frame, src_index)
    t0 = 0.0                   # the first frame's time, set at the first frame
    k = 0                      # next output index
    last_t: float | None = None
    intervals: list[float] = []
    used_src: set[int] = set()
    for frame in _decoded(container, stream, report, limits):
        t = _frame_time(frame, stream, fallback, report.n_frames_in)
        if t is None or (last_t is not None and t <= last_t):
            continue           # no timestamp or out of order: skip rather than reorder
        if convert is None:
            report.rotation = ((_normalise_rotation(frame.rotation) or _tag_rotation(stream))
                               + _normalise_rotation(extra_rotation)) % 360
            convert = _Converter(limits, report.rotation, pixel_format)
            t0 = t
        if last_t is not None:
            intervals.append(t - last_t)
        last_t = t
        src = report.n_frames_in
        report.n_frames_in += 1
        if t - t0 > limits.max_duration_s + 0.5:
            raise VideoError(f"the video is longer than the limit of {limits.max_duration_s:.0f} s",
                             code="video_too_long")
        if prev is not None:
            mid = (prev[0] + t) / 2 - t0      # targets before the midpoint belong to the previous frame
            while k * step < mid:
                yield _emit(k, step, prev, convert, report, used_src)
                k += 1
        prev = (t, frame, src)
        if progress and duration and report.n_frames_in % 15 == 0:
            progress(min(1.0, (t - t0) / duration))
    if prev is None:
        raise VideoError("no frame could be decoded from the video stream", code="not_a_video")
    assert convert is not None and last_t is not None   # set with the first frame
    last_dur = float(np.median(intervals)) if intervals else step
    while k * step < prev[0] - t0 + last_dur / 2:
        yield _emit(k, step, prev, convert, report, used_src)
        k += 1
    _finish(report, intervals, used_src, last_t - t0 + last_dur)


def _emit(k: int, step: float, prev: tuple[float, Any, int], convert: _Converter, report: DecodeReport,
          used_src: set[int]) -> DecodedFrame:
    t, frame, src = prev
    if src in used_src:
        report.duplicated += 1
    used_src.add(src)
    rgb = convert(src, frame, report)
    report.height, report.width = rgb.shape[:2]
    report.n_frames = k + 1
    return DecodedFrame(k, k * step, src, rgb)


def _finish(report: DecodeReport, intervals: list, used_src: set, duration: float) -> None:
    report.duration_s = float(duration)
    report.dropped = report.n_frames_in - len(used_src)
    if intervals:
        iv = np.asarray(intervals)
        report.fps_in = float(1.0 / np.mean(iv))
        report.vfr = bool(np.std(iv) > 0.1 * np.mean(iv))
    report.resampled = bool(report.dropped or report.duplicated)


def decode_all(path: str | Path, fps: float = 25.0, limits: DecodeLimits | None = None
               ) -> tuple[list[DecodedFrame], DecodeReport]:
    """All frames in memory (tests and short clips); extraction streams with `iter_frames` instead."""
    report = DecodeReport()
    frames = list(iter_frames(path, fps, limits, report))
    return frames, report


__all__ = ["DecodeLimits", "DecodeReport", "DecodedFrame", "decode_all", "iter_frames", "probe"]
