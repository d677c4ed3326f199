"""A small synchronous Python client for the FEQA REST API.

For integrators' own scripts and for `feqa batch`. It needs only httpx (no numpy, torch,
OpenCV or anything from the rest of this project), so it can be copied next to a script.

    from service.client import FeqaClient

    with FeqaClient("https://feqa.example.org", api_key="...") as client:
        job = client.submit([("smile.mp4", "smile"), ("frown.mp4", "frown")], patient_ref="P-0042")
        done = client.wait(job["id"], pictures=True)  # until succeeded / failed / partly_failed + pictures
        for item in done["items"]:
            print(item["expression"], item["status"], (item.get("result") or {}).get("score"))
        observation = client.fhir(job["id"])          # FHIR R4 Observation (dict)
        client.delete(job["id"])                      # remove the job, its videos and pictures

Every request is retried with exponential backoff (honouring `Retry-After`) on HTTP 429,
5xx answers and connection errors; other errors raise `ApiError`, which carries the
RFC 9457 problem document's `status`, `code`, `title` and `detail`.
"""
from __future__ import annotations

import hashlib
import mimetypes
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from worker.result import ItemResult

from model.manifest import sha256_file as file_sha256  # one checksum for models and videos (stdlib only)

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "partly_failed", "cancelled", "deleted"})
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

__all__ = ["ApiError", "ConnectionFailed", "FeqaClient", "idempotency_key", "file_sha256", "TERMINAL_STATUSES"]


class ApiError(Exception):
    """The API answered with an error (an RFC 9457 problem document when it could)."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        self.code: str = str(problem.get("code") or f"http_{status}")
        self.title: str = str(problem.get("title") or "")
        self.detail: str = str(problem.get("detail") or "")
        super().__init__(f"HTTP {status} {self.code}: {self.detail or self.title}")


class ConnectionFailed(Exception):
    """The API could not be reached (after the retries)."""




def idempotency_key(video_sha256: str, expression: str, model_version: str, *context: str) -> str:
    """Video hash + expression + model version (+ `context`, e.g. the patient reference and protocol): the
    same video re-sent for the same model, patient and protocol is one job; for another patient, another."""
    parts = [video_sha256, expression, model_version, *context]
    return hashlib.sha256(":".join(parts).encode()).hexdigest()


def _problem(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {"status": response.status_code, "detail": response.text[:500]}
    return body if isinstance(body, dict) else {"status": response.status_code, "detail": str(body)[:500]}


def _retry_after(response: httpx.Response | None) -> float | None:
    if response is None:
        return None
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class FeqaClient:
    """Client for one FEQA server. `api_key` may be None where the server allows anonymous use."""

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 60.0, retries: int = 5,
                 backoff: float = 0.5, max_backoff: float = 30.0, transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        headers = {"Accept": "application/json", "User-Agent": "feqa-client/1"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._sleep = sleep
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, transport=transport)

    # -- plumbing ---------------------------------------------------------------------------------
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> FeqaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        hinted = _retry_after(response)
        exp = min(self.max_backoff, self.backoff * (2 ** attempt))
        return min(self.max_backoff, hinted) if hinted is not None else exp

    def request(self, method: str, url: str, *, files_factory: Callable[[], Any] | None = None,
                **kwargs: Any) -> httpx.Response:
        """Send with retries on 429 / 5xx / connection errors; raise ApiError on any other error.

        `files_factory` builds the multipart files afresh on each attempt (open file handles are
        consumed by a send, so they cannot be reused for a retry).
        """
        for attempt in range(self.retries + 1):
            files = files_factory() if files_factory else None
            try:
                response = self._http.request(method, url, files=files, **kwargs)
            except httpx.TransportError as exc:
                if attempt >= self.retries:
                    raise ConnectionFailed(f"{method} {self.base_url}{url}: {exc}") from exc
                self._sleep(self._delay(attempt, None))
                continue
            finally:
                _close_files(files)
            if response.status_code in RETRY_STATUSES and attempt < self.retries:
                self._sleep(self._delay(attempt, response))
                continue
            if response.status_code >= 400:
                raise ApiError(response.status_code, _problem(response))
            return response
        raise AssertionError("unreachable")

    def _json(self, method: str, url: str, **kwargs: Any) -> Any:
        return self.request(method, url, **kwargs).json()

    # -- the API ----------------------------------------------------------------------------------
    def models(self) -> list[dict[str, Any]]:
        """The loaded models (one manifest summary per expression)."""
        body = self._json("GET", "/v1/models")
        if isinstance(body, dict):
            body = body.get("models", body.get("items", []))
        return list(body)

    def model_versions(self) -> dict[str, str]:
        """expression -> model version, from GET /v1/models."""
        out: dict[str, str] = {}
        for m in self.models():
            if m.get("expression"):
                out[str(m["expression"])] = str(m.get("version", ""))
        return out

    def submit(self, videos: Sequence[tuple[str | Path, str]], *, patient_ref: str | None = None,
               protocol: str | None = None, idempotency_key: str | None = None) -> dict[str, Any]:
        """Upload videos as `(path, expression)` pairs in one assessment. Returns {id, url, status}.

        Without an `idempotency_key` a random one is used, so that a retried upload (after a 5xx or a
        dropped connection) can never create a second assessment.
        """
        idempotency_key = idempotency_key or uuid.uuid4().hex
        data: dict[str, Any] = {"expression": [expr for _, expr in videos]}
        if patient_ref:
            data["patient_ref"] = patient_ref
        if protocol:
            data["protocol"] = protocol
        headers = {"Idempotency-Key": idempotency_key}

        def files() -> list[tuple[str, tuple[str, Any, str]]]:
            return [("video", (Path(p).name, open(p, "rb"), _mime(p))) for p, _ in videos]

        return self._json("POST", "/v1/assessments", data=data, headers=headers, files_factory=files)

    def get(self, assessment_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/assessments/{assessment_id}")

    def wait(self, assessment_id: str, *, timeout: float = 900.0, poll: float = 1.0, pictures: bool = False,
             on_update: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Poll until the assessment is in a terminal status; raise TimeoutError after `timeout` s.

        The score is published before the pictures are drawn: with `pictures=True`, also wait until
        no item's `pictures` is "pending" (each is "ready", with its links, or "none").
        """
        deadline = time.monotonic() + timeout
        while True:
            job = self.get(assessment_id)
            if on_update:
                on_update(job)
            if job.get("status") in TERMINAL_STATUSES and not (pictures and _pictures_pending(job)):
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"assessment {assessment_id} still {job.get('status')} after {timeout:.0f} s")
            self._sleep(poll)

    def fhir(self, assessment_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/assessments/{assessment_id}/fhir")

    def retry(self, assessment_id: str) -> dict[str, Any]:
        return self._json("POST", f"/v1/assessments/{assessment_id}/retry")

    def delete(self, assessment_id: str) -> None:
        self.request("DELETE", f"/v1/assessments/{assessment_id}")

    @staticmethod
    def result(item: dict[str, Any]) -> ItemResult | None:
        """An item's result as the typed model the worker stores and the API serves
        (`worker.result.ItemResult`; needs pydantic, the rest of this client does not). None without one."""
        from worker.result import ItemResult

        res = item.get("result")
        return None if res is None else ItemResult.model_validate(res)

    def download(self, url: str) -> bytes:
        """A picture from an item's `links` (relative or absolute URL)."""
        return self.request("GET", url).content


def _pictures_pending(job: dict[str, Any]) -> bool:
    """Some item's pictures may still come: its `pictures` is "pending" (servers without that field:
    a succeeded item without both links)."""
    def pending(item: dict[str, Any]) -> bool:
        if "pictures" in item:
            return item["pictures"] == "pending"
        links = item.get("links") or {}
        return item.get("status") == "succeeded" and not (links.get("overlay") and links.get("trajectories"))
    return any(pending(item) for item in job.get("items") or [])


def _mime(path: str | Path) -> str:
    return mimetypes.guess_type(str(path))[0] or "application/octet-stream"


def _close_files(files: Iterable[Any] | None) -> None:
    for _, spec in files or ():
        handle = spec[1] if isinstance(spec, tuple) else None
        if handle is not None and hasattr(handle, "close"):
            handle.close()
