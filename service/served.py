"""Which expressions are served, and why a task is not: for /v1/models, the web form and uploads.

The truth is what the workers have loaded (their heartbeats in the job store). While no worker has
reported yet (starting up, or an in-process test app without workers), the model manifests in the
model directory stand in: they are what a worker will load. Nothing here returns a server path.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from model.contract import EXPRESSIONS, PROTOCOLS
from model.tasks import PROTOCOL_INFO, task
from service.manifests import read_manifests

NOT_INSTALLED = "no model is installed for this task"
NOT_LOADED = "a model is installed but no worker has it loaded (it may be damaged or still loading)"
_ABS_PATH = re.compile(r"^(?:/[^/\s]+(?:/[^/\s]*)+|[A-Za-z]:\\.+)$")


@dataclass
class Served:
    models: dict[str, dict[str, Any]]        # expression -> manifest (or the heartbeat's summary)
    reasons: dict[str, str]                  # expression not served -> why, in plain words
    source: str                              # "workers" or "model_dir"
    problem: str | None = None

    @property
    def expressions(self) -> list[str]:
        return [e for e in EXPRESSIONS if e in self.models]


def served(store: Any, settings: Any) -> Served:
    manifests, _ = read_manifests(settings.model_dir)   # its problem text names the directory: not sent
    by_expression = {m["expression"]: scrub_paths(m) for m in manifests}
    try:
        workers = store.ready_workers(settings.heartbeat_max_age_s)
    except Exception:   # the job store is down: say what the model directory holds
        workers = []
    if workers:
        loaded = {m["expression"]: m for w in workers for m in (w.models or []) if m.get("expression")}
        models = {e: {**by_expression.get(e, {}), **m} for e, m in loaded.items()}
        source = "workers"
    else:
        models, source = by_expression, "model_dir"
    reasons = {e: (NOT_LOADED if e in by_expression else NOT_INSTALLED) for e in EXPRESSIONS if e not in models}
    problem = None if models else ("no model is installed on the server (the administrator installs them: "
                                   "`make demo-models`, or FEQA_MODEL_DIR)")
    return Served(models, reasons, source, problem)


def protocols_out(s: Served) -> dict[str, dict[str, Any]]:
    """Per protocol, each task: served or not, with the model or the reason (the web form reads this)."""
    out = {}
    for name, tasks in PROTOCOLS.items():
        rows = []
        for e in tasks:
            m = s.models.get(e)
            rows.append({"expression": e, "title": task(e).title, "instructions": task(e).instructions,
                         "served": m is not None,
                         "model": {"name": str(m.get("name", "")), "version": str(m.get("version", ""))}
                         if m else None,
                         "reason": None if m else s.reasons.get(e, NOT_INSTALLED),
                         "reason_code": None if m else "model_unavailable"})
        info = PROTOCOL_INFO.get(name)
        out[name] = {"title": info.title if info else name, "description": info.description if info else "",
                     "served": any(r["served"] for r in rows),
                     "tasks": rows}
    return out


def unavailable_problem_text(expression: str, s: Served) -> str:
    offered = ", ".join(s.expressions) or "none"
    return (f"no model is loaded for the expression {expression!r} ({s.reasons.get(expression, NOT_INSTALLED)}); "
            f"expressions served: {offered}")


def scrub_paths(value: Any) -> Any:
    """The value with every absolute filesystem path replaced by its last component."""
    if isinstance(value, dict):
        return {k: scrub_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_paths(v) for v in value]
    if isinstance(value, str) and _ABS_PATH.match(value):
        pure = PureWindowsPath(value) if "\\" in value else PurePosixPath(value)
        return pure.name
    return value

