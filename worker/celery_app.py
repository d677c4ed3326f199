"""The Celery app, configured from worker.settings, and sending by task name.

The API imports this module only to send tasks by name (`send_assess`); it never imports
worker.tasks (and so never loads onnxruntime or OpenCV). The worker's own app is built by
worker.runtime; nothing here builds one at import.
"""
from __future__ import annotations

from json import loads
from queue import Empty
from typing import Any

from celery import Celery
from kombu.transport import TRANSPORT_ALIASES
from kombu.transport.sqlalchemy import Channel as SQLAChannel
from kombu.transport.sqlalchemy import Transport as SQLATransport
from kombu.utils.encoding import bytes_to_str
from sqlalchemy import event, text
from sqlalchemy.engine import Engine

from worker.jobs.db import sqlite_pragmas
from worker.settings import Settings, get_settings

TASK_ASSESS = "feqa.assess_item"
TASK_PURGE = "feqa.purge"


class SQLiteChannel(SQLAChannel):
    def _engine_from_config(self) -> Engine:
        engine = super()._engine_from_config()
        event.listen(engine, "connect", sqlite_pragmas)   # WAL + busy timeout, as for the job store
        return engine

    def _get(self, queue: Any, timeout: Any = None) -> Any:
        """Take the oldest message and delete its row. kombu's own transport only marks a delivered row
        invisible and keeps it for ever (the broker file grew by every task). Nothing reads an invisible
        row again: an unacknowledged message is restored by kombu's QoS through `_put`, as before."""
        obj = self._get_or_create(queue)
        self.session.execute(text("BEGIN IMMEDIATE TRANSACTION"))
        try:
            msg = (self.session.query(self.message_cls).filter(self.message_cls.queue_id == obj.id)
                   .filter(self.message_cls.visible != False)   # noqa: E712  (SQL, not Python)
                   .order_by(self.message_cls.sent_at).order_by(self.message_cls.id).limit(1).first())
            if msg is None:
                raise Empty()
            payload = msg.payload
            self.session.delete(msg)
            return loads(bytes_to_str(payload))
        finally:
            self.session.commit()


class SQLiteTransport(SQLATransport):
    """kombu's SQLAlchemy transport, polled every 0.2 s instead of 1 s: the single-machine broker.
    (The SQLAlchemy transport hands every transport option to create_engine, so the interval
    cannot be passed as an option.)"""

    Channel = SQLiteChannel
    polling_interval = 0.2


TRANSPORT_ALIASES.setdefault("feqa-sqlite", "worker.celery_app:SQLiteTransport")


def make_celery(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    if settings.celery_broker_url.startswith("feqa-sqlite+"):
        settings.var_dir.mkdir(parents=True, exist_ok=True)   # the broker file lives there
    app = Celery("feqa", broker=settings.celery_broker_url, include=["worker.tasks"])
    if settings.celery_broker_url.startswith("feqa-sqlite+"):
        transport_options: dict = {"connect_args": {"timeout": 30}}   # create_engine arguments
    else:
        transport_options = {"visibility_timeout": settings.visibility_timeout_s}
    app.conf.update(
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        task_default_queue=settings.queue,
        task_routes={TASK_ASSESS: {"queue": settings.queue}},
        task_ignore_result=True,            # the job store is the record, not a result backend
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=settings.task_soft_time_limit_s,
        task_time_limit=settings.task_time_limit_s,
        worker_max_tasks_per_child=settings.worker_max_tasks_per_child,
        worker_hijack_root_logger=False,
        task_serializer="json",
        accept_content=["json"],
    )
    return app


def send_assess(app: Celery, item_ids: list[int], queue: str, countdown: float | None = None) -> None:
    """Queue one scoring task per item, by task name (`countdown`: not before that many seconds)."""
    for item_id in item_ids:
        app.send_task(TASK_ASSESS, args=[item_id], queue=queue, countdown=countdown)
