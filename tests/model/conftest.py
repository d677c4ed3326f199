"""Reference fixtures for the model tests: loaded once per module, skipped with a plain reason when absent."""
from __future__ import annotations

import pytest
import torch

from tests.conftest import FIXTURES


def fixture_file(name: str) -> dict[str, torch.Tensor]:
    path = FIXTURES / name
    if not path.exists():
        pytest.skip(f"reference fixtures not found at {FIXTURES} (set FEQA_SHARED); CI always has them")
    from safetensors.torch import load_file
    return load_file(str(path))


def reference_state(*names: str) -> dict[str, torch.Tensor]:
    sd: dict[str, torch.Tensor] = {}
    for n in names:
        sd.update({k: v for k, v in fixture_file(n).items() if k.startswith("state.")})
    return sd


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item()
