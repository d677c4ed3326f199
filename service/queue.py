"""Send work to the workers by task name (no worker task code is imported here)."""
from __future__ import annotations

from functools import cached_property

from celery import Celery

from worker.celery_app import make_celery, send_assess
from worker.settings import Settings


class Queue:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def celery(self) -> Celery:
        return make_celery(self.settings)

    def enqueue(self, item_ids: list[int]) -> None:
        send_assess(self.celery, item_ids, self.settings.queue)
