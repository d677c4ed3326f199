"""The job store: every read and write of keys, assessments, items, audit events and heartbeats.

The API and the workers share it; it imports no web framework. Item state changes are
conditional UPDATEs, so a task that Celery delivers twice (worker crash, acks_late) cannot
write a second result: `claim_item` and `finish_item` only act on an item still in flight.

One model version per assessment: the first worker that claims an item of an assessment pins the
assessment's model set (per expression: name, version, sha256) to the models it has loaded; `claim_item`
then refuses (PinMismatch) a worker whose model for the item's expression is another one, and
`wait_for_pinned` keeps the item queued for a worker that has it, or fails it (`model_version_gone`) once
no live worker has served the pinned model for a bounded time.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast, overload

from sqlalchemy import CursorResult, Result, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from worker.jobs.db import (
    ApiKey,
    Assessment,
    AuditEvent,
    Item,
    StageDuration,
    WebSession,
    WorkerHeartbeat,
    session_factory,
    utcnow,
)
from worker.jobs.keys import assessment_prefixes
from worker.jobs.status import IN_FLIGHT, ItemStatus, JobStatus, job_status

KEY_PREFIX = "feqa"
log = logging.getLogger("feqa.store")


@dataclass(frozen=True)
class NewItem:
    expression: str
    video_key: str
    video_sha256: str
    size_bytes: int


@dataclass(frozen=True)
class Principal:
    tenant: str
    key_id: str          # "anonymous" for loopback use without a key


def hash_secret(salt: str, secret: str) -> str:
    return hashlib.sha256((salt + secret).encode()).hexdigest()


@overload
def aware(dt: datetime) -> datetime: ...
@overload
def aware(dt: None) -> None: ...


def aware(dt: datetime | None) -> datetime | None:
    """SQLite hands datetimes back naive; they were written in UTC."""
    if dt is not None and dt.tzinfo is None:
        from datetime import UTC
        return dt.replace(tzinfo=UTC)
    return dt


def assessment_status(items: list[Item]) -> JobStatus:
    return job_status([it.status for it in items])


PIN_FIELDS = ("name", "version", "sha256")
VERSION_GONE = "model_version_gone"


class PinMismatch(Exception):
    """claim_item refused the item: its assessment is pinned to another model for the item's expression
    (or the worker has no model for it). Nothing was written; the worker leaves the item (wait_for_pinned)."""

    def __init__(self, item_id: int, expression: str, pinned: dict) -> None:
        super().__init__(f"item {item_id}: {expression} is pinned to version {pinned.get('version')}")
        self.item_id, self.expression, self.pinned = item_id, expression, pinned


def model_facts(m: dict) -> dict:
    """What a pin keeps of a model (a heartbeat's or a result's `model`): name, version, sha256."""
    return {k: m.get(k) for k in PIN_FIELDS}


def changed(res: Result[Any]) -> int:
    """The rows an UPDATE changed (Session.execute is typed for SELECTs)."""
    return cast(CursorResult[Any], res).rowcount


class Store:
    def __init__(self, url: str) -> None:
        """Opens no connection and changes no schema (that is `feqa migrate`, worker.jobs.db.migrate)."""
        self.url = url
        self._sessions = session_factory(url)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as s, s.begin():
            yield s

    @staticmethod
    def _visible(s: Session, tenant: str, assessment_id: str) -> Assessment | None:
        """The assessment if it exists, belongs to `tenant` and is not deleted: the one check that keeps
        one tenant from another's jobs."""
        a = s.get(Assessment, assessment_id)
        if a is None or a.tenant != tenant or a.deleted_at is not None:
            return None
        return a

    # --- API keys -----------------------------------------------------------------------
    def create_key(self, tenant: str) -> str:
        """Store a new key for `tenant` and return it; only its salted hash is kept."""
        key_id, secret, salt = secrets.token_hex(8), secrets.token_urlsafe(32), secrets.token_hex(16)
        with self.session() as s:
            s.add(ApiKey(id=key_id, tenant=tenant, salt=salt, digest=hash_secret(salt, secret)))
        return f"{KEY_PREFIX}_{key_id}_{secret}"

    def verify_key(self, key: str) -> Principal | None:
        parts = key.split("_", 2)
        if len(parts) != 3 or parts[0] != KEY_PREFIX:
            return None
        with self.session() as s:
            row = s.get(ApiKey, parts[1])
            if row is None or row.revoked_at is not None:
                return None
            if not hmac.compare_digest(row.digest, hash_secret(row.salt, parts[2])):
                return None
            return Principal(tenant=row.tenant, key_id=row.id)

    def revoke_key(self, key_id: str) -> bool:
        with self.session() as s:
            res = s.execute(update(ApiKey).where(ApiKey.id == key_id).values(revoked_at=utcnow()))
            return changed(res) == 1

    # --- web sessions (the web form's cookie) ----------------------------------------------
    @staticmethod
    def _session_digest(session_id: str) -> str:
        return hashlib.sha256(session_id.encode()).hexdigest()

    def create_session(self, principal: Principal, max_age_s: float) -> str:
        """A new random session id for `principal` (returned once; only its SHA-256 is stored)."""
        session_id = secrets.token_urlsafe(32)
        with self.session() as s:
            s.add(WebSession(digest=self._session_digest(session_id), key_id=principal.key_id,
                             tenant=principal.tenant, expires_at=utcnow() + timedelta(seconds=max_age_s)))
        return session_id

    def verify_session(self, session_id: str) -> Principal | None:
        """The principal of a live session: not signed out, not expired, its API key not revoked."""
        if not session_id or len(session_id) > 128:
            return None
        with self.session() as s:
            row = s.get(WebSession, self._session_digest(session_id))
            if row is None or row.revoked_at is not None or aware(row.expires_at) <= utcnow():
                return None
            key = s.get(ApiKey, row.key_id)
            if key is None or key.revoked_at is not None:
                return None
            return Principal(tenant=row.tenant, key_id=row.key_id)

    def revoke_session(self, session_id: str) -> bool:
        with self.session() as s:
            res = s.execute(update(WebSession).where(WebSession.digest == self._session_digest(session_id),
                                                     WebSession.revoked_at.is_(None)).values(revoked_at=utcnow()))
            return changed(res) == 1

    # --- assessments --------------------------------------------------------------------
    @staticmethod
    def new_id() -> str:
        return uuid.uuid4().hex

    def find_idempotent(self, tenant: str, idempotency_key: str) -> str | None:
        with self.session() as s:
            return s.scalar(select(Assessment.id).where(
                Assessment.tenant == tenant, Assessment.idempotency_key == idempotency_key,
                Assessment.deleted_at.is_(None)))

    def create_assessment(self, assessment_id: str, tenant: str, items: list[NewItem], *,
                          protocol: str | None = None, patient_ref: str | None = None,
                          idempotency_key: str | None = None) -> tuple[str, bool]:
        """Insert the assessment and its items; returns (id, created). A concurrent request with
        the same idempotency key loses the unique-constraint race and gets the winner's id."""
        try:
            with self.session() as s:
                s.add(Assessment(id=assessment_id, tenant=tenant, protocol=protocol, patient_ref=patient_ref,
                                 idempotency_key=idempotency_key))
                s.flush()
                for i, it in enumerate(items):
                    s.add(Item(assessment_id=assessment_id, idx=i, expression=it.expression,
                               video_key=it.video_key, video_sha256=it.video_sha256, size_bytes=it.size_bytes,
                               status=ItemStatus.QUEUED, stage="queued", percent=0.0, attempts=0))
            return assessment_id, True
        except IntegrityError:
            if idempotency_key is None:
                raise
            existing = self.find_idempotent(tenant, idempotency_key)
            if existing is None:
                raise
            return existing, False

    def get_assessment(self, tenant: str, assessment_id: str) -> tuple[Assessment, list[Item]] | None:
        with self.session() as s:
            a = self._visible(s, tenant, assessment_id)
            if a is None:
                return None
            items = list(s.scalars(select(Item).where(Item.assessment_id == a.id).order_by(Item.idx)))
            return a, items

    def read_audited(self, tenant: str, assessment_id: str, actor: str,
                     action: str = "read") -> tuple[Assessment, list[Item]] | None:
        """`get_assessment` and its audit row in one transaction (the polling path)."""
        with self.session() as s:
            a = self._visible(s, tenant, assessment_id)
            if a is None:
                return None
            items = list(s.scalars(select(Item).where(Item.assessment_id == a.id).order_by(Item.idx)))
            s.add(AuditEvent(tenant=tenant, actor=actor, action=action, assessment_id=a.id))
            return a, items

    def patient_assessments(self, tenant: str, patient_ref: str, actor: str, *, limit: int = 20,
                            before: tuple[datetime, str] | None = None, since: datetime | None = None,
                            ) -> tuple[list[tuple[Assessment, list[Item]]], tuple[datetime, str] | None]:
        """One patient's assessments in this tenant, newest first (deleted and expired ones are gone: deletion
        scrubs the patient reference), and the audit row of the read, in one transaction. `before` is the
        (created_at, id) of the last assessment of the previous page; returns the page and the next `before`."""
        q = select(Assessment).where(Assessment.tenant == tenant, Assessment.patient_ref == patient_ref,
                                     Assessment.deleted_at.is_(None))
        if since is not None:
            q = q.where(Assessment.created_at >= since)
        if before is not None:
            t, aid = before
            q = q.where((Assessment.created_at < t) | ((Assessment.created_at == t) & (Assessment.id < aid)))
        q = q.order_by(Assessment.created_at.desc(), Assessment.id.desc()).limit(limit + 1)
        with self.session() as s:
            rows = list(s.scalars(q))
            more = len(rows) > limit
            rows = rows[:limit]
            items: dict[str, list[Item]] = {a.id: [] for a in rows}
            if rows:
                for it in s.scalars(select(Item).where(Item.assessment_id.in_(list(items)))
                                    .order_by(Item.assessment_id, Item.idx)):
                    items[it.assessment_id].append(it)
            # no patient data in the audit trail: the ids read, not the reference
            s.add(AuditEvent(tenant=tenant, actor=actor, action="patient_history", assessment_id=None,
                             detail={"assessments": [a.id for a in rows], "page_size": limit}))
            nxt = (rows[-1].created_at, rows[-1].id) if more and rows else None
            return [(a, items[a.id]) for a in rows], nxt

    def item_ids(self, assessment_id: str, status: str | None = None) -> list[int]:
        q = select(Item.id).where(Item.assessment_id == assessment_id)
        if status:
            q = q.where(Item.status == status)
        with self.session() as s:
            return list(s.scalars(q.order_by(Item.idx)))

    def get_item(self, item_id: int) -> Item | None:
        with self.session() as s:
            return s.get(Item, item_id)

    def retry_failed(self, tenant: str, assessment_id: str) -> list[int]:
        """Put the failed items back in the queue; returns their ids (the caller enqueues them)."""
        with self.session() as s:
            a = self._visible(s, tenant, assessment_id)
            if a is None:
                return []
            ids = list(s.scalars(select(Item.id).where(Item.assessment_id == assessment_id,
                                                       Item.status == ItemStatus.FAILED, Item.video_key.is_not(None),
                                                       Item.video_deleted_at.is_(None))))
            if ids:
                s.execute(update(Item).where(Item.id.in_(ids)).values(
                    status=ItemStatus.QUEUED, stage="queued", percent=0.0, attempts=0, error_code=None,
                    error_message=None, error_details=None, result=None, queued_at=utcnow(), finished_at=None,
                    pin_wait_since=None))
                statuses = set(s.scalars(select(Item.status).where(Item.assessment_id == assessment_id)))
                if a.models and not statuses & {ItemStatus.SUCCEEDED, ItemStatus.RUNNING}:
                    # nothing of it was scored or is being scored: the retry may take the versions served now
                    a.models, a.models_rev = None, a.models_rev + 1
                a.updated_at = utcnow()
            return ids

    def delete_assessment(self, tenant: str, assessment_id: str) -> list[str] | None:
        """Mark deleted, drop results and patient reference; returns the storage prefixes to remove."""
        with self.session() as s:
            a = self._visible(s, tenant, assessment_id)
            if a is None:
                return None
            self._scrub(s, a)
        self.checkpoint()
        return assessment_prefixes(assessment_id)

    def checkpoint(self) -> None:
        """SQLite: copy the write-ahead log into the database and empty it, so that a deleted patient
        reference (zeroed in the database by secure_delete) does not stay readable in the WAL file."""
        if not self.url.startswith("sqlite"):
            return
        from sqlalchemy import text

        try:
            with self._sessions() as s:
                s.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
        except Exception as exc:   # a reader holding the log: the next checkpoint gets it
            log.warning("WAL checkpoint after delete failed (%s)", type(exc).__name__)

    @staticmethod
    def _scrub(s: Session, a: Assessment) -> None:
        a.deleted_at = a.updated_at = utcnow()
        a.patient_ref = a.idempotency_key = None   # the key may be used again for a new upload
        s.execute(update(Item).where(Item.assessment_id == a.id).values(
            status=ItemStatus.FAILED, stage="done", result=None, artifacts=None, video_key=None, video_sha256=None,
            error_code="deleted", error_message="assessment deleted", error_details=None,
            video_deleted_at=utcnow()))

    # --- worker side ---------------------------------------------------------------------
    def claim_item(self, item_id: int, worker: str, max_attempts: int,
                   alive: Callable[[str], bool] = lambda _w: False, models: list[dict] | None = None) -> Item | None:
        """Mark the item running for `worker`. None when it is finished (a redelivered task) or when
        another live worker holds it. An item found running under a dead worker is taken over;
        after `max_attempts` starts it is failed instead, so a video that always kills its worker
        cannot loop forever.

        `models` (the worker's loaded models, as in its heartbeat: expression, name, version, sha256): the
        assessment's model set is pinned to them if it is not yet (`pin_models`), and the claim is refused with
        PinMismatch when the item's expression is pinned to a model whose sha256 is not the worker's. Without
        `models` no pin is read or written (tests, tools)."""
        refused: PinMismatch | None = None
        with self.session() as s:
            it = s.get(Item, item_id, with_for_update=True)
            if it is None or it.status not in IN_FLIGHT or it.video_key is None:
                return None
            if it.status == ItemStatus.RUNNING and it.worker and it.worker != worker and alive(it.worker):
                return None
            if models is not None:
                pinned = self._pin(s, it.assessment_id, models).get(it.expression)
                mine = {m.get("expression"): m for m in models}.get(it.expression)
                if pinned is not None and (mine is None or mine.get("sha256") != pinned.get("sha256")):
                    refused = PinMismatch(item_id, it.expression, pinned)
            if refused is None:
                if it.attempts >= max_attempts:
                    self._fail(s, it, "worker_lost", f"the worker stopped {it.attempts} times on this video")
                    return None
                res = s.execute(update(Item).where(Item.id == item_id, Item.status.in_(IN_FLIGHT),
                                                   Item.attempts == it.attempts).values(
                    status=ItemStatus.RUNNING, stage="decoding", percent=0.0, attempts=it.attempts + 1,
                    worker=worker, started_at=utcnow(), pin_wait_since=None))
                if changed(res) != 1:
                    return None
                s.refresh(it)
                return it
        assert refused is not None
        raise refused

    def pin_models(self, assessment_id: str, models: list[dict]) -> dict:
        """Pin the assessment's model set (expressions not pinned yet) to `models`; returns the pin."""
        with self.session() as s:
            return self._pin(s, assessment_id, models)

    @staticmethod
    def _pin(s: Session, assessment_id: str, models: list[dict]) -> dict:
        """The assessment's pinned models, completed first for every expression of its items not pinned yet:
        from a result already written for that expression (an assessment started before pinning existed), else
        from `models`. A conditional UPDATE on models_rev: of two workers pinning at once one wins, and the
        other reads the winner's pin (PostgreSQL also locks the row; SQLite's reads run outside the write lock)."""
        offered = {m.get("expression"): model_facts(m) for m in models if m.get("expression")}
        for _ in range(5):
            # the committed row (populate_existing: not the copy this session may hold), locked on PostgreSQL
            a = s.scalar(select(Assessment).where(Assessment.id == assessment_id).with_for_update()
                         .execution_options(populate_existing=True))
            if a is None:
                return {}
            pin = dict(a.models or {})
            want = dict(pin)
            rows = s.execute(select(Item.expression, Item.result).where(Item.assessment_id == assessment_id)).all()
            for expression, result in rows:   # results first: the version that already scored an item
                made_by = result.get("model") if isinstance(result, dict) else None
                if expression not in want and isinstance(made_by, dict) and made_by.get("sha256"):
                    want[expression] = model_facts(made_by)
            for expression, _ in rows:
                if expression not in want and expression in offered:
                    want[expression] = offered[expression]
            if want == pin:
                return pin
            res = s.execute(update(Assessment).where(Assessment.id == assessment_id,
                                                     Assessment.models_rev == a.models_rev)
                            .values(models=want, models_rev=a.models_rev + 1))
            if changed(res) == 1:
                return want
        raise RuntimeError(f"assessment {assessment_id}: the model pin kept changing")

    def wait_for_pinned(self, item_id: int, expression: str, pinned: dict, max_age_s: float,
                        max_wait_s: float, queue: str | None = None) -> str:
        """A worker without the item's pinned model leaves it; returns what became of the item:
        "served": it stays queued, and a live worker (heartbeat younger than `max_age_s`) has the pinned model;
        "waiting": it stays queued, no live worker has the model, but not yet for `max_wait_s` (a worker restarting);
        (for both the caller sends the task again) "failed": no live worker has served the model for `max_wait_s`:
        failed with `model_version_gone`; "done": no longer queued (finished, or claimed meanwhile).
        With `queue`, only workers that take tasks from that queue count (their heartbeat's `queue`)."""
        sha = pinned.get("sha256")
        served = any(m.get("expression") == expression and m.get("sha256") == sha
                     for hb in self.ready_workers(max_age_s)
                     if queue is None or (hb.detail or {}).get("queue", queue) == queue
                     for m in hb.models or [])
        with self.session() as s:
            it = s.get(Item, item_id, with_for_update=True)
            if it is None or it.status != ItemStatus.QUEUED:
                # running: claimed meanwhile, or under a dead worker (requeue_orphans puts that one back)
                return "done"
            now = utcnow()
            if served or it.pin_wait_since is None or (now - aware(it.pin_wait_since)).total_seconds() < max_wait_s:
                it.pin_wait_since = None if served else (it.pin_wait_since or now)
                it.queued_at = now   # waiting on purpose, not a lost message (requeue_orphans)
                return "served" if served else "waiting"
            waited = (now - aware(it.pin_wait_since)).total_seconds()
            self._fail(s, it, VERSION_GONE,
                       f"this assessment is scored with {expression} model {pinned.get('name')} version "
                       f"{pinned.get('version')}, and no worker has served that version for {waited:.0f} s",
                       {"expression": expression, "pinned": model_facts(pinned)})
            return "failed"

    def release_item(self, item_id: int, worker: str) -> None:
        """Back to the queue before a retry, so whichever worker process gets it may claim it."""
        with self.session() as s:
            s.execute(update(Item).where(Item.id == item_id, Item.status == ItemStatus.RUNNING,
                                   Item.worker == worker)
                      .values(status=ItemStatus.QUEUED, stage="queued", percent=0.0))

    def requeue_orphans(self, alive: Callable[[str], bool], older_than_s: float) -> list[int]:
        """Items running under a dead worker, or queued for longer than `older_than_s` (a lost
        message): put back to queued and returned, for the caller to enqueue again."""
        since = utcnow() - timedelta(seconds=older_than_s)
        with self.session() as s:
            rows = s.execute(select(Item.id, Item.status, Item.worker, Item.attempts, Item.queued_at).where(
                Item.status.in_(IN_FLIGHT), Item.video_key.is_not(None))).all()
        found = [(i, status, w, n, at) for i, status, w, n, at in rows
                 if (status == ItemStatus.RUNNING and not (w and alive(w)))
                 or (status == ItemStatus.QUEUED and aware(at) < since)]
        ids = []
        for i, status, w, n, at in found:
            # Only if the item is still as seen: a live worker may have claimed it meanwhile (found by the
            # fault tests: requeueing it anyway discarded that worker's result and cost an attempt).
            with self.session() as s:
                res = s.execute(update(Item).where(
                    Item.id == i, Item.status == status, Item.attempts == n,
                    Item.worker.is_(None) if w is None else Item.worker == w,
                    Item.queued_at == at).values(status=ItemStatus.QUEUED, stage="queued", percent=0.0,
                                                 queued_at=utcnow()))
                if changed(res) == 1:
                    ids.append(i)
        return ids

    def set_progress(self, item_id: int, stage: str, percent: float, worker: str | None = None) -> bool:
        """Move the item's progress; with `worker`, only while that worker holds it (like finish_item: a worker
        cut off from the network that comes back cannot move the bar of the one now scoring it)."""
        held = [Item.worker == worker] if worker is not None else []
        with self.session() as s:
            res = s.execute(update(Item).where(Item.id == item_id, Item.status == ItemStatus.RUNNING, *held).values(
                stage=stage, percent=round(float(percent), 1)))
            return changed(res) == 1

    def finish_item(self, item_id: int, result: dict, artifacts: dict[str, str],
                    durations: dict[str, float], worker: str | None = None) -> bool:
        """Write the result once: a second call for the same item changes nothing and returns False. With
        `worker`, only while that worker holds the item (a worker cut off from the network that comes back after
        its item was taken over never overwrites the one now scoring it)."""
        held = [Item.worker == worker] if worker is not None else []
        with self.session() as s:
            mine = update(Item).where(Item.id == item_id, Item.status == ItemStatus.RUNNING, *held)
            res = s.execute(mine.values(
                status=ItemStatus.SUCCEEDED, stage="done", percent=100.0, result=result, artifacts=artifacts,
                finished_at=utcnow(), error_code=None, error_message=None, error_details=None))
            if changed(res) != 1:
                return False
            s.add_all([StageDuration(item_id=item_id, stage=k, seconds=float(v)) for k, v in durations.items()])
            self._touch(s, item_id)
            return True

    def set_artifacts(self, item_id: int, artifacts: dict[str, str], durations: dict[str, float]) -> bool:
        """Pictures drawn after the result was published; False when the item is gone meanwhile."""
        with self.session() as s:
            res = s.execute(update(Item).where(Item.id == item_id, Item.status == ItemStatus.SUCCEEDED)
                            .values(artifacts=artifacts))
            if changed(res) != 1:
                return False
            s.add_all([StageDuration(item_id=item_id, stage=k, seconds=float(v)) for k, v in durations.items()])
            return True

    def fail_item(self, item_id: int, code: str, message: str, details: dict | None = None) -> bool:
        with self.session() as s:
            it = s.get(Item, item_id, with_for_update=True)
            if it is None or it.status not in IN_FLIGHT:
                return False
            self._fail(s, it, code, message, details)
            return True

    @staticmethod
    def _fail(s: Session, it: Item, code: str, message: str, details: dict | None = None) -> None:
        it.status, it.stage, it.error_code, it.error_message = ItemStatus.FAILED, "done", code, message[:2000]
        it.error_details = details or None
        it.finished_at = utcnow()
        Store._touch(s, it.id)

    @staticmethod
    def _touch(s: Session, item_id: int) -> None:
        aid = s.scalar(select(Item.assessment_id).where(Item.id == item_id))
        s.execute(update(Assessment).where(Assessment.id == aid).values(updated_at=utcnow()))

    def mark_video_deleted(self, item_id: int) -> None:
        with self.session() as s:
            s.execute(update(Item).where(Item.id == item_id).values(video_deleted_at=utcnow()))

    def heartbeat(self, worker_id: str, models: list[dict], warmed: bool, detail: dict | None = None) -> None:
        with self.session() as s:
            row = s.get(WorkerHeartbeat, worker_id)
            if row is None:
                s.add(WorkerHeartbeat(worker_id=worker_id, at=utcnow(), models=models, warmed=warmed,
                                      detail=detail))
            else:
                row.at, row.models, row.warmed, row.detail = utcnow(), models, warmed, detail

    def heartbeat_age(self, worker_id: str) -> float:
        with self.session() as s:
            at = s.scalar(select(WorkerHeartbeat.at).where(WorkerHeartbeat.worker_id == worker_id))
        return float("inf") if at is None else (utcnow() - aware(at)).total_seconds()

    def drop_heartbeat(self, worker_id: str) -> None:
        with self.session() as s:
            row = s.get(WorkerHeartbeat, worker_id)
            if row is not None:
                s.delete(row)

    def ready_workers(self, max_age_s: float) -> list[WorkerHeartbeat]:
        since = utcnow() - timedelta(seconds=max_age_s)
        with self.session() as s:
            rows = s.scalars(select(WorkerHeartbeat).where(WorkerHeartbeat.warmed.is_(True)))
            return [r for r in rows if aware(r.at) >= since and r.models]

    # --- audit, metrics, housekeeping ------------------------------------------------------
    def audit(self, tenant: str, actor: str, action: str, assessment_id: str | None = None,
              detail: dict | None = None) -> None:
        with self.session() as s:
            s.add(AuditEvent(tenant=tenant, actor=actor, action=action, assessment_id=assessment_id,
                             detail=detail))

    def audit_events(self, assessment_id: str) -> list[AuditEvent]:
        with self.session() as s:
            return list(s.scalars(select(AuditEvent).where(AuditEvent.assessment_id == assessment_id)
                                  .order_by(AuditEvent.id)))

    def queue_depth(self) -> dict[str, int]:
        with self.session() as s:
            rows = s.execute(select(Item.status, func.count()).where(Item.status.in_(IN_FLIGHT))
                             .group_by(Item.status))
            return {status: n for status, n in rows}

    def stage_stats(self) -> list[tuple[str, int, float]]:
        with self.session() as s:
            rows = s.execute(select(StageDuration.stage, func.count(), func.sum(StageDuration.seconds))
                             .group_by(StageDuration.stage))
            return [(stage, int(n), float(total or 0.0)) for stage, n, total in rows]

    def expired_videos(self, retention_h: float) -> list[tuple[int, str]]:
        """Videos of scored items past retention. A failed item keeps its video for a retry until
        its assessment expires or is deleted."""
        since = utcnow() - timedelta(hours=retention_h)
        with self.session() as s:
            rows = s.execute(select(Item.id, Item.video_key).where(
                Item.status == ItemStatus.SUCCEEDED, Item.video_key.is_not(None), Item.video_deleted_at.is_(None),
                Item.finished_at <= since))
            return [(i, k) for i, k in rows if k is not None]

    def expired_assessments(self, retention_days: float) -> list[Assessment]:
        since = utcnow() - timedelta(days=retention_days)
        with self.session() as s:
            return list(s.scalars(select(Assessment).where(Assessment.deleted_at.is_(None),
                                                           Assessment.created_at < since)))

    def expire_assessment(self, assessment_id: str) -> None:
        with self.session() as s:
            a = s.get(Assessment, assessment_id)
            if a is not None and a.deleted_at is None:
                self._scrub(s, a)
        self.checkpoint()
