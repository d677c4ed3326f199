"""Send work to the workers by task name (no worker code is imported here)."""
from __future__ import annotations

from functools import cached_property

from service.settings import Settings


class Queue:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def celery(self):
        from worker.celery_app import make_celery

        return make_celery(self.settings)

    def enqueue(self, item_ids: list[int]) -> None:
        from worker.celery_app import TASK_ASSESS

        for item_id in item_ids:
            self.celery.send_task(TASK_ASSESS, args=[item_id], queue=self.settings.queue)
