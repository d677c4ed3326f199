"""`feqa serve`: the API and a scoring worker on this machine, with no other service needed.

By default the job store and the broker are SQLite files under var/ and the storage is
var/storage; set DATABASE_URL / REDIS_URL / FEQA_STORAGE_DIR to share them with `feqa worker`
processes elsewhere. Also manages API keys and purges expired data.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from worker.settings import Settings

HELP = "run the inference API with a local worker; manage API keys; purge expired data"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=None, help="bind address (default FEQA_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default FEQA_PORT or 8000)")
    parser.add_argument("--workers", type=int, default=1, help="local scoring worker processes (0 = none)")
    parser.add_argument("--api-workers", type=int, default=1,
                        help="API processes (uvicorn workers; key cache and rate limit are per process)")
    parser.add_argument("--model-dir", default=None, help="model directory (default FEQA_MODEL_DIR, models/demo)")
    keys = parser.add_mutually_exclusive_group()
    keys.add_argument("--create-key", metavar="TENANT", help="print a new API key for TENANT once, then exit")
    keys.add_argument("--revoke-key", metavar="KEY_ID", help="revoke a key by its id (the part after feqa_)")
    keys.add_argument("--purge", action="store_true", help="delete expired videos and assessments, then exit")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Command-line options that override settings, for this process and those it starts."""
    return {"host": args.host, "port": args.port, "model_dir": args.model_dir}


def _admin(args: argparse.Namespace, settings: Settings) -> int | None:
    from worker.jobs.db import migrate
    from worker.jobs.store import Store

    if args.create_key or args.revoke_key or args.purge:
        migrate(settings.db_url)   # the admin commands may be the first to open a new database
    if args.create_key:
        key = Store(settings.db_url).create_key(args.create_key)
        print(key)
        print(f"# API key for tenant {args.create_key!r}: shown once, store it safely", file=sys.stderr)
        return 0
    if args.revoke_key:
        ok = Store(settings.db_url).revoke_key(args.revoke_key)
        print("revoked" if ok else "no such key", file=sys.stderr)
        return 0 if ok else 1
    if args.purge:
        from worker.jobs.housekeeping import purge
        from worker.jobs.storage import open_storage

        print(purge(Store(settings.db_url), open_storage(settings), settings))
        return 0
    return None


_ORDERLY_EXIT = (0, -signal.SIGTERM, -signal.SIGINT)


def _die_with_parent() -> None:
    """In the child before exec: ask Linux to send SIGTERM when `feqa serve` dies, even by kill -9,
    so local workers never outlive the server that started them."""
    try:
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    except OSError:  # not Linux/glibc: the orderly stop in Workers.stop still applies
        pass


class Workers:
    """The local worker subprocesses, restarted when one dies (a crash must not leave the machine
    without a worker; the items it held are re-queued by the next worker's heartbeat)."""

    def __init__(self, n: int, env: dict[str, str]) -> None:
        self.env = env
        self.procs: list[subprocess.Popen] = [self._start(i) for i in range(n)]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="feqa-worker-watch", daemon=True)
        if n:
            self._thread.start()

    def _start(self, i: int) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "service.cli", "worker", "--concurrency", "1", "--name", f"feqa-local-{i}@%h"]
        # Its own process group: a signal to `feqa serve`'s group (Ctrl-C, a service manager) must not
        # reach Celery's pool children directly, or Celery replaces them in the middle of its warm
        # shutdown and can hang there. The worker is stopped through its main process instead.
        return subprocess.Popen(cmd, env=self.env, preexec_fn=_die_with_parent, start_new_session=True)

    def _watch(self) -> None:
        while not self._stop.wait(2.0):
            for i, p in enumerate(self.procs):
                # A worker told to stop (SIGTERM/SIGINT to the whole process group, as Ctrl-C or a
                # service manager does) is shutting down with us: starting it again would leave an
                # orphan behind. Only a crash (kill -9, a segfault, an error exit) is restarted.
                if p.poll() is not None and p.returncode not in _ORDERLY_EXIT and not self._stop.is_set():
                    print(f"feqa serve: worker {i} exited with {p.returncode}; starting it again", file=sys.stderr)
                    self.procs[i] = self._start(i)

    def stop(self) -> None:
        self._stop.set()
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(ProcessLookupError):   # the pool children too
                os.killpg(p.pid, signal.SIGKILL)


def run(args: argparse.Namespace) -> int:
    from worker.jobs.db import migrate
    from worker.settings import child_env, configure

    overrides = _overrides(args)
    settings = configure(**overrides)
    done = _admin(args, settings)
    if done is not None:
        return done
    from service.manifests import read_manifests

    migrate(settings.db_url)   # once, before the worker and the API open the database
    _, problem = read_manifests(settings.model_dir)
    if problem:
        print(f"\nWARNING: {problem}\nThe API accepts uploads, but /readyz answers 503 and nothing is "
              "scored until models are there.\n", file=sys.stderr)
    if not settings.anonymous_allowed:
        print("API keys required: create one with `feqa serve --create-key TENANT`", file=sys.stderr)
    # uvicorn re-raises the SIGTERM it caught once it has shut down; with the default action that killed
    # this process before `finally` ran and left the local workers running (one even took a new task).
    # Raised as SystemExit instead, it unwinds through `finally`, which stops them.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    env = child_env(overrides)
    workers = Workers(args.workers, env)
    try:
        _serve_api(settings, args.api_workers, env)
    finally:
        workers.stop()
    return 0


def _serve_api(settings: Settings, n: int, env: dict[str, str]) -> None:
    """One API process here, with these settings; several as the server's uvicorn workers, which read the
    options from the environment handed to them. Both through service.api.server (the request limits)."""
    if n <= 1:
        from service.api.main import create_app
        from service.api.server import serve

        with contextlib.suppress(KeyboardInterrupt):
            serve(settings.host, settings.port, settings=settings, app=create_app(settings))
        return
    cmd = [sys.executable, "-m", "service.api.server", "--host", settings.host, "--port", str(settings.port),
           "--workers", str(n), "--log-level", "info"]
    with contextlib.suppress(KeyboardInterrupt):
        subprocess.run(cmd, env=env, check=False)


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)
