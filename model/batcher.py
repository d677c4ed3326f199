"""Dynamic batching across jobs: one scorer thread serves many extraction threads.

    batcher = BatchingScorer(Scorer(model_dir), max_batch=32, max_wait_s=0.005)
    batcher.score("smile", trajs, index_t, frames)   # same call and answer as Scorer.score, from any thread

Each caller's windows (one job's, B >= 1) go into a queue; the scorer thread takes the first request,
then waits at most `max_wait_s` for more requests of the same expression until `max_batch` windows are
gathered, runs them as one onnxruntime call and hands every caller its own slice. On a GPU this keeps the
device fed by several CPU-bound extraction threads (decode and tracking) instead of one small call per job;
on a CPU it costs at most `max_wait_s` per job. A request larger than `max_batch` is run alone, whole.
Requests are validated by the wrapped Scorer, so a bad one fails its own caller, never its batch-mates
(a batch that fails is retried request by request). Every other Scorer method is passed through.
"""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class _Request:
    expression: str
    trajs: np.ndarray
    index_t: np.ndarray
    frames: np.ndarray | None
    future: Future = field(default_factory=Future)

    @property
    def n(self) -> int:
        return int(np.asarray(self.trajs).shape[0])


class BatchingScorer:
    def __init__(self, scorer: Any, max_batch: int = 32, max_wait_s: float = 0.005) -> None:
        if max_batch < 1 or max_wait_s < 0:
            raise ValueError("max_batch must be >= 1 and max_wait_s >= 0")
        self.scorer, self.max_batch, self.max_wait_s = scorer, max_batch, max_wait_s
        self._q: queue.Queue[_Request | None] = queue.Queue()
        self._held: _Request | None = None            # taken from the queue, for the next batch
        self.batches: list[int] = []                  # windows per onnxruntime call (the last 1000)
        self._thread = threading.Thread(target=self._run, name="feqa-scorer", daemon=True)
        self._thread.start()

    def __getattr__(self, name: str) -> Any:         # manifest, contract, expressions, warmup, providers...
        return getattr(self.scorer, name)

    def score(self, expression: str, trajs: np.ndarray, index_t: np.ndarray,
              frames: np.ndarray | None) -> np.ndarray:
        if not self._thread.is_alive():
            raise RuntimeError("the batching scorer was closed")
        req = _Request(expression, trajs, index_t, frames)
        self._q.put(req)
        return req.future.result()

    def close(self) -> None:
        self._q.put(None)
        self._thread.join(5)

    def _next(self, timeout: float | None) -> _Request | None:
        if self._held is not None:
            req, self._held = self._held, None
            return req
        return self._q.get(timeout=timeout) if timeout is None or timeout > 0 else self._q.get_nowait()

    def _run(self) -> None:
        while True:
            first = self._next(None)
            if first is None:
                return
            batch, n = [first], first.n
            deadline = time.monotonic() + self.max_wait_s
            while n < self.max_batch:
                try:
                    req = self._next(max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if req is None:
                    self._q.put(None)                 # close after this batch
                    break
                if req.expression != first.expression or n + req.n > self.max_batch:
                    self._held = req                  # starts the next batch
                    break
                batch.append(req)
                n += req.n
            self._score(batch)

    def _score(self, batch: list[_Request]) -> None:
        if len(batch) > 1:
            try:
                raw = self.scorer.score(batch[0].expression, *self._stack(batch))
            except Exception:
                raw = None                            # somebody's input is bad: each on its own below
            if raw is not None:
                self._note(len(raw))
                a = 0
                for r in batch:
                    r.future.set_result(raw[a:a + r.n])
                    a += r.n
                return
        for r in batch:
            try:
                out = self.scorer.score(r.expression, r.trajs, r.index_t, r.frames)
                self._note(len(out))
                r.future.set_result(out)
            except Exception as exc:
                r.future.set_exception(exc)

    @staticmethod
    def _stack(batch: list[_Request]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        frames = None if any(r.frames is None for r in batch) else np.concatenate([r.frames for r in batch])
        return (np.concatenate([r.trajs for r in batch]), np.concatenate([r.index_t for r in batch]), frames)

    def _note(self, n: int) -> None:
        self.batches.append(n)
        del self.batches[:-1000]


def providers_for(providers: list[str] | None, device_id: int | None) -> list[Any] | None:
    """onnxruntime providers for this worker process: the CUDA provider pinned to `device_id`
    (FEQA_CUDA_DEVICE_ID, one worker process per GPU) when CUDA is among them."""
    if device_id is None or providers is None:
        if device_id is not None:
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        else:
            return providers
    return [("CUDAExecutionProvider", {"device_id": int(device_id)}) if p == "CUDAExecutionProvider" else p
            for p in providers]
