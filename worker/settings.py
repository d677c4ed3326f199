"""One settings object for the API, the workers and the CLI, read once from the environment.

Variables carry the prefix FEQA_ (FEQA_STORAGE_DIR, FEQA_SECRET_KEY, ...), except the two
that deployment tools name by convention: DATABASE_URL and REDIS_URL.

`get_settings()` is the process's one Settings, read on first use. A CLI whose options override
settings calls `configure(**options)` before anything reads them (it never writes os.environ), and
hands the same options to the processes it starts (`child_env`). Tests build their own
`Settings(...)` or set the environment of the subprocesses they start; nothing patches globals.
"""
from __future__ import annotations

import ipaddress
import os
import threading
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SECRET = "feqa-development-secret-change-me"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FEQA_", extra="ignore", populate_by_name=True)

    environment: str = "development"          # "production" refuses the default secret
    secret_key: str = DEFAULT_SECRET

    # Where things live. var/ is git-ignored and created on demand.
    var_dir: Path = ROOT / "var"
    database_url: str | None = Field(default=None, validation_alias=AliasChoices("DATABASE_URL", "FEQA_DATABASE_URL"))
    redis_url: str | None = Field(default=None, validation_alias=AliasChoices("REDIS_URL", "FEQA_REDIS_URL"))
    broker_url: str | None = None             # explicit override; else Redis when REDIS_URL is set, else SQLite
    storage_dir: Path | None = None
    # Object storage for API and workers on different hosts (FEQA_STORAGE_BACKEND=s3): an S3-compatible
    # bucket (AWS S3, MinIO, Ceph). Credentials from these or from the usual AWS variables/roles.
    storage_backend: Literal["local", "s3"] = "local"
    s3_bucket: str | None = None
    s3_prefix: str = ""                       # e.g. "feqa/": every key lives below it
    s3_endpoint_url: str | None = None        # MinIO / Ceph; None for AWS S3
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    s3_sse: str | None = None                 # server-side encryption: "AES256" or "aws:kms"
    s3_sse_kms_key_id: str | None = None
    s3_part_size: int = 8 * 1024 * 1024       # multipart upload part (S3's minimum is 5 MiB)
    model_dir: Path = ROOT / "models" / "demo"
    # Where workers on many hosts take their models from: a folder, or s3://bucket/prefix/ (worker/model_store.py);
    # None = model_dir.
    model_store: str | None = None

    # HTTP server (used by `feqa serve`; the app reads `host` to decide on anonymous use).
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str | None = None             # base for absolute links; relative links otherwise
    allow_anonymous: bool = True              # only honoured when `host` is a loopback address
    anonymous_tenant: str = "local"
    rate_limit_per_minute: int = 600          # per API key; 0 disables
    # Where the limits' buckets live: "auto" = in Redis when REDIS_URL is set (shared by every API process),
    # else in each API process; "local" = always per process; "redis" = shared, REDIS_URL required.
    rate_limit_backend: Literal["auto", "local", "redis"] = "auto"
    # HTTP server limits (docs/security.md, "Limits"): enforced by service.api.server and service.api.guard.
    max_header_bytes: int = 64 * 1024         # request line + headers; larger -> 400 before it is buffered
    max_headers: int = 100                    # more -> 431
    header_timeout_s: float = 10.0            # a request's headers must be complete within this
    keep_alive_timeout_s: float = 5.0         # an idle keep-alive connection is closed after this
    body_idle_timeout_s: float = 30.0         # no body bytes for this long -> 408
    body_timeout_s: float = 900.0             # the whole body must arrive within this -> else 408
    max_connections: int = 256                # concurrent connections per API process; more -> 503
    sign_in_per_minute: int = 10              # POST /v1/session attempts per client address

    # Uploads.
    max_upload_bytes: int = 200 * 1024 * 1024
    max_duration_s: float = 120.0
    max_items: int = 10
    partial_upload_max_age_s: float = 600.0   # a *.part file untouched this long is a dead upload
    probe_memory_mb: int = 768                # address space one upload probe may use (its own process)
    probe_timeout_s: float = 20.0             # wall-clock limit of one probe

    # Queue and workers.
    queue: str = "feqa.gpu"
    visibility_timeout_s: int = 3600
    task_soft_time_limit_s: int = 900
    task_time_limit_s: int = 1200
    task_max_retries: int = 2
    worker_max_tasks_per_child: int = 200
    heartbeat_interval_s: float = 10.0
    heartbeat_max_age_s: float = 60.0
    # One model version per assessment: an item pinned to a model no live worker serves waits this long for
    # one (a worker restarting, a rollout in progress), then fails with model_version_gone.
    model_pin_wait_s: float = 300.0
    providers: list[str] | None = None        # onnxruntime providers; None = best available
    cuda_device_id: int | None = None         # this worker process's GPU (CUDA provider device_id)
    # Dynamic batching across the tasks of one worker process (`feqa worker --pool threads --concurrency N`):
    # windows wait at most this long for others to share one onnxruntime call; 0 = off (one call per task).
    score_batch_wait_ms: float = 0.0
    score_max_batch: int = 32
    intra_op_threads: int = 1
    # One scorer process per host (`feqa scorer`, worker/score_server.py): when set, the worker processes score
    # through this Unix socket instead of loading the models themselves, and the scorer batches across them.
    scorer_socket: Path | None = None

    # Data protection.
    video_retention_hours: float = 0.0        # uploaded videos are deleted this long after scoring
    result_retention_days: float = 365.0      # assessments (results, pictures) purged after this
    fhir_code_system: str = "https://feqa.invalid/fhir/CodeSystem/facial-expression"

    @model_validator(mode="after")
    def _refuse_default_secret(self) -> Settings:
        if self.environment != "development" and self.secret_key == DEFAULT_SECRET:
            raise ValueError("FEQA_SECRET_KEY must be set outside development (FEQA_ENVIRONMENT="
                             f"{self.environment!r}); generate one with: python -c 'import secrets; "
                             "print(secrets.token_urlsafe(32))'")
        if self.rate_limit_backend == "redis" and not self.redis_url:
            raise ValueError("FEQA_RATE_LIMIT_BACKEND=redis needs REDIS_URL (the shared limits live in Redis)")
        if self.storage_backend == "s3" and not self.s3_bucket:
            raise ValueError("FEQA_STORAGE_BACKEND=s3 needs FEQA_S3_BUCKET")
        if self.s3_part_size < 5 * 1024 * 1024:
            raise ValueError("FEQA_S3_PART_SIZE must be at least 5 MiB (S3's smallest multipart part)")
        if self.task_time_limit_s >= self.visibility_timeout_s:
            raise ValueError("task time limit must stay below the broker visibility timeout")
        return self

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.var_dir / 'feqa.sqlite3'}"

    @property
    def celery_broker_url(self) -> str:
        if self.broker_url:
            return self.broker_url
        if self.redis_url:
            return self.redis_url
        # No server on a single machine: the broker is a SQLite file beside the job store.
        # (worker.celery_app registers the "feqa-sqlite" transport: kombu's SQLAlchemy one, polled faster,
        # and creates var_dir when it builds the app.)
        return f"feqa-sqlite+sqlite:///{self.var_dir / 'broker.sqlite3'}"

    @property
    def storage_root(self) -> Path:
        return self.storage_dir or self.var_dir / "storage"

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @property
    def anonymous_allowed(self) -> bool:
        return self.allow_anonymous and self.loopback


_current: Settings | None = None
_lock = threading.Lock()


def get_settings() -> Settings:
    """This process's settings: read from the environment on first use, then the same object."""
    global _current
    with _lock:
        if _current is None:
            _current = Settings()
        return _current


def configure(**overrides: Any) -> Settings:
    """Make the environment's settings with `overrides` on top (None values ignored) this process's
    settings; a CLI calls it with its options before anything reads the settings."""
    global _current
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(given) - set(Settings.model_fields)
    if unknown:
        raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
    with _lock:
        _current = Settings(**given)
        return _current


def child_env(overrides: dict[str, Any], base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a process this one starts, carrying `overrides` (None values ignored) as
    the variables Settings reads: how configured options reach a worker or API subprocess."""
    env = dict(os.environ if base is None else base)
    for name, value in overrides.items():
        if value is None:
            continue
        field = Settings.model_fields[name]
        aliases = getattr(field.validation_alias, "choices", None)
        env[str(aliases[0]) if aliases else f"FEQA_{name.upper()}"] = (
            value if isinstance(value, str) else _env_value(value))
    return env


def _env_value(value: Any) -> str:
    import json

    if isinstance(value, Path | int | float) and not isinstance(value, bool):
        return str(value)
    return json.dumps(value)
