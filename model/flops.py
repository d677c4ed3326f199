"""A small FLOP counter (2 x multiply-accumulates of convolutions, linears and matmuls).

Elementwise ops, softmax and normalisation are not counted (they are a few percent here), the same
convention as the reference figures (333.5 GFLOPs per sample for `paper`).
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

_MATMULS = {torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.bmm, torch.Tensor.bmm}


class FlopCounter(TorchFunctionMode):
    """`with FlopCounter(model) as fc: model(...)`; `fc.total` and `fc.by_module` (top-level children)."""

    def __init__(self, model: torch.nn.Module | None = None) -> None:
        super().__init__()
        self.total = 0
        self.by_module: dict[str, int] = defaultdict(int)
        self._current = ["other"]
        self._hooks: list[Any] = []
        if model is not None:
            for name, child in model.named_children():
                self._hooks.append(child.register_forward_pre_hook(self._enter(name)))
                self._hooks.append(child.register_forward_hook(self._leave))

    def _enter(self, name: str) -> Callable[..., None]:
        def hook(*_args: Any) -> None:
            self._current.append(name)
        return hook

    def _leave(self, *_args: Any) -> None:       # returns None: a forward hook's return value replaces the output
        self._current.pop()

    def _add(self, n: int) -> None:
        self.total += n
        self.by_module[self._current[-1]] += n

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func is F.linear:
            self._add(2 * out.numel() * args[0].shape[-1])
        elif func is F.conv2d:
            w = args[1] if len(args) > 1 else kwargs["weight"]
            self._add(2 * out.numel() * w.shape[1] * w.shape[2] * w.shape[3])
        elif func in _MATMULS:
            self._add(2 * out.numel() * args[0].shape[-1])
        return out

    def __exit__(self, *exc: Any) -> Any:
        for h in self._hooks:
            h.remove()
        return super().__exit__(*exc)


def count_flops(model: torch.nn.Module, *inputs: Any) -> tuple[int, dict[str, int]]:
    """FLOPs of one forward call on `inputs` (divide by the batch size for per-sample figures)."""
    with torch.no_grad(), FlopCounter(model) as fc:
        model(*inputs)
    return fc.total, dict(fc.by_module)
