"""One scorer per GPU host, fed by many extraction processes (`feqa scorer`).

On a GPU host the CPU stages (decode, face tracking, extraction: about 1.5 s of CPU per 10 s clip) need
several processes to keep one GPU busy, but each process that loads the ONNX models holds its own copy in GPU
memory and sends only its own job's windows. So the worker processes of a host can leave the models to one
scorer process instead:

    feqa scorer --socket /run/feqa/scorer.sock          # loads the models once, batches across processes
    FEQA_SCORER_SOCKET=/run/feqa/scorer.sock feqa worker --pool prefork -c 6

Each worker process then scores through `RemoteScorer` (the `model.scorer.ScoringModels` seam: the same
`expressions`, `manifest`, `contract`, `score` as a local Scorer), and the scorer process runs every request
through one `model.batcher.BatchingScorer`, so the windows of jobs in different processes share one
onnxruntime call (bounded by FEQA_SCORE_BATCH_WAIT_MS, default here 5 ms, and FEQA_SCORE_MAX_BATCH).

Transport: a Unix socket on this host only (`multiprocessing.connection`), created 0600, with an HMAC
challenge on a key derived from FEQA_SECRET_KEY before any message is read; messages carry numpy arrays
(a `paper` window is ~12 MB of frames, a `compact` one well under 1 MB). A contract error in one request is
answered to its caller only, with its code. When the scorer process is gone, `score` raises
`ScorerUnavailable` (code `scorer_unavailable`): the worker's task is retried; the client reconnects on its
next call, so a restarted scorer is picked up without restarting the workers.
"""
from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any

import numpy as np

from model.contract import PreprocessContract
from model.errors import FeqaError, ModelUnavailable

log = logging.getLogger("feqa.scorer")
PROTOCOL = 1


class ScorerUnavailable(FeqaError):
    """The host's scorer process cannot be reached (not started, restarting, or gone): transient, the task is
    retried (unlike model_unavailable, which a retry on the same worker would not change)."""
    code = "scorer_unavailable"
    http_status = 503


def authkey(secret: str) -> bytes:
    return hashlib.sha256(b"feqa-score-server\0" + secret.encode()).digest()


class ScoreServer:
    """Serves `scorer` (a Scorer, usually wrapped in a BatchingScorer) on a Unix socket, one thread a client."""

    def __init__(self, scorer: Any, socket_path: str | Path, secret: str) -> None:
        self.scorer = scorer
        self.path = Path(socket_path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() or self.path.is_symlink():
            self.path.unlink()                              # a stale socket of a previous run
        old = os.umask(0o177)                               # the socket file is created 0600
        try:
            self._listener = Listener(str(self.path), family="AF_UNIX", authkey=authkey(secret))
        finally:
            os.umask(old)
        self._closed = threading.Event()
        self._conns: set[Connection] = set()
        self._lock = threading.Lock()
        self.requests = 0

    def hello(self) -> dict:
        es = list(self.scorer.expressions())
        return {"protocol": PROTOCOL, "pid": os.getpid(), "expressions": es,
                "manifests": {e: self.scorer.manifest(e) for e in es},
                "contracts": {e: self.scorer.contract(e).to_dict() for e in es}}

    def serve_forever(self) -> None:
        log.info("scorer serving %d model(s) on %s", len(self.scorer.expressions()), self.path)
        while not self._closed.is_set():
            try:
                conn = self._listener.accept()
            except OSError:
                if self._closed.is_set():
                    return
                continue
            except Exception as exc:   # a client that failed the challenge: refuse it, keep serving
                log.warning("scorer: refused a connection (%s)", type(exc).__name__)
                continue
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=self._client, args=(conn,), name="feqa-scorer-client", daemon=True).start()

    def close(self) -> None:
        """Stop accepting and end every client's connection (their next call reconnects or fails)."""
        self._closed.set()
        self._listener.close()
        self.path.unlink(missing_ok=True)
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            try:   # wakes the client thread blocked in recv (closing alone would not)
                socket.fromfd(conn.fileno(), socket.AF_UNIX, socket.SOCK_STREAM).shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _client(self, conn: Connection) -> None:
        try:
            while not self._closed.is_set():
                try:
                    msg = conn.recv()
                except (EOFError, OSError):
                    return
                conn.send(self._answer(msg))
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def _answer(self, msg: dict) -> dict:
        op = msg.get("op")
        try:
            if op == "hello":
                return {"ok": self.hello()}
            if op == "score":
                self.requests += 1
                out = self.scorer.score(msg["expression"], msg["trajs"], msg["index_t"], msg.get("frames"))
                return {"ok": np.asarray(out, np.float32)}
            if op == "stats":
                return {"ok": {"requests": self.requests, "batches": list(getattr(self.scorer, "batches", []))}}
            return {"error": {"code": "internal_error", "message": f"unknown scorer request {op!r}"}}
        except FeqaError as exc:
            return {"error": {"code": exc.code, "message": exc.message, "http_status": exc.http_status,
                              "kind": "input" if exc.http_status < 500 else "server"}}
        except Exception as exc:   # never kill the connection for one bad request
            log.exception("scorer request failed")
            return {"error": {"code": "internal_error", "message": type(exc).__name__, "kind": "server"}}


class RemoteScorer:
    """`ScoringModels` over the host's scorer process; one connection per thread, opened on first use."""

    def __init__(self, socket_path: str | Path, secret: str) -> None:
        self.path = str(socket_path)
        self._key = authkey(secret)
        self._local = threading.local()
        self._info = self._call({"op": "hello"})
        if self._info.get("protocol") != PROTOCOL:
            raise ScorerUnavailable(f"the scorer at {self.path} speaks protocol {self._info.get('protocol')}, "
                                    f"this worker {PROTOCOL}")
        self._contracts = {e: PreprocessContract.from_dict(d) for e, d in self._info["contracts"].items()}

    def _conn(self) -> Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = Client(self.path, family="AF_UNIX", authkey=self._key)
            except (OSError, EOFError, AuthenticationError) as exc:
                raise ScorerUnavailable(f"no scorer process at {self.path} ({type(exc).__name__})") from exc
            self._local.conn = conn
        return conn

    def _call(self, msg: dict) -> Any:
        for attempt in (0, 1):                              # one reconnect: the scorer may have restarted
            conn = self._conn()
            try:
                conn.send(msg)
                answer = conn.recv()
                break
            except (OSError, EOFError) as exc:
                self._local.conn = None
                conn.close()
                if attempt:
                    raise ScorerUnavailable(f"the scorer process at {self.path} went away "
                                            f"({type(exc).__name__})") from exc
        if "error" in answer:
            e = answer["error"]
            if e.get("kind") == "input":
                from model.errors import ContractError
                raise ContractError(e["message"], code=e["code"], http_status=e.get("http_status"))
            raise FeqaError(e["message"], code=e["code"], http_status=e.get("http_status", 500))
        return answer["ok"]

    def expressions(self) -> list[str]:
        return list(self._info["expressions"])

    def manifest(self, expression: str) -> dict:
        if expression not in self._info["manifests"]:
            raise ModelUnavailable(f"no model for {expression!r} on this host's scorer process",
                                   details={"expression": expression})
        return dict(self._info["manifests"][expression])

    def contract(self, expression: str) -> PreprocessContract:
        self.manifest(expression)
        return self._contracts[expression]

    def score(self, expression: str, trajs: np.ndarray, index_t: np.ndarray,
              frames: np.ndarray | None) -> np.ndarray:
        return np.asarray(self._call({"op": "score", "expression": expression, "trajs": np.ascontiguousarray(trajs),
                                      "index_t": np.ascontiguousarray(index_t),
                                      "frames": None if frames is None else np.ascontiguousarray(frames)}))

    def stats(self) -> dict:
        return dict(self._call({"op": "stats"}))

    def warmup(self) -> None:        # the scorer process warmed its models when it started
        return None
