"""Real servers for integration tests and benchmarks: the API (uvicorn) and Celery workers as subprocesses.

Reuse these from any test (web form, batch, fault injection) or benchmark (bench/ imports no tests):

    from bench.servers import feqa_stack, feqa_serve, untrained_models

    models = untrained_models(tmp_path / "models", ["smile"])      # or a session fixture's directory
    with feqa_stack(tmp_path, model_dir=models, broker="redis") as stack:   # API + 1 worker, waits for /readyz
        key = stack.create_key("clinic-a")                             # a real API key for a tenant
        with stack.client(key) as http:                               # httpx.Client on stack.base_url
            r = http.post("/v1/assessments", files=..., data=...)
        stack.wait_done(http, r.json()["id"])                         # poll until no item is in flight

- `feqa_stack(tmp, broker="sqlite"|"redis", database_url=None, workers=1, anonymous=False, pool="solo",
  env={...})`: the API and `workers` Celery worker processes started separately (like a deployment).
  broker="redis" uses the real Redis at 127.0.0.1:6379 (db FEQA_TEST_REDIS_DB, default 11) with a queue
  name unique to the run, so parallel runs never share messages. database_url=None -> SQLite in `tmp`.
- `feqa_serve(tmp, ...)`: the single-machine default, `feqa serve` (API + its own worker subprocess, SQLite
  job store and SQLite broker, no Redis).
- To kill or restart one process: `stack.workers[0].kill()` (SIGKILL to its process group), then
  `stack.add_worker()`; `api_server(env, var_dir)` starts an API alone; `start(name, worker_cmd(), env, log_dir)`
  a worker alone (`service_env(var_dir, ...)` builds the shared environment).
- `postgres_url()` gives a fresh schema on DATABASE_URL_TEST (dropped at exit).
Processes get their own session; teardown terminates, then kills, their process group. Each process
writes its output to `<tmp>/logs/<name>.log` (shown by `stack.logs()` when a test fails).
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
REDIS_HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def untrained_models(out_dir: Path, expressions: list[str] | tuple[str, ...] = ("smile",)) -> Path:
    """Export untrained compact models (trained_on "untrained") into `out_dir`, once per directory."""
    out_dir = Path(out_dir)
    if not all(any(out_dir.glob(f"{e}-*.onnx")) for e in expressions):
        from model.export import export_untrained

        export_untrained(out_dir, expressions=list(expressions))
    return out_dir


def service_env(var_dir: Path, *, model_dir: Path | None = None, broker: str = "sqlite",
                database_url: str | None = None, anonymous: bool = False, extra: dict | None = None) -> dict:
    """Environment for API and worker processes that share one job store, broker and storage."""
    var_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("FEQA_") and k not in ("DATABASE_URL", "REDIS_URL")}
    env.update({"FEQA_VAR_DIR": str(var_dir), "FEQA_ALLOW_ANONYMOUS": "true" if anonymous else "false",
                "FEQA_HEARTBEAT_INTERVAL_S": "1", "FEQA_HEARTBEAT_MAX_AGE_S": "10", "PYTHONUNBUFFERED": "1",
                "FEQA_QUEUE": f"feqa.test.{uuid.uuid4().hex[:8]}", "OMP_NUM_THREADS": "1"})
    if model_dir is not None:
        env["FEQA_MODEL_DIR"] = str(model_dir)
    if broker == "redis":
        env["REDIS_URL"] = f"redis://{REDIS_HOST}:6379/{os.environ.get('FEQA_TEST_REDIS_DB', '11')}"
    elif broker != "sqlite":
        raise ValueError(f"broker must be 'sqlite' or 'redis', got {broker!r}")
    if database_url:
        env["DATABASE_URL"] = database_url
    env.update(extra or {})
    return env


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (a prefork worker's children too)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 10.0) -> None:
        if self.alive():
            self.kill(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                self.popen.wait(5)
        else:
            self.kill(signal.SIGKILL)   # children left behind by a dead parent


def start(name: str, cmd: list[str], env: dict, log_dir: Path) -> Proc:
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    fh = open(log, "ab")
    p = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    fh.close()
    return Proc(name, p, log)


def api_cmd(port: int) -> list[str]:
    # The deployed server (uvicorn with the request limits), as the container runs it.
    return [PYTHON, "-m", "service.api.server", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]


def worker_cmd(pool: str = "solo", concurrency: int = 1, name: str = "w") -> list[str]:
    return [PYTHON, "-m", "service.cli", "worker", "--pool", pool, "--concurrency", str(concurrency),
            "--name", f"{name}-{uuid.uuid4().hex[:6]}@%h", "--loglevel", "INFO"]


@dataclass
class Stack:
    base_url: str
    env: dict
    var_dir: Path
    procs: list[Proc] = field(default_factory=list)
    pool: str = "solo"

    @property
    def workers(self) -> list[Proc]:
        return [p for p in self.procs if p.name.startswith("worker")]

    def client(self, key: str | None = None, **kw) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=kw.pop("timeout", 30.0), **kw)

    def store(self):
        from worker.jobs.store import Store

        return Store(self.env.get("DATABASE_URL") or f"sqlite:///{self.var_dir / 'feqa.sqlite3'}")

    def migrate(self) -> None:
        from worker.jobs.db import migrate

        migrate(self.env.get("DATABASE_URL") or f"sqlite:///{self.var_dir / 'feqa.sqlite3'}")

    def create_key(self, tenant: str) -> str:
        return self.store().create_key(tenant)

    def add_worker(self, pool: str | None = None) -> Proc:
        n = len(self.workers)
        p = start(f"worker{n}", worker_cmd(pool or self.pool), self.env, self.var_dir / "logs")
        self.procs.append(p)
        return p

    def wait_ready(self, timeout: float = 90.0) -> None:
        wait_ready(self.base_url, timeout, self.procs)

    def wait_done(self, http: httpx.Client, assessment_id: str, timeout: float = 120.0) -> dict:
        """Poll until no item is queued or running; returns the final assessment JSON."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            body = http.get(f"/v1/assessments/{assessment_id}").json()
            if body.get("status") in ("succeeded", "failed", "partly_failed"):
                return body
            time.sleep(0.2)
        raise TimeoutError(f"assessment {assessment_id} not done in {timeout} s; last: {body}\n{self.logs()}")

    def logs(self, tail: int = 4000) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.log.read_text(errors='replace')[-tail:]}" for p in self.procs
                         if p.log.exists())

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()


def wait_ready(base_url: str, timeout: float = 90.0, procs: list[Proc] | None = None) -> None:
    deadline, last = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        for p in procs or []:
            if not p.alive() and p.name == "api":
                raise RuntimeError(f"{p.name} exited: {p.log.read_text(errors='replace')[-3000:]}")
        try:
            r = httpx.get(f"{base_url}/readyz", timeout=2)
            if r.status_code == 200:
                return
            last = r.text
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.25)
    logs = "\n".join(p.log.read_text(errors="replace")[-3000:] for p in procs or [] if p.log.exists())
    raise TimeoutError(f"{base_url} not ready after {timeout} s: {last}\n{logs}")


def wait_listening(base_url: str, timeout: float = 60.0, proc: Proc | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited: {proc.log.read_text(errors='replace')[-3000:]}")
        try:
            httpx.get(f"{base_url}/healthz", timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise TimeoutError(f"{base_url} did not answer in {timeout} s")


@contextlib.contextmanager
def api_server(env: dict, var_dir: Path, port: int | None = None) -> Iterator[tuple[str, Proc]]:
    port = port or free_port()
    proc = start("api", api_cmd(port), env, var_dir / "logs")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_listening(base, proc=proc)
        yield base, proc
    finally:
        proc.stop()


@contextlib.contextmanager
def feqa_stack(tmp: Path, *, model_dir: Path | None = None, broker: str = "sqlite",
               database_url: str | None = None, workers: int = 1, anonymous: bool = False, pool: str = "solo",
               env: dict | None = None, ready: bool = True) -> Iterator[Stack]:
    """API + `workers` Celery workers against one store/broker/storage; waits for /readyz when `ready`."""
    var_dir = Path(tmp) / "var"
    e = service_env(var_dir, model_dir=model_dir, broker=broker, database_url=database_url, anonymous=anonymous,
                    extra=env)
    port = free_port()
    stack = Stack(f"http://127.0.0.1:{port}", e, var_dir, pool=pool)
    try:
        # `feqa migrate`, as a deployment runs it before the API and the workers start.
        stack.migrate()
        stack.procs.append(start("api", api_cmd(port), e, var_dir / "logs"))
        for _ in range(workers):
            stack.add_worker()
        wait_listening(stack.base_url, proc=stack.procs[0])
        if ready:
            stack.wait_ready()
        yield stack
    finally:
        stack.stop()
        if broker == "redis":
            _drop_redis_queue(e)


@contextlib.contextmanager
def feqa_serve(tmp: Path, *, model_dir: Path | None = None, env: dict | None = None, workers: int = 1,
               ready: bool = True) -> Iterator[Stack]:
    """`feqa serve` as a user runs it on one machine: SQLite store, SQLite broker, local worker."""
    var_dir = Path(tmp) / "var"
    e = service_env(var_dir, model_dir=model_dir, anonymous=True, extra=env)
    port = free_port()
    stack = Stack(f"http://127.0.0.1:{port}", e, var_dir)
    cmd = [PYTHON, "-m", "service.cli", "serve", "--port", str(port), "--host", "127.0.0.1", "--workers", str(workers)]
    stack.procs.append(start("api", cmd, e, var_dir / "logs"))
    try:
        wait_listening(stack.base_url, proc=stack.procs[0], timeout=90)
        if ready:
            stack.wait_ready()
        yield stack
    finally:
        stack.stop()


def _drop_redis_queue(env: dict) -> None:
    try:
        import redis

        r = redis.Redis.from_url(env["REDIS_URL"])
        q = env["FEQA_QUEUE"]
        r.delete(q, f"{q}\x06\x161", f"{q}\x06\x162", f"{q}\x06\x163")
        r.close()
    except Exception:   # cleanup only
        pass


@contextlib.contextmanager
def postgres_url(base_url: str | None = None) -> Iterator[str]:
    """A fresh schema on DATABASE_URL_TEST, as a URL whose connections use it; dropped at exit."""
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    base_url = base_url or os.environ["DATABASE_URL_TEST"]
    schema = f"feqa_test_{uuid.uuid4().hex[:10]}"
    eng = sa.create_engine(base_url, poolclass=NullPool)   # no idle connection held while the test runs
    with eng.begin() as c:
        c.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base_url else "?"
    try:
        yield f"{base_url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with eng.begin() as c:
            c.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        eng.dispose()
