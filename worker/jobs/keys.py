"""The storage key layout, in one place: the API writes uploads, the worker pictures, and the
housekeeping and deletion remove an assessment's keys through these helpers.

    uploads/<assessment id>/<item index>.video
    artifacts/<assessment id>/<item index>/<picture>.png
"""
from __future__ import annotations

UPLOADS = "uploads"
ARTIFACTS = "artifacts"


def upload_key(assessment_id: str, index: int) -> str:
    return f"{UPLOADS}/{assessment_id}/{index}.video"


def uploads_prefix(assessment_id: str) -> str:
    return f"{UPLOADS}/{assessment_id}/"


def artifacts_prefix(assessment_id: str, index: int | None = None) -> str:
    """The pictures of one assessment (trailing slash), or of one of its items (no trailing slash:
    the directory the worker draws into)."""
    if index is None:
        return f"{ARTIFACTS}/{assessment_id}/"
    return f"{ARTIFACTS}/{assessment_id}/{index}"


def assessment_prefixes(assessment_id: str) -> list[str]:
    """Every storage prefix that holds files of an assessment (removed when it is deleted or expires)."""
    return [uploads_prefix(assessment_id), artifacts_prefix(assessment_id)]
