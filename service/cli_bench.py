"""`feqa bench {model,extract,api,e2e,all}`: performance measurements.

Each topic lives in the package that owns it and is imported lazily; a topic whose module is not there yet
prints "not available" instead of failing the others.
"""
from __future__ import annotations

import argparse
import importlib
import json
from types import ModuleType

HELP = ("measure speed: model (network, PyTorch/onnxruntime), extract, api, e2e, throughput, all; "
        "invariance (whole-recording score spread over placements, and its cost)")

TOPICS: dict[str, str] = {
    "model": "model.bench",
    "extract": "worker.bench",
    "api": "bench.api",
    "e2e": "bench.e2e",
    "throughput": "bench.throughput",
    "invariance": "bench.invariance",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("topic", choices=[*TOPICS, "all"], help="what to measure")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="options passed to the topic (see --help there)")


def _load(topic: str) -> ModuleType | None:
    module_name = TOPICS[topic]
    if module_name.startswith("bench."):   # bench/ sits in the repository, not in the installed packages
        import sys
        from pathlib import Path

        root = str(Path(__file__).resolve().parents[1])
        if root not in sys.path:
            sys.path.insert(0, root)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            return None
        raise


def _run_topic(topic: str, rest: list[str]) -> int:
    mod = _load(topic)
    if mod is None or not hasattr(mod, "main"):
        print(f"bench {topic}: not available ({TOPICS[topic]} is missing)")
        return 0
    if hasattr(mod, "add_arguments"):         # the module parses its options and prints its own report
        sub = argparse.ArgumentParser(prog=f"feqa bench {topic}")
        mod.add_arguments(sub)
        result = mod.main(sub.parse_args(rest))
    else:                                     # a plain main(argv) returning a dict: print it as JSON
        result = mod.main(rest)
        if isinstance(result, dict):
            print(json.dumps(result, indent=1, default=str))
    return result if isinstance(result, int) else 0


def run(args: argparse.Namespace) -> int:
    topics = list(TOPICS) if args.topic == "all" else [args.topic]
    rc = 0
    for topic in topics:
        print(f"== bench {topic} ==")
        rc = max(rc, _run_topic(topic, [] if args.topic == "all" else args.rest))
    return rc
