"""Video sources that are not a single video file: frame folders (PFED5) and frame ranges (Toronto repetitions).

Extraction (`worker.extract.extract`) takes a video path, so a frame folder or a sub-range of a video is
first written to a temporary lossless video (FFV1 in Matroska, RGB kept exactly) at the dataset's frame rate.
"""
from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


class RangeOutsideVideo(ValueError):
    """A frame range asks for frames the video or frame folder does not have."""


def list_frames(folder: str | Path) -> list[Path]:
    """Image files of a frame folder in natural order (frame_2 before frame_10)."""
    import re

    def key(p: Path):
        return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]

    files = [p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise FileNotFoundError(f"no frame images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return sorted(files, key=key)


def read_frame(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"cannot read image {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def write_lossless(frames: Iterable[np.ndarray], path: str | Path, fps: float = 25.0) -> Path:
    """Write RGB uint8 frames to a lossless FFV1/Matroska video (RGB stored exactly)."""
    from fractions import Fraction

    import av

    path = Path(path)
    out = av.open(str(path), "w", format="matroska")
    stream = None
    try:
        for f in frames:
            f = np.ascontiguousarray(f, dtype=np.uint8)
            if stream is None:
                stream = out.add_stream("ffv1", rate=Fraction(fps).limit_denominator(1001))
                stream.width, stream.height = f.shape[1], f.shape[0]
                stream.pix_fmt = "bgr0"
            for pkt in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(pkt)
        if stream is None:
            raise ValueError("no frames to write")
        for pkt in stream.encode():
            out.mux(pkt)
    finally:
        out.close()
    return path


def iter_video_range(path: str | Path, start: int | None, end: int | None) -> Iterator[np.ndarray]:
    """Decoded RGB frames [start, end] (inclusive, 0-based, as in the Toronto repetition table)."""
    import av

    with av.open(str(path)) as c:
        for i, fr in enumerate(c.decode(video=0)):
            if start is not None and i < start:
                continue
            if end is not None and i > end:
                break
            yield fr.to_ndarray(format="rgb24")


def video_fps(path: str | Path) -> float:
    import av

    with av.open(str(path)) as c:
        rate = c.streams.video[0].average_rate or c.streams.video[0].guessed_rate
        return float(rate) if rate else 25.0


@contextlib.contextmanager
def as_video(source: str | Path, *, start: int | None = None, end: int | None = None,
             fps: float = 25.0) -> Iterator[Path]:
    """A video path for `source`: the file itself, or a temporary lossless video of a frame folder / range."""
    source = Path(source)
    if source.is_file() and start is None and end is None:
        yield source
        return
    with tempfile.TemporaryDirectory(prefix="feqa-frames-") as tmp:
        dst = Path(tmp) / "clip.mkv"
        want = None if end is None else end - (start or 0) + 1
        if source.is_dir():
            files = list_frames(source)[slice(start, None if end is None else end + 1)]
            got = len(files)
            if not want or got == want:
                write_lossless((read_frame(p) for p in files), dst, fps)
        else:
            counted = [0]

            def frames():
                for f in iter_video_range(source, start, end):
                    counted[0] += 1
                    yield f
            try:
                write_lossless(frames(), dst, video_fps(source))
            except ValueError:             # no frames at all in the range
                if not want:
                    raise
            got = counted[0]
        if want and got != want:
            raise RangeOutsideVideo(f"frames {start}..{end} (0-based) asked, the source has {got} of them")
        yield dst
