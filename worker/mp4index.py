"""Bounded check of an MP4/MOV sample index before FFmpeg reads it.

FFmpeg's MP4 demuxer allocates its index (about 24 bytes per sample) from the counts the file declares,
while it opens the file: a 1.5 KB file whose `stsz` box claims 50 million samples of a constant size
costs 1.2 GB before a single picture is decoded (a "sample-table bomb"). This module walks the box tree
(reading only box headers and the few counts that matter, never more than `MAX_BOX_READ` bytes at once)
and refuses a file whose declared counts cannot be true for an upload within the limits: more samples
than `max_samples`, or a table whose entries do not fit in its own box.

Plain Python, no decoding: the API and the workers run it before `av.open`.
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

from model.errors import VideoError

# Containers whose children are boxes (ISO/IEC 14496-12; QuickTime uses the same layout).
CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"moof", b"traf", b"mvex", b"dinf"}
# (box type, bytes per table entry) for the tables FFmpeg allocates from their entry counts.
TABLES = {b"stts": 8, b"ctts": 8, b"stsc": 12, b"stco": 4, b"co64": 8, b"stss": 4, b"stps": 4, b"sdtp": 1}
MAX_DEPTH = 12
MAX_BOXES = 20_000
MAX_TRACKS = 16
NON_VIDEO_FACTOR = 8       # audio frames per video frame, generously (AAC at 48 kHz: 47 per second)


class _Track:
    def __init__(self) -> None:
        self.handler = b""
        self.samples = 0         # from stsz / stz2
        self.constant_size = False
        self.timed = 0           # sum of stts counts


def _is_isobmff(head: bytes) -> bool:
    return len(head) >= 8 and head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot",
                                            b"moof", b"styp", b"sidx")


def check_sample_index(path: str | Path, *, max_samples: int) -> None:
    """Raise VideoError (`video_too_large` for a bomb, `not_a_video` for an inconsistent index) when the
    MP4/MOV index declares more than `max_samples` samples in a track, or a table longer than its box.
    Files that are not ISO BMFF (WebM, AVI, ...) pass through untouched."""
    p = Path(path)
    size = p.stat().st_size
    with open(p, "rb") as fh:
        if not _is_isobmff(fh.read(8)):
            return
        tracks: list[_Track] = []
        fragments = [0]
        _walk(fh, 0, size, 0, tracks, fragments, [0])
    for t in tracks:
        if t.handler == b"vide":
            counted, limit = max(t.timed, t.samples), max_samples
        elif t.constant_size:
            continue            # constant-size sound samples (PCM): FFmpeg indexes these by chunk
        else:
            counted, limit = max(t.timed, t.samples), max_samples * NON_VIDEO_FACTOR
        if counted > limit:
            raise VideoError("the video's index declares more samples than a recording within the limits can "
                             "hold; it was refused before reading it", code="video_too_large",
                             details={"declared_samples": counted, "max_samples": limit})
    if fragments[0] > max_samples:
        raise VideoError("the video's fragments declare more samples than a recording within the limits can "
                         "hold", code="video_too_large",
                         details={"declared_samples": fragments[0], "max_samples": max_samples})


def _bad(what: str) -> VideoError:
    return VideoError(f"the file is not a video we can read (its index is inconsistent: {what})",
                      code="not_a_video")


def _walk(fh: BinaryIO, start: int, end: int, depth: int, tracks: list[_Track], fragments: list[int],
          boxes: list[int]) -> None:
    if depth > MAX_DEPTH:
        raise _bad("boxes nested too deep")
    pos = start
    while pos + 8 <= end:
        boxes[0] += 1
        if boxes[0] > MAX_BOXES:
            raise _bad("too many boxes")
        fh.seek(pos)
        head = fh.read(16)
        if len(head) < 8:
            return
        size, kind = struct.unpack(">I4s", head[:8])
        hdr = 8
        if size == 1:
            if len(head) < 16:
                raise _bad("truncated box header")
            size, hdr = struct.unpack(">Q", head[8:16])[0], 16
        elif size == 0:
            size = end - pos
        if size < hdr:
            raise _bad("box smaller than its header")
        box_end = min(pos + size, end)      # a box running past the file: FFmpeg reads what is there
        body = pos + hdr
        if kind == b"trak":
            if len(tracks) >= MAX_TRACKS:
                raise _bad("too many tracks")
            tracks.append(_Track())
        if kind in CONTAINERS:
            _walk(fh, body, box_end, depth + 1, tracks, fragments, boxes)
        elif kind == b"hdlr" and tracks:
            fh.seek(body + 8)               # version/flags, pre_defined
            tracks[-1].handler = fh.read(4)
        elif kind in (b"stsz", b"stz2") and tracks:
            _stsz(fh, kind, body, box_end, tracks[-1])
        elif kind in TABLES:
            n = _table(fh, kind, body, box_end)
            if kind == b"stts" and tracks:
                tracks[-1].timed = _stts_total(fh, body, box_end, n)
        elif kind == b"trun":
            fh.seek(body + 4)
            raw = fh.read(4)
            if len(raw) == 4:
                fragments[0] += struct.unpack(">I", raw)[0]
        pos += size
        if size == 0:
            return


def _table(fh: BinaryIO, kind: bytes, body: int, box_end: int) -> int:
    """The entry count of a table box; its entries must fit inside the box."""
    fh.seek(body + 4)                       # version/flags
    raw = fh.read(4)
    if len(raw) < 4:
        raise _bad(f"truncated {kind.decode()}")
    n = struct.unpack(">I", raw)[0]
    if kind == b"sdtp":
        return n
    if body + 8 + n * TABLES[kind] > box_end:
        raise _bad(f"{kind.decode()} declares {n} entries that its box cannot hold")
    return n


def _stts_total(fh: BinaryIO, body: int, box_end: int, n: int) -> int:
    """Sum of the sample counts in stts (each entry: count, delta); read in bounded blocks."""
    total, pos, left = 0, body + 8, n
    fh.seek(pos)
    while left:
        k = min(left, 8192)
        raw = fh.read(8 * k)
        if len(raw) < 8 * k:
            raise _bad("truncated stts")
        total += sum(struct.unpack(f">{2 * k}I", raw)[0::2])
        left -= k
    return total


def _stsz(fh: BinaryIO, kind: bytes, body: int, box_end: int, track: _Track) -> None:
    fh.seek(body + 4)
    raw = fh.read(8)
    if len(raw) < 8:
        raise _bad("truncated stsz")
    if kind == b"stsz":
        sample_size, count = struct.unpack(">II", raw)
        track.constant_size = sample_size != 0
        entry_bits = 0 if sample_size else 32
    else:                                   # stz2: reserved(24) field_size(8), count
        entry_bits, count = raw[3], struct.unpack(">I", raw[4:8])[0]
    if entry_bits and body + 12 + (count * entry_bits + 7) // 8 > box_end:
        raise _bad(f"{kind.decode()} declares {count} sizes that its box cannot hold")
    track.samples = count
