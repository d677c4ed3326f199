"""Streaming multipart parsing for POST /v1/assessments.

Starlette's form parser reads the whole body before the endpoint runs; this one writes each
`video` part to storage as its chunks arrive and stops at the size limit, so a too-large upload
is refused early and no upload is ever held whole in memory.
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from service import problems
from worker.jobs.storage import ChunkWriter

MAX_FIELD_BYTES = 4096
TEXT_FIELDS = ("expression", "patient_ref", "protocol")


@dataclass
class ParsedUpload:
    videos: list[ChunkWriter] = field(default_factory=list)
    fields: dict[str, list[str]] = field(default_factory=dict)

    def abort(self) -> None:
        for w in self.videos:
            w.abort()


class _Collector:
    """Callbacks for python-multipart's push parser."""

    def __init__(self, open_video: Callable[[int], ChunkWriter], max_bytes: int, max_files: int) -> None:
        self.out = ParsedUpload()
        self.open_video, self.max_bytes, self.max_files = open_video, max_bytes, max_files
        self.total = 0
        self._hname = b""
        self._hvalue = b""
        self._headers: dict[bytes, bytes] = {}
        self._name: str | None = None
        self._writer: ChunkWriter | None = None
        self._buf = bytearray()

    def callbacks(self) -> dict:
        return {"on_part_begin": self.part_begin, "on_header_field": self.header_field,
                "on_header_value": self.header_value, "on_header_end": self.header_end,
                "on_headers_finished": self.headers_finished, "on_part_data": self.part_data,
                "on_part_end": self.part_end}

    def part_begin(self) -> None:
        self._headers, self._name, self._writer, self._buf = {}, None, None, bytearray()

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self._hname += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self._hvalue += data[start:end]

    def header_end(self) -> None:
        self._headers[self._hname.lower()] = self._hvalue
        self._hname, self._hvalue = b"", b""

    def headers_finished(self) -> None:
        _, opts = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = opts.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" in opts:
            if self._name != "video":
                raise problems.Problem(422, problems.INVALID_REQUEST,
                                       f"file parts must be named 'video', got {self._name!r}")
            if len(self.out.videos) >= self.max_files:
                raise problems.Problem(422, problems.INVALID_REQUEST,
                                       f"at most {self.max_files} videos per assessment")
            self._writer = self.open_video(len(self.out.videos))
            self.out.videos.append(self._writer)
        elif self._name not in TEXT_FIELDS:
            raise problems.Problem(422, problems.INVALID_REQUEST, f"unexpected form field {self._name!r}")

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if self._writer is not None:
            self.total += end - start
            if self.total > self.max_bytes:
                raise too_large(self.max_bytes)
            self._writer.write(data[start:end])
            return
        self._buf += data[start:end]
        if len(self._buf) > MAX_FIELD_BYTES:
            raise problems.Problem(422, problems.INVALID_REQUEST, f"form field {self._name!r} is too long")

    def part_end(self) -> None:
        if self._writer is not None:
            self._writer.close()
        elif self._name:
            self.out.fields.setdefault(self._name, []).append(self._buf.decode("utf-8", "replace").strip())


def too_large(limit: int) -> problems.Problem:
    return problems.Problem(413, problems.UPLOAD_TOO_LARGE,
                            f"the upload is larger than the limit of {limit // (1024 * 1024)} MiB; "
                            "send a shorter or more compressed video")


def boundary_of(content_type: str) -> bytes:
    kind, opts = parse_options_header(content_type)
    if kind != b"multipart/form-data" or not opts.get(b"boundary"):
        raise problems.Problem(415, problems.INVALID_REQUEST,
                               "send multipart/form-data with 'video' file parts and 'expression' fields")
    return opts[b"boundary"]


async def parse_upload(chunks: AsyncIterator[bytes], content_type: str, open_video: Callable[[int], ChunkWriter],
                       *, max_bytes: int, max_files: int) -> ParsedUpload:
    """Parse the body; on any error the partial files are removed and the error re-raised."""
    collector = _Collector(open_video, max_bytes, max_files)
    parser = MultipartParser(boundary_of(content_type), collector.callbacks())
    try:
        async for chunk in chunks:
            # Writing a chunk to local disk takes microseconds; a thread hop per chunk would cost more.
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:   # a malformed body is the client's error, not ours (was a 500)
        collector.out.abort()
        raise problems.Problem(400, problems.INVALID_REQUEST,
                               "the multipart/form-data body is malformed; let your HTTP library build it") from exc
    except BaseException:
        collector.out.abort()
        raise
    return collector.out
