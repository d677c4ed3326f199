"""Read the model manifests (<name>.json beside <name>.onnx) without loading onnxruntime."""
from __future__ import annotations

import json
from pathlib import Path


def read_manifests(model_dir: Path) -> tuple[list[dict], str | None]:
    """(manifests, problem): problem says why none is usable, for /v1/models and `feqa serve`."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return [], f"model directory {model_dir} does not exist"
    found = []
    for js in sorted(model_dir.glob("*.json")):
        if not js.with_suffix(".onnx").is_file():
            continue
        try:
            m = json.loads(js.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(m, dict) and m.get("expression"):
            m.setdefault("name", js.stem)
            found.append(m)
    if not found:
        return [], (f"no models in {model_dir} (expected <name>.onnx + <name>.json pairs); "
                    "ship them with `make demo-models` or point FEQA_MODEL_DIR at a model directory")
    return found, None
