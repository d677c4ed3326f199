"""Streaming multipart parsing for POST /v1/assessments.

Starlette's form parser reads the whole body before the endpoint runs; this one writes each
`video` part to storage as its chunks arrive and stops at the size limit, so a too-large upload
is refused early and no upload is ever held whole in memory.

Every byte of the body counts against the upload limit (file parts, text fields, part headers and
boundaries alike), and the shape is bounded too: at most `max_parts` parts, `MAX_PART_HEADER_BYTES`
of headers per part, `MAX_FIELD_BYTES` per text field. A body that ends before its closing boundary
is refused (it was scored on the part received).
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, cast

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from service import problems
from worker.jobs.storage import Writer

MAX_FIELD_BYTES = 4096
MAX_PART_HEADER_BYTES = 4096
MAX_PART_HEADERS = 8
BODY_OVERHEAD_BYTES = 64 * 1024   # boundaries, part headers and text fields on top of the videos
TEXT_FIELDS = ("expression", "patient_ref", "protocol")


@dataclass
class ParsedUpload:
    videos: list[Writer] = field(default_factory=list)
    fields: dict[str, list[str]] = field(default_factory=dict)

    def abort(self) -> None:
        for w in self.videos:
            w.abort()


class _Collector:
    """Callbacks for python-multipart's push parser."""

    def __init__(self, open_video: Callable[[int], Writer], max_bytes: int, max_files: int) -> None:
        self.out = ParsedUpload()
        self.open_video, self.max_bytes, self.max_files = open_video, max_bytes, max_files
        self.max_parts = 2 * max_files + 4      # a video and an expression per item, patient_ref, protocol
        self.parts = 0
        self.complete = False                   # the closing boundary was seen
        self.total = 0
        self._header_bytes = 0
        self._hname = b""
        self._hvalue = b""
        self._headers: dict[bytes, bytes] = {}
        self._name: str | None = None
        self._writer: Writer | None = None
        self._buf = bytearray()

    def callbacks(self) -> dict:
        return {"on_part_begin": self.part_begin, "on_header_field": self.header_field,
                "on_header_value": self.header_value, "on_header_end": self.header_end,
                "on_headers_finished": self.headers_finished, "on_part_data": self.part_data,
                "on_part_end": self.part_end, "on_end": self.end}

    def end(self) -> None:
        self.complete = True

    def part_begin(self) -> None:
        self.parts += 1
        if self.parts > self.max_parts:
            raise problems.Problem(422, problems.INVALID_REQUEST,
                                   f"too many parts in the form (at most {self.max_parts})")
        self._headers, self._name, self._writer, self._buf = {}, None, None, bytearray()
        self._header_bytes = 0

    def _count_header(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > MAX_PART_HEADER_BYTES:
            raise problems.Problem(422, problems.INVALID_REQUEST, "a part's headers are too long")

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._hname += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._hvalue += data[start:end]

    def header_end(self) -> None:
        if len(self._headers) >= MAX_PART_HEADERS:
            raise problems.Problem(422, problems.INVALID_REQUEST, "a part has too many headers")
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
            try:
                self._writer = self.open_video(len(self.out.videos))
            except OSError as exc:      # read-only or full volume, permissions: ours, not the client's
                raise storage_unavailable() from exc
            self.out.videos.append(self._writer)
        elif self._name not in TEXT_FIELDS:
            raise problems.Problem(422, problems.INVALID_REQUEST, f"unexpected form field {self._name!r}")

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if self._writer is not None:
            self.total += end - start
            if self.total > self.max_bytes:
                raise too_large(self.max_bytes)
            try:
                self._writer.write(data[start:end])
            except OSError as exc:
                raise storage_unavailable() from exc
            return
        self._buf += data[start:end]
        if len(self._buf) > MAX_FIELD_BYTES:
            raise problems.Problem(422, problems.INVALID_REQUEST, f"form field {self._name!r} is too long")

    def part_end(self) -> None:
        if self._writer is not None:
            self._writer.close()
        elif self._name:
            try:
                value = self._buf.decode("utf-8")
            except UnicodeDecodeError:
                raise problems.Problem(422, problems.INVALID_REQUEST, f"form field {self._name!r} is not UTF-8",
                                       details={"field": self._name}) from None
            self.out.fields.setdefault(self._name, []).append(value.strip())


def too_large(limit: int) -> problems.Problem:
    return problems.Problem(413, problems.UPLOAD_TOO_LARGE,
                            f"the upload is larger than the limit of {limit // (1024 * 1024)} MiB; "
                            "send a shorter or more compressed video")


def storage_unavailable() -> problems.Problem:
    return problems.Problem(503, problems.STORAGE_UNAVAILABLE, "the upload storage cannot be written to; "
                            "nothing was kept, send the upload again later", headers={"Retry-After": "30"})


class ClientGone(Exception):
    """The client hung up before the body was complete: nobody is left to answer."""


def boundary_of(content_type: str) -> bytes:
    kind, opts = parse_options_header(content_type)
    if kind != b"multipart/form-data" or not opts.get(b"boundary"):
        raise problems.Problem(415, problems.INVALID_REQUEST,
                               "send multipart/form-data with 'video' file parts and 'expression' fields")
    return opts[b"boundary"]


async def parse_upload(chunks: AsyncIterator[bytes], content_type: str, open_video: Callable[[int], Writer],
                       *, max_bytes: int, max_files: int) -> ParsedUpload:
    """Parse the body; on any error the partial files are removed and the error re-raised. The whole body
    (files, fields, headers of parts, boundaries) counts against `max_bytes` plus a small allowance."""
    collector = _Collector(open_video, max_bytes, max_files)
    parser = MultipartParser(boundary_of(content_type), cast(Any, collector.callbacks()))
    received, body_limit = 0, max_bytes + BODY_OVERHEAD_BYTES
    try:
        async for chunk in chunks:
            received += len(chunk)
            if received > body_limit:
                raise too_large(max_bytes)
            # Writing a chunk to local disk takes microseconds; a thread hop per chunk would cost more.
            parser.write(chunk)
        parser.finalize()
        if not collector.complete:
            raise problems.Problem(400, problems.INVALID_REQUEST, "the multipart/form-data body ended before "
                                   "its closing boundary: the upload is incomplete; send it again")
    except MultipartParseError as exc:   # a malformed body is the client's error, not ours (was a 500)
        collector.out.abort()
        raise problems.Problem(400, problems.INVALID_REQUEST,
                               "the multipart/form-data body is malformed; let your HTTP library build it") from exc
    except ClientDisconnect as exc:
        collector.out.abort()
        raise ClientGone() from exc
    except problems.Problem as exc:      # refused mid-body: close, so the client stops sending the rest
        collector.out.abort()
        exc.headers.setdefault("Connection", "close")
        raise
    except BaseException:
        collector.out.abort()
        raise
    return collector.out
