"""`feqa worker` (also `feqa-worker`, the worker images' command): a Celery worker that serves the scoring
queue on this machine.

It needs to reach the broker (REDIS_URL), the job store (DATABASE_URL) and the shared storage
(FEQA_STORAGE_DIR); add as many as you like, on any machine. Use one process per GPU.
"""
from __future__ import annotations

import argparse
import os
import socket

HELP = "run a scoring worker (Celery) for the queue"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--concurrency", "-c", type=int, default=1, help="worker processes (one per GPU)")
    parser.add_argument("--pool", "-P", default="prefork", choices=["prefork", "solo", "threads"],
                        help="prefork isolates a crashing video from the worker (default)")
    parser.add_argument("--queue", "-Q", default=None, help="queue name (default FEQA_QUEUE or feqa.gpu)")
    parser.add_argument("--model-dir", default=None, help="model directory (default FEQA_MODEL_DIR)")
    parser.add_argument("--name", "-n", default=None, help="worker node name (default feqa@<host>)")
    parser.add_argument("--loglevel", "-l", default="INFO")
    parser.add_argument("--healthcheck", action="store_true",
                        help="exit 0 when a worker on this host has its models loaded and warmed (container check)")


def healthcheck() -> int:
    from worker.jobs.store import Store
    from worker.settings import get_settings

    settings = get_settings()
    host = socket.gethostname()
    try:
        workers = Store(settings.db_url).ready_workers(settings.heartbeat_max_age_s)
    except Exception as exc:   # no database, or no schema yet (`feqa migrate`)
        print(f"job store not readable: {type(exc).__name__}")
        return 1
    ok = [w.worker_id for w in workers if w.worker_id.rpartition(":")[0] == host]
    print("ready: " + ", ".join(ok) if ok else f"no warmed worker on {host}")
    return 0 if ok else 1


def celery_argv(args: argparse.Namespace, queue: str) -> list[str]:
    name = args.name or f"feqa-{os.getpid()}@{socket.gethostname()}"
    return ["worker", "-Q", queue, "-c", str(args.concurrency), "-P", args.pool, "-n", name,
            "-l", args.loglevel, "--without-gossip", "--without-mingle", "-E"]


def run(args: argparse.Namespace) -> int:
    if args.healthcheck:
        return healthcheck()
    from worker.settings import configure

    # Before worker.tasks builds the Celery app from them; the pool's children are forked from here.
    settings = configure(model_dir=args.model_dir, queue=args.queue)
    from worker.tasks import app  # registers the tasks and the process signals

    app.worker_main(celery_argv(args, settings.queue))
    return 0


def main(argv: list[str] | None = None) -> int:
    """`feqa-worker`: the same command without the `feqa` CLI (the worker images hold no service/)."""
    parser = argparse.ArgumentParser(prog="feqa-worker", description=HELP)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
