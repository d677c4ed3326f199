"""onnxruntime scoring of exported TraMP-Former models.

    scorer = Scorer(model_dir)            # every <name>.onnx + <name>.json, loaded once, checksums verified
    scorer.score("smile", trajs, index_t, frames) -> np.ndarray (B,)

Create one Scorer per process (after fork in a Celery worker), never per request (worker.runtime loads
it once per worker process). Inputs must match the manifest's contract exactly (Tp, Tf, frame size, channel
count, dtype); trajectories may carry all five channels [x, y, R, G, B], of which the model's are selected.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Protocol

import numpy as np

from model.contract import FULL_CHANNELS, N_SLOTS, PreprocessContract, check_expression
from model.errors import ContractError, ModelIntegrityError, ModelUnavailable
from model.manifest import model_pairs, read_manifest, sha256_file


@dataclass
class _Loaded:
    manifest: dict
    contract: PreprocessContract
    session: Any   # onnxruntime.InferenceSession (no type information)
    inputs: tuple[str, ...]
    batch: int | None = None          # the graph's fixed batch size, None when the batch axis is dynamic


def default_providers() -> list[str]:
    import onnxruntime as ort
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


class ScoringModels(Protocol):
    """The seam between the worker and the models: what worker.pipeline needs from a Scorer (or a
    model.batcher.BatchingScorer wrapping one)."""

    def expressions(self) -> list[str]: ...
    def manifest(self, expression: str) -> dict: ...
    def contract(self, expression: str) -> PreprocessContract: ...
    def score(self, expression: str, trajs: np.ndarray, index_t: np.ndarray,
              frames: np.ndarray | None) -> np.ndarray: ...


class Scorer:
    def __init__(self, model_dir: str | Path, providers: list[str] | None = None, intra_op_threads: int = 1) -> None:
        import onnxruntime as ort
        self.model_dir = Path(model_dir)
        if not self.model_dir.is_dir():
            raise ModelUnavailable(f"model directory {self.model_dir} does not exist")
        self.providers = providers or default_providers()
        so = ort.SessionOptions()
        so.intra_op_num_threads = intra_op_threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        self._models: dict[str, _Loaded] = {}
        for js, onnx_path in model_pairs(self.model_dir):
            self._load(js, onnx_path, so, ort)

    def _load(self, js: Path, onnx_path: Path, so: Any, ort: Any) -> None:
        manifest = read_manifest(js)
        expression = manifest.get("expression")
        if not expression:
            return
        actual = sha256_file(onnx_path)
        if actual != manifest.get("sha256"):
            raise ModelIntegrityError(
                f"{onnx_path.name}: sha256 {actual[:12]}... does not match its manifest "
                f"({str(manifest.get('sha256'))[:12]}...); the file was changed or truncated, re-export it",
                details={"file": onnx_path.name})
        if expression in self._models:
            prev = self._models[expression].manifest
            raise ModelUnavailable(f"two models for {expression!r} in {self.model_dir}: {prev.get('name')} and "
                                   f"{manifest.get('name')}; keep one per expression")
        session = ort.InferenceSession(str(onnx_path), so, providers=self.providers)
        dims = {i.shape[0] for i in session.get_inputs() if i.shape}
        fixed = [d for d in dims if isinstance(d, int) and d > 0]
        self._models[expression] = _Loaded(manifest, PreprocessContract.from_dict(manifest["contract"]), session,
                                           tuple(i.name for i in session.get_inputs()),
                                           fixed[0] if fixed else None)

    def expressions(self) -> list[str]:
        return sorted(self._models)

    def _get(self, expression: str) -> _Loaded:
        check_expression(expression)
        if expression not in self._models:
            raise ModelUnavailable(f"no model for {expression!r} in {self.model_dir}",
                                   details={"available": self.expressions()})
        return self._models[expression]

    def manifest(self, expression: str) -> dict:
        return self._get(expression).manifest

    def contract(self, expression: str) -> PreprocessContract:
        return self._get(expression).contract

    def score(self, expression: str, trajs: np.ndarray, index_t: np.ndarray,
              frames: np.ndarray | None) -> np.ndarray:
        """(B,) float32 scores; ContractError when the inputs do not match the model's contract.

        Any B >= 1 is one onnxruntime call when the exported graph has a dynamic batch axis (the shipped
        exports do); a graph exported with a fixed batch size b is run in chunks of b (the last one padded by
        repeating its final sample, whose extra scores are dropped)."""
        m = self._get(expression)
        feeds = _validate(m.contract, m.inputs, trajs, index_t, frames)
        size = next(iter(feeds.values())).shape[0]
        if m.batch is None or m.batch == size:
            return m.session.run(["score"], feeds)[0].reshape(-1).astype(np.float32)
        out = []
        for a in range(0, size, m.batch):
            chunk = {k: v[a:a + m.batch] for k, v in feeds.items()}
            n = next(iter(chunk.values())).shape[0]
            if n < m.batch:
                chunk = {k: np.concatenate([v, np.repeat(v[-1:], m.batch - n, axis=0)]) for k, v in chunk.items()}
            out.append(m.session.run(["score"], chunk)[0].reshape(-1)[:n])
        return np.concatenate(out).astype(np.float32)

    def batch_size(self, expression: str) -> int | None:
        """The model's fixed batch size, or None when any batch size runs in one call."""
        return self._get(expression).batch

    def warmup(self) -> None:
        """One batch-1 run per model, so that the first request does not pay for allocation."""
        for m in self._models.values():
            c = m.contract
            self.score(m.manifest["expression"], np.zeros((1, N_SLOTS, c.tp, 5), np.float32),
                       np.zeros((1, c.tp), np.float32),
                       np.zeros((1, c.tf, c.frame_size, c.frame_size, 3), np.uint8))


def _fail(what: str, got: object, expected: object, **details: Any) -> NoReturn:
    raise ContractError(f"{what}: got {got}, the model expects {expected}",
                        details={"input": what, "got": str(got), "expected": str(expected), **details})


def _validate(c: PreprocessContract, wanted: tuple[str, ...], trajs: Any, index_t: Any,
              frames: Any) -> dict[str, np.ndarray]:
    feeds: dict[str, np.ndarray] = {}
    batch = None
    if "trajs" in wanted or "index_t" in wanted:
        if not isinstance(trajs, np.ndarray) or trajs.dtype != np.float32:
            _fail("trajs dtype", getattr(trajs, "dtype", type(trajs).__name__), "float32")
        if trajs.ndim != 4 or trajs.shape[1] != N_SLOTS or trajs.shape[2] != c.tp or trajs.shape[3] not in (5, c.cp):
            _fail("trajs shape", tuple(trajs.shape), f"(B, {N_SLOTS}, Tp={c.tp}, 5 or {c.cp} channels "
                  f"{list(c.channels)})")
        if not np.isfinite(trajs).all():
            _fail("trajs values", "NaN or infinite values", "finite coordinates and colours")
        if trajs.shape[3] != c.cp:
            trajs = trajs[..., [FULL_CHANNELS.index(ch) for ch in c.channels]]
        if not isinstance(index_t, np.ndarray) or index_t.dtype != np.float32:
            _fail("index_t dtype", getattr(index_t, "dtype", type(index_t).__name__), "float32")
        if index_t.shape != (trajs.shape[0], c.tp):
            _fail("index_t shape", tuple(index_t.shape), f"({trajs.shape[0]}, Tp={c.tp})")
        batch = trajs.shape[0]
        feeds.update(trajs=np.ascontiguousarray(trajs), index_t=np.ascontiguousarray(index_t))
    if "frames" in wanted:
        expected = (c.tf, c.frame_size, c.frame_size, 3)
        if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8:
            _fail("frames dtype", getattr(frames, "dtype", type(frames).__name__), "uint8 RGB")
        if frames.ndim != 5 or frames.shape[1:] != expected:
            _fail("frames shape", tuple(frames.shape), f"(B, Tf={c.tf}, {c.frame_size}, {c.frame_size}, 3)")
        if batch is not None and frames.shape[0] != batch:
            _fail("batch size", f"{frames.shape[0]} frame clips for {batch} trajectories", "the same batch size")
        feeds["frames"] = np.ascontiguousarray(frames)
    return {k: v for k, v in feeds.items() if k in wanted}
