"""The HTTP server for the API, with its limits: `python -m service.api.server` (the container's command)
and `feqa serve` both run it, so the limits hold however the API is started.

uvicorn's httptools protocol (h11 where httptools is missing) with:
- `max_header_bytes`: a request line plus headers larger than that is answered 400 and the connection
  closed, after buffering at most that much plus one read (plain httptools buffered a 100 MiB header whole
  and stalled every other client meanwhile; for h11 it is `h11_max_incomplete_event_size`);
- a header timeout (`header_timeout_s`): a connection that has not completed its request headers within
  that time is closed (slow-header clients, half-open connections);
- `timeout_keep_alive` = `keep_alive_timeout_s`: idle keep-alive connections are closed;
- `limit_concurrency` = `max_connections`: beyond it, new requests are answered 503 at once.
The body limits (size, idle and total time) are the app's (service.api.guard, service.uploads).
"""
from __future__ import annotations

import argparse
import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from worker.settings import Settings, get_settings


class _HeaderDeadline:
    """A deadline for each request's headers (from connection start or the previous response)."""

    header_timeout_s: float | None = None
    _header_timer: asyncio.TimerHandle | None = None

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        timeout = self.header_timeout_s if self.header_timeout_s is not None else get_settings().header_timeout_s
        self._header_timer = self.loop.call_later(timeout, self._header_timeout)  # type: ignore[attr-defined]

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self._awaiting_headers() and not self.transport.is_closing():  # type: ignore[attr-defined]
            self.transport.close()  # type: ignore[attr-defined]  # headers still incomplete: drop the connection

    def _awaiting_headers(self) -> bool:
        raise NotImplementedError


class GuardedH11Protocol(_HeaderDeadline, H11Protocol):
    """h11 (pure Python): header size bounded by h11_max_incomplete_event_size."""

    def _awaiting_headers(self) -> bool:
        return self.conn.their_state is h11.IDLE

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._cancel_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)


def _httptools_class() -> type:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class GuardedHttpToolsProtocol(_HeaderDeadline, HttpToolsProtocol):
        """httptools (C, uvicorn's fast default) with a bound on the bytes a request's line and headers may
        take: the parser buffers an incomplete header, so the bytes fed while the headers are incomplete are
        counted, and past `max_header_bytes` (plus at most one read) the request is answered 400 and the
        connection closed."""

        max_header_bytes: int | None = None
        _in_headers = True
        _header_bytes = 0

        def _limit(self) -> int:
            return self.max_header_bytes or get_settings().max_header_bytes

        def _awaiting_headers(self) -> bool:
            return self._in_headers

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._in_headers, self._header_bytes = True, 0
            self._arm_header_timer()

        def data_received(self, data: bytes) -> None:
            if self._in_headers:
                self._header_bytes += len(data)
            super().data_received(data)
            if self._in_headers and self._header_bytes > self._limit() and not self.transport.is_closing():
                self.send_400_response("Request headers too large.")

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_headers = True

        def on_headers_complete(self) -> None:
            self._in_headers, self._header_bytes = False, 0
            self._cancel_header_timer()
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            # The request's body has been read to its end: what comes next is the next request's line and
            # headers. (Not at response_complete: an early answer, a 403 or 413 sent before the body is read,
            # leaves body bytes still to come, and they are no headers.)
            super().on_message_complete()
            self._in_headers, self._header_bytes = True, 0

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self._in_headers and not self.transport.is_closing():
                self._arm_header_timer()   # idle until the next request's headers

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_header_timer()
            super().connection_lost(exc)

    # Bound below as this module's GuardedHttpToolsProtocol: uvicorn pickles its config (the class by name)
    # for the processes of --workers N.
    GuardedHttpToolsProtocol.__qualname__ = "GuardedHttpToolsProtocol"
    return GuardedHttpToolsProtocol


GuardedHttpToolsProtocol: type | None
try:
    import httptools  # noqa: F401

    GuardedHttpToolsProtocol = _httptools_class()
except ImportError:   # the pure-Python parser then, with the same limits
    GuardedHttpToolsProtocol = None


def uvicorn_options(settings: Settings) -> dict:
    return {"http": GuardedHttpToolsProtocol or GuardedH11Protocol, "ws": "none",
            "h11_max_incomplete_event_size": settings.max_header_bytes,
            "timeout_keep_alive": max(1, int(round(settings.keep_alive_timeout_s))),
            "limit_concurrency": settings.max_connections or None,
            "timeout_graceful_shutdown": 30}


def serve(host: str, port: int, *, workers: int = 1, log_level: str = "info", proxy_headers: bool = False,
          forwarded_allow_ips: str | None = None, settings: Settings | None = None, app: Any = None) -> None:
    """Serve `app` (an app built here, one process) or the app factory (`workers` processes)."""
    import uvicorn

    settings = settings or get_settings()
    target = app if app is not None else "service.api.main:app_factory"
    uvicorn.run(target, factory=app is None, host=host, port=port, log_level=log_level,
                workers=1 if app is not None else max(1, workers), proxy_headers=proxy_headers,
                forwarded_allow_ips=forwarded_allow_ips, **uvicorn_options(settings))


def main(argv: list[str] | None = None) -> int:
    settings = get_settings()
    p = argparse.ArgumentParser(prog="python -m service.api.server", description=__doc__.split("\n")[0])
    p.add_argument("--host", default=settings.host)
    p.add_argument("--port", type=int, default=settings.port)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--log-level", default="info")
    p.add_argument("--proxy-headers", action="store_true")
    p.add_argument("--forwarded-allow-ips", default=None)
    args = p.parse_args(argv)
    serve(args.host, args.port, workers=args.workers, log_level=args.log_level, proxy_headers=args.proxy_headers,
          forwarded_allow_ips=args.forwarded_allow_ips, settings=settings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
