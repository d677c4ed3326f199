"""Purge of expired data: uploaded videos past their retention, assessments past theirs.

Runs at API start, periodically in every worker, and from `feqa serve --purge`. Idempotent,
so several processes running it at once do no harm.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TypeVar

from worker.jobs.db import Assessment
from worker.jobs.keys import assessment_prefixes
from worker.jobs.storage import Storage
from worker.jobs.store import Store
from worker.settings import Settings

log = logging.getLogger("feqa.purge")
T = TypeVar("T")


def _each(what: str, rows: Iterable[T], action: Callable[[T], None]) -> tuple[int, int]:
    """Apply `action` to every row; one that fails is logged (by class: the error text may name a file) and
    left for the next cycle, the others proceed. Returns (done, failed)."""
    done = failed = 0
    for row in rows:
        try:
            action(row)
            done += 1
        except Exception as exc:
            failed += 1
            log.warning("purge: could not remove %s (%s); it is retried in the next cycle", what,
                        type(exc).__name__)
    return done, failed


def purge(store: Store, storage: Storage, settings: Settings) -> dict[str, int]:
    """Each expired video, assessment and partial upload is handled on its own: one that cannot be removed
    (a file the process may not delete, a database hiccup) does not stop the others, nor the orphan
    re-queueing that runs after this in the worker's housekeeping."""
    def drop_video(row: tuple[int, str]) -> None:
        item_id, key = row
        storage.delete(key)
        store.mark_video_deleted(item_id)

    def drop_assessment(a: Assessment) -> None:
        for prefix in assessment_prefixes(a.id):   # files first: a failure leaves the row for the retry
            storage.delete_prefix(prefix, strict=True)
        store.expire_assessment(a.id)
        store.audit(a.tenant, "system", "purge", a.id)

    failed = 0
    try:
        videos, f = _each("an expired video", store.expired_videos(settings.video_retention_hours), drop_video)
        failed += f
        assessments, f = _each("an expired assessment", store.expired_assessments(settings.result_retention_days),
                               drop_assessment)
        failed += f
    except Exception as exc:   # the job store itself: nothing to purge this cycle
        log.warning("purge: the job store could not be read (%s)", type(exc).__name__)
        videos = assessments = 0
        failed += 1
    try:
        partial = storage.remove_stale_parts(settings.partial_upload_max_age_s)
    except Exception as exc:
        log.warning("purge: partial uploads could not be listed (%s)", type(exc).__name__)
        partial = 0
        failed += 1
    if videos or assessments or partial or failed:
        log.info("purged %d video(s), %d assessment(s), %d partial upload(s); %d left for the next cycle",
                 videos, assessments, partial, failed)
    return {"videos": videos, "assessments": assessments, "partial_uploads": partial, "failed": failed}
