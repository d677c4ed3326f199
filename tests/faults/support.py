"""Helpers shared by the fault-injection and security suites (tests/faults, tests/security).

- `shared_models(factory)`: untrained compact models, exported once per pytest session (about 20 s).
- `real_video()`: the committed real face clip; `long_video()`: a 10.9 s 720p clip from ../shared.
- `own_redis(tmp)`: a private redis-server with append-only persistence on a free port, restartable
  (the shared 127.0.0.1:6379 one is never restarted).
- `TcpProxy`: a 127.0.0.1 TCP proxy that can cut and refuse connections (a database outage).
- `leftovers(var_dir)`: temporary upload files (`*.part`) still in storage.
- `upload(http, path_or_bytes, ...)`: POST /v1/assessments with one video.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bench.servers import free_port, untrained_models
from tests.conftest import VIDEOS

_MODELS: dict[str, Path] = {}


def shared_models(factory: pytest.TempPathFactory, expressions: tuple[str, ...] = ("smile", "frown")) -> Path:
    """One export of the untrained models per session, whichever suite asks first."""
    if "dir" not in _MODELS:
        _MODELS["dir"] = untrained_models(factory.mktemp("models"), expressions)
    return _MODELS["dir"]


def long_video() -> Path:
    """A 10.9 s 720p clip: its extraction takes seconds, so a test can catch the item while it runs (the
    short clip is scored in well under a second, and its result is published before the pictures)."""
    path = VIDEOS / "tfjs-models_facemesh_input.mp4"
    if not path.is_file():
        pytest.fail(f"{path} is missing: the worker-kill tests need ../shared/videos")
    return path


def upload(http: httpx.Client, video: Path | bytes, *, name: str = "clip.mp4", expression: str = "smile",
           patient_ref: str | None = None, headers: dict | None = None) -> httpx.Response:
    content = video.read_bytes() if isinstance(video, Path) else video
    data = {"expression": expression}
    if patient_ref:
        data["patient_ref"] = patient_ref
    return http.post("/v1/assessments", files={"video": (name, content, "video/mp4")}, data=data,
                     headers=headers or {})


def leftovers(var_dir: Path) -> list[Path]:
    """Partial uploads still on disk."""
    root = var_dir / "storage"
    return sorted(root.rglob("*.part")) if root.exists() else []


def upload_files(var_dir: Path, assessment_id: str) -> list[Path]:
    d = var_dir / "storage" / "uploads" / assessment_id
    return sorted(p for p in d.rglob("*") if p.is_file()) if d.exists() else []


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    """Poll `predicate` until it returns something truthy; bounded by `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what} not seen within {timeout} s")


# --- a private Redis with persistence ------------------------------------------------------------
@dataclass
class OwnRedis:
    port: int
    data_dir: Path
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server is not installed; the Redis restart test needs its own server")
        log = open(self.data_dir / "redis.out", "ab")
        # appendfsync always: every queued message is on disk before Redis answers the API.
        self.proc = subprocess.Popen([exe, "--bind", "127.0.0.1", "--port", str(self.port), "--appendonly", "yes",
                                      "--appendfsync", "always", "--save", "", "--dir", str(self.data_dir),
                                      "--protected-mode", "yes"],
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        wait_for(self._pong, 15, f"redis on port {self.port}")

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no shutdown save; only the append-only file survives."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None


@contextlib.contextmanager
def own_redis(tmp: Path) -> Iterator[OwnRedis]:
    data = tmp / "redis-data"
    data.mkdir(parents=True, exist_ok=True)
    r = OwnRedis(free_port(), data)
    r.start()
    try:
        yield r
    finally:
        r.kill()


# --- a TCP proxy that can simulate an outage -----------------------------------------------------
class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target. `cut()` closes every open connection and refuses new ones
    (the database host is gone); `restore()` accepts again."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._up = threading.Event()
        self._up.set()
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True, name="tcp-proxy")

    def __enter__(self) -> TcpProxy:
        self._open_listener()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.cut()
        self._thread.join(5)

    def _open_listener(self) -> None:
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(64)
        ls.settimeout(0.2)
        self._listener = ls

    def _serve(self) -> None:
        while not self._stop.is_set():
            if not self._up.is_set() or self._listener is None:
                time.sleep(0.05)
                continue
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self._up.clear()
        if self._listener is not None:
            self._listener.close()      # new connections are refused, not left hanging
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def restore(self) -> None:
        self._open_listener()
        self._up.set()
