"""Request and response shapes of the HTTP API (they also document /openapi.json)."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from worker.jobs.status import ItemStatus, JobStatus, PicturesState
from worker.result import ItemResult

# The states and the result are defined once below the web layer; these names are what the API calls them.
AssessmentStatus = JobStatus
Stage = Literal["queued", "decoding", "tracking", "scoring", "done"]


class AssessmentCreated(BaseModel):
    id: str
    url: str = Field(description="where to poll the assessment")
    status: AssessmentStatus


class Progress(BaseModel):
    stage: Stage
    percent: float = Field(ge=0, le=100)


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="where in the request: e.g. ['header', 'idempotency-key']")
    msg: str


class Problem(BaseModel):
    """RFC 9457 problem details: every error answer of the API (media type application/problem+json)."""
    type: str = Field(description="urn:feqa:problem:<code>")
    title: str = Field(description="what happened, in plain words (the same for every occurrence of the code)")
    status: int = Field(description="the HTTP status")
    detail: str = Field(description="the facts of this occurrence, then what to do")
    code: str = Field(description="stable machine-readable code (docs/api.md lists them)")
    instance: str | None = Field(None, description="the request path")
    details: dict[str, Any] | None = Field(None, description=(
        "facts a client can act on, e.g. index (0-based position of the video or expression concerned), "
        "served (the expressions served), expected"))
    errors: list[FieldError] | None = Field(None, description="for invalid_request: which fields do not match")


class ErrorInfo(BaseModel):
    code: str
    title: str | None = Field(None, description="what happened, in plain words")
    message: str = Field(description="the facts, then what to do, in plain words")
    what_to_do: str | None = None
    details: dict[str, Any] | None = Field(None, description="e.g. the quality report of a video without a usable face")


class ItemLinks(BaseModel):
    overlay: str | None = None
    trajectories: str | None = None


class ItemOut(BaseModel):
    index: int
    expression: str
    status: ItemStatus
    progress: Progress
    result: ItemResult | None = None
    error: ErrorInfo | None = None
    pictures: PicturesState = Field(PicturesState.PENDING, description=(
        "pending: the overlay/trajectory links may still appear (keep polling); ready: the links are set; "
        "none: no picture will come (the item failed, no picture could be drawn, or they were deleted)"))
    links: ItemLinks = ItemLinks()


class PinnedModel(BaseModel):
    name: str | None = None
    version: str | None = None
    sha256: str | None = None


class AssessmentOut(BaseModel):
    id: str
    status: AssessmentStatus
    protocol: str | None = None
    patient_ref: str | None = None
    created_at: datetime
    updated_at: datetime
    models: dict[str, PinnedModel] | None = Field(None, description=(
        "the model set this assessment is scored with, per expression (pinned when the first worker takes one "
        "of its items; null until then): every item of that expression is scored by this version or fails "
        "with model_version_gone, never by another version"))
    items: list[ItemOut]
    links: dict[str, str] = {}


class PatientAssessmentsOut(BaseModel):
    patient_ref: str
    assessments: list[AssessmentOut] = Field(description="newest first; deleted and expired assessments are gone")
    next_cursor: str | None = Field(None, description="pass as `cursor` for the next (older) page; null: last page")
    limit: int


class RetryOut(BaseModel):
    id: str
    url: str
    status: AssessmentStatus
    requeued: list[int] = Field(description="indexes of the items put back in the queue")


class ModelOut(BaseModel):
    name: str
    version: str
    expression: str
    sha256: str | None = None
    trained_on: str | None = None
    clinical_use: bool = False
    manifest: dict[str, Any] = {}


class TaskOut(BaseModel):
    expression: str
    title: str = Field("", description="the task's name as the web form shows it (model.tasks)")
    instructions: str = Field("", description="what the patient is asked to do, in plain words")
    served: bool
    model: dict[str, str] | None = Field(None, description="name and version of the model serving it")
    reason: str | None = Field(None, description="why the task is not served, in plain words")
    reason_code: str | None = Field(None, description='"model_unavailable" when the task is not served')


class ProtocolOut(BaseModel):
    title: str
    description: str = ""
    served: bool = Field(description="at least one task of the protocol is served")
    tasks: list[TaskOut]


class ModelsOut(BaseModel):
    expressions: list[str] = Field(description="the expressions an upload may name")
    protocols: dict[str, ProtocolOut]
    models: list[ModelOut]
    source: Literal["workers", "model_dir"] = Field(description=(
        "workers: what the running workers report loaded; model_dir: no worker has reported yet, "
        "the installed manifests stand in"))
    problem: str | None = Field(None, description="why no model is available, when none is")


class Message(BaseModel):
    title: str = Field(description="what happened, in plain words")
    what_to_do: str


class MessagesOut(BaseModel):
    messages: dict[str, Message] = Field(description="code -> message")


class Health(BaseModel):
    status: Literal["ok", "not_ready"]
    checks: dict[str, Any] = {}
