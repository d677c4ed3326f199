"""Crafted uploads and requests for the security tests (tests/security) and the attack benchmark
(`python -m bench.security`). Everything is generated here at run time with PyAV and NumPy; nothing
is downloaded and nothing is sent anywhere but 127.0.0.1.

- `tiny_mp4(path)`: a valid 2-frame 16x16 H.264 MP4 (about 1.5 KB).
- `sample_table_bomb(path, samples)`: that file with its index rewritten in place to claim `samples`
  video samples of a constant size (FFmpeg allocates ~24 bytes per claimed sample when it opens it).
- `size_switch_stream(path, big)`: a raw H.264 stream named .mp4 whose first frames are 64x64 and whose
  later frames are `big` x `big` (the header and the first picture say 64x64).
- `declared_huge(path, side)`: a valid H.264 MP4 whose pictures really are `side` x `side` (tiny: flat grey).
"""
from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np


def _encode(path_or_buf, width: int, height: int, frames: int, fmt: str = "mp4", fps: int = 25) -> None:
    import av

    with av.open(path_or_buf, "w", format=fmt) as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.options = {"preset": "ultrafast", "tune": "zerolatency"}
        for i in range(frames):
            img = np.full((height, width, 3), 90 + 20 * (i % 3), np.uint8)
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)


def tiny_mp4(path: Path) -> Path:
    _encode(str(path), 16, 16, 2)
    return Path(path)


def _boxes(buf: bytes, start: int, end: int):
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", buf[pos:pos + 8])
        if size < 8:
            return
        yield pos, size, kind
        pos += size


def _find(buf: bytes, path: list[bytes], start: int = 0, end: int | None = None) -> list[int]:
    end = len(buf) if end is None else end
    found = []
    for pos, size, kind in _boxes(buf, start, end):
        if kind == path[0]:
            if len(path) == 1:
                found.append(pos)
            else:
                found += _find(buf, path[1:], pos + 8, pos + size)
    return found


def sample_table_bomb(path: Path, samples: int = 50_000_000) -> Path:
    """Rewrite stsz (constant size, `samples` samples), the stts count and stsc's samples per chunk, in
    place: the file stays the size of the tiny clip."""
    tiny_mp4(path)
    buf = bytearray(Path(path).read_bytes())
    stbl = ["moov", "trak", "mdia", "minf", "stbl"]
    (stsz,) = _find(buf, [b.encode() for b in stbl + ["stsz"]])
    struct.pack_into(">II", buf, stsz + 12, 1, samples)           # sample_size 1, sample_count
    (stts,) = _find(buf, [b.encode() for b in stbl + ["stts"]])
    struct.pack_into(">II", buf, stts + 12, 1, samples)           # entry_count 1: (samples, delta)
    struct.pack_into(">I", buf, stts + 20, 1)
    (stsc,) = _find(buf, [b.encode() for b in stbl + ["stsc"]])
    struct.pack_into(">II", buf, stsc + 12, 1, 1)                 # one entry: first chunk 1
    struct.pack_into(">I", buf, stsc + 20, samples)               # samples per chunk
    Path(path).write_bytes(bytes(buf))
    return Path(path)


def size_switch_stream(path: Path, big: int = 8704, small_frames: int = 150, big_frames: int = 2) -> Path:
    """Annex-B H.264: `small_frames` at 64x64, then a new sequence at `big` x `big`."""
    parts = []
    for side, n in ((64, small_frames), (big, big_frames)):
        buf = io.BytesIO()
        _encode(buf, side, side, n, fmt="h264")
        parts.append(buf.getvalue())
    Path(path).write_bytes(b"".join(parts))
    return Path(path)


def declared_huge(path: Path, side: int = 8192, frames: int = 2, height: int | None = None) -> Path:
    _encode(str(path), side, height or side, frames)
    return Path(path)
