"""Purge of expired data: uploaded videos past their retention, assessments past theirs.

Runs at API start, periodically in every worker, and from `feqa serve --purge`. Idempotent,
so several processes running it at once do no harm.
"""
from __future__ import annotations

import logging

from worker.jobs.keys import assessment_prefixes
from worker.jobs.storage import LocalStorage
from worker.jobs.store import Store
from worker.settings import Settings

log = logging.getLogger("feqa.purge")


def purge(store: Store, storage: LocalStorage, settings: Settings) -> dict[str, int]:
    videos = 0
    for item_id, key in store.expired_videos(settings.video_retention_hours):
        storage.delete(key)
        store.mark_video_deleted(item_id)
        videos += 1
    assessments = 0
    for a in store.expired_assessments(settings.result_retention_days):
        store.expire_assessment(a.id)
        for prefix in assessment_prefixes(a.id):
            storage.delete_prefix(prefix)
        store.audit(a.tenant, "system", "purge", a.id)
        assessments += 1
    partial = storage.remove_stale_parts(settings.partial_upload_max_age_s)
    if videos or assessments or partial:
        log.info("purged %d video(s), %d assessment(s), %d partial upload(s)", videos, assessments, partial)
    return {"videos": videos, "assessments": assessments, "partial_uploads": partial}
