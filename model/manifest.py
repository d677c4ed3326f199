"""Model files without the heavy libraries: checksums and manifests (<name>.json beside <name>.onnx).

Imports the standard library only, so that the scoring worker (model.scorer) and the export
(model.export) share one checksum without the worker needing torch.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_manifest(path: str | Path) -> dict:
    """The manifest at `path` (a <name>.json); json.JSONDecodeError / OSError propagate."""
    return json.loads(Path(path).read_text())


def model_pairs(model_dir: str | Path) -> Iterator[tuple[Path, Path]]:
    """(manifest, onnx) paths of every <name>.json that has a <name>.onnx beside it, sorted by name."""
    for js in sorted(Path(model_dir).glob("*.json")):
        onnx_path = js.with_suffix(".onnx")
        if onnx_path.is_file():
            yield js, onnx_path
