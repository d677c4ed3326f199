"""Database tables (SQLAlchemy 2) and the engine.

SQLite under var/ by default; PostgreSQL when DATABASE_URL says so. The schema is created
by the alembic migrations in worker/jobs/migrations, run only by `migrate()` (`feqa migrate`, which
`feqa serve` runs at start and the compose deployment runs before the API and workers start).
"""
from __future__ import annotations

import contextlib
import fcntl
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)     # public key id, part of the key
    tenant: Mapped[str] = mapped_column(String(128), index=True)
    salt: Mapped[str] = mapped_column(String(64))
    digest: Mapped[str] = mapped_column(String(64))                    # sha256(salt + secret), hex
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Assessment(Base):
    __tablename__ = "assessments"
    __table_args__ = (UniqueConstraint("tenant", "idempotency_key", name="uq_assessment_idempotency"),
                      # a patient's history, newest first (Store.patient_assessments; migration 0004)
                      Index("ix_assessments_tenant_patient_created", "tenant", "patient_ref", "created_at"))
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128), index=True)
    protocol: Mapped[str | None] = mapped_column(String(32), nullable=True)
    patient_ref: Mapped[str | None] = mapped_column(String(256), nullable=True)  # opaque; never logged
    idempotency_key: Mapped[str | None] = mapped_column(String(256), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The model set the assessment is scored with, pinned by the first worker that claims one of its items
    # (Store.claim_item): expression -> {name, version, sha256}; models_rev counts its changes (migration 0005).
    models: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    models_rev: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Item(Base):
    __tablename__ = "items"
    __table_args__ = (UniqueConstraint("assessment_id", "idx", name="uq_item_index"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    assessment_id: Mapped[str] = mapped_column(ForeignKey("assessments.id", ondelete="CASCADE"), index=True)
    idx: Mapped[int] = mapped_column(Integer)
    expression: Mapped[str] = mapped_column(String(64))
    video_key: Mapped[str | None] = mapped_column(String(256), nullable=True)
    video_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    size_bytes: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    stage: Mapped[str] = mapped_column(String(16), default="queued")
    percent: Mapped[float] = mapped_column(Float, default=0.0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(128), nullable=True)
    result: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_details: Mapped[dict | None] = mapped_column(JSON, nullable=True)   # e.g. the quality report
    artifacts: Mapped[dict | None] = mapped_column(JSON, nullable=True)   # name -> storage key
    queued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    video_deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # since when no live worker serves the item's pinned model (None while one does; migration 0005)
    pin_wait_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class StageDuration(Base):
    """One row per finished stage of an item: the source of the per-stage duration metrics."""
    __tablename__ = "stage_durations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    item_id: Mapped[int] = mapped_column(Integer, index=True)
    stage: Mapped[str] = mapped_column(String(16))
    seconds: Mapped[float] = mapped_column(Float)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuditEvent(Base):
    """Append-only (database triggers refuse UPDATE and DELETE). Holds no patient data."""
    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    tenant: Mapped[str] = mapped_column(String(128))
    actor: Mapped[str] = mapped_column(String(64))          # API key id, "anonymous" or "system"
    action: Mapped[str] = mapped_column(String(32))
    assessment_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    detail: Mapped[dict | None] = mapped_column(JSON, nullable=True)


class WebSession(Base):
    """A browser session of the web form: the cookie holds a random id; only its SHA-256 is stored."""
    __tablename__ = "web_sessions"
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32), index=True)
    tenant: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class WorkerHeartbeat(Base):
    __tablename__ = "worker_heartbeats"
    worker_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    models: Mapped[list | None] = mapped_column(JSON, nullable=True)   # [{name, version, expression, sha256}]
    warmed: Mapped[bool] = mapped_column(Boolean, default=False)
    detail: Mapped[dict | None] = mapped_column(JSON, nullable=True)


_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def sqlite_pragmas(dbapi_conn: Any, _record: object = None) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets the API read while a worker writes; busy_timeout waits instead of failing on a lock.
    cur.execute("PRAGMA journal_mode=WAL")
    # In WAL mode NORMAL keeps the database consistent and loses at most the last commits on a power
    # cut (not on a process crash); FULL would fsync every audit row of every status read.
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    # Deleted rows (patient references) are overwritten with zeros, not left in free pages.
    cur.execute("PRAGMA secure_delete=ON")
    cur.close()


def get_engine(url: str) -> Engine:
    with _lock:
        eng = _engines.get(url)
        if eng is None:
            if url.startswith("sqlite"):
                path = url.split("///", 1)[-1]
                if path and path != ":memory:":
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                # hide_parameters: an error's text never quotes the statement's values (patient references)
                eng = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10},
                                    hide_parameters=True)
                event.listen(eng, "connect", sqlite_pragmas)
            else:
                eng = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20, hide_parameters=True)
            _engines[url] = eng
        return eng


def session_factory(url: str) -> sessionmaker:
    return sessionmaker(bind=get_engine(url), expire_on_commit=False)


@contextlib.contextmanager
def _migration_lock(engine: Engine, url: str) -> Iterator[None]:
    """API and workers may start together: only one runs the migrations at a time."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(727274)"))
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(727274)"))
                conn.commit()
    elif url.startswith("sqlite:///"):
        lock_path = Path(url.split("///", 1)[1] + ".migrate.lock")
        with open(lock_path, "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
    else:
        yield


def _alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def schema_revision(url: str) -> tuple[str | None, str]:
    """(the database's alembic revision or None, the newest revision)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config(url)).get_current_head()
    with get_engine(url).connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    return current, str(head)


def migrate(url: str) -> None:
    """Bring the schema to the newest alembic revision."""
    from alembic import command

    engine = get_engine(url)
    cfg = _alembic_config(url)
    with _migration_lock(engine, url):
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
