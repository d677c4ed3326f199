"""The states of an assessment (job), of its items and of an item's pictures: one definition each.

They are `str` enums, so they compare equal to, store and serialise as their plain values
("queued", ...): the database schema and the API's JSON stay as they were.
"""
from __future__ import annotations

from enum import StrEnum


class ItemStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class JobStatus(StrEnum):
    """An assessment's status, derived from its items' (see `job_status`)."""
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PARTLY_FAILED = "partly_failed"


class PicturesState(StrEnum):
    PENDING = "pending"    # links may still appear
    READY = "ready"        # links are set
    NONE = "none"          # no link will appear


IN_FLIGHT: tuple[ItemStatus, ...] = (ItemStatus.QUEUED, ItemStatus.RUNNING)

# The artifacts key the worker records (with no picture) when it could draw none for a scored item.
NO_PICTURES = "_none"


def job_status(item_statuses: list[str]) -> JobStatus:
    """An assessment is queued while every item is, running while any is in flight, then succeeded,
    failed or partly failed."""
    if any(s in IN_FLIGHT for s in item_statuses):
        if all(s == ItemStatus.QUEUED for s in item_statuses):
            return JobStatus.QUEUED
        return JobStatus.RUNNING
    if all(s == ItemStatus.SUCCEEDED for s in item_statuses):
        return JobStatus.SUCCEEDED
    if all(s == ItemStatus.FAILED for s in item_statuses):
        return JobStatus.FAILED
    return JobStatus.PARTLY_FAILED
