"""The `feqa` console command.

Each subcommand lives in the package that owns it, in a module exposing
`HELP: str`, `add_arguments(parser)` and `run(args) -> int`. Those modules keep their
top-level imports light (no torch, onnxruntime or OpenCV) so that `feqa --help` and the
HTTP-only commands start fast; heavy imports happen inside `run`.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, str] = {
    "serve": "service.cli_serve",
    "worker": "worker.cli_worker",
    "scorer": "worker.cli_scorer",
    "migrate": "worker.cli_migrate",
    "score": "service.cli_score",
    "extract": "worker.cli_extract",
    "simulate": "training.cli_simulate",
    "train": "training.cli_train",
    "evaluate": "training.cli_evaluate",
    "export": "training.cli_export",
    "batch": "service.cli_batch",
    "bench": "service.cli_bench",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="feqa", description="Facial expression quality assessment (TraMP-Former)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        try:
            mod = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # a command whose package this install (an image) does not hold
            if not exc.name or not (module_name == exc.name or module_name.startswith(exc.name + ".")):
                raise
            continue
        p = sub.add_parser(name, help=getattr(mod, "HELP", ""), description=getattr(mod, "HELP", ""))
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
