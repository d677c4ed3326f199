"""The outermost ASGI layer of the API: request limits, patient-data caching headers, and quiet failures.

- More than `max_headers` request headers -> 431 before any route runs.
- The body must keep coming: no bytes for `body_idle_timeout_s`, or not complete within `body_timeout_s`,
  -> 408 (and the connection is closed). The HTTP server (service.api.server) bounds header size and
  header time; this bounds the body, which the server hands to the app as it arrives.
- Every `/v1/` response (assessments, FHIR, pictures, session) gets `Cache-Control: no-store`: patient data
  must not stay in browser or proxy caches.
- An exception that escapes the app is logged once, by class and frames only (never its message, which
  may quote patient data), and answered with a 500 problem if nothing was sent yet; it is not re-raised,
  so the server does not log a second traceback. A client that hung up is not an error: nothing is logged.
"""
from __future__ import annotations

import asyncio
import logging
import time

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import problems
from service.uploads import ClientGone
from worker.settings import Settings

log = logging.getLogger("feqa.api")
NO_STORE = (b"cache-control", b"no-store")


class BodyTimeout(problems.Problem):
    def __init__(self, what: str) -> None:
        super().__init__(408, problems.REQUEST_TIMEOUT, f"the request body {what}; send it again",
                         headers={"Connection": "close"})


class Guard:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.max_headers = settings.max_headers
        self.idle_s = settings.body_idle_timeout_s
        self.total_s = settings.body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if len(scope.get("headers", ())) > self.max_headers:
            await _problem(send, 431, problems.HEADERS_TOO_LARGE,
                           f"too many request headers (at most {self.max_headers})")
            return
        deadline = time.monotonic() + self.total_s
        body_done = False
        started = False
        no_store = scope.get("path", "").startswith("/v1/")

        async def guarded_receive() -> Message:
            nonlocal body_done
            if body_done:
                return await receive()
            wait = min(self.idle_s, deadline - time.monotonic())
            if wait <= 0:
                raise BodyTimeout(f"did not arrive within {self.total_s:.0f} s")
            try:
                message = await asyncio.wait_for(receive(), wait)
            except TimeoutError:
                raise BodyTimeout(f"stalled for {wait:.0f} s") from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if no_store:
                    headers = list(message.get("headers", []))
                    if not any(k.lower() == b"cache-control" for k, _ in headers):
                        headers.append(NO_STORE)
                    message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except (ClientGone, ClientDisconnect):
            return                                  # nobody to answer; the upload was cleaned up
        except Exception as exc:
            problems.log_unexpected(exc, scope.get("method", ""), scope.get("path", ""))
            if not started:
                await _problem(send, 500, problems.INTERNAL_ERROR, "internal error; the event was logged")


async def _problem(send: Send, status: int, code: str, detail: str) -> None:
    response = problems.problem_response(status, code, detail, headers={"Connection": "close"})
    await send({"type": "http.response.start", "status": status, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})
