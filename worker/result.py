"""The per-item result: one typed model, built by worker.pipeline, validated before the job store keeps
it, served by the API (service.schemas reuses it, so /openapi.json documents exactly this) and read
by the Python client and `feqa batch`.

The JSON is the one the service always wrote; `validated()` checks it and returns plain JSON with the
same keys (fields the builder did not set are not added). Every model allows extra keys, so a field a
newer pipeline adds is stored and served before it is declared here; the whole-recording fields
(`scale`, `aggregation`, `windows`, `repetitions`, `findings`, `measures`) are declared, loosely, for that reason.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

# A result without a `scale` is on the MDS-UPDRS 3.2 scale (the only one before scales were named).
DEFAULT_RANGE = (0.0, 4.0)


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ModelFacts(_Open):
    name: str
    version: str
    sha256: str
    trained_on: str = Field(description='"simulated", "clinical:<dataset>" or "untrained"')
    training_data: Any = None
    clinical_use: bool


class ScaleInfo(_Open):
    """The clinical scale the model scores on (model.scales.Scale.to_dict())."""
    name: str
    title: str = ""
    min: int
    max: int
    meanings: dict[str, str] = Field(default_factory=dict, description="grade -> meaning")


class QualityReport(_Open):
    """The quality report of the video (worker.quality): its measures plus these three."""
    scorable: bool = True
    reasons: list[str] = Field(default_factory=list, description="stable codes that blocked a score")
    warnings: list[str] = Field(default_factory=list, description="facts that did not block a score")


class VideoFacts(_Open):
    duration_s: float | None = None
    fps_in: float | None = None
    fps_out: float | None = None
    rotation: int | float | None = None
    n_frames: int | None = None


class Aggregation(_Open):
    """How a whole recording's windows became one score (worker.pipeline.aggregate)."""
    rule: str = Field(description="median_over_repetitions_of_mean_over_windows, "
                      "mean_over_windows_tiling_the_recording (rest) or window_on_the_largest_movement")
    n_windows: int | None = None
    spread: float | None = Field(None, description="max - min of the repetitions' scores (of the windows' at rest)")
    basis: str | None = Field(None, description="complete_repetitions, partial_repetitions, whole_recording "
                              "or largest_movement")
    n_repetitions: int | None = None


class RegionMeasures(_Open):
    """Movement of one face region (worker.measures.MEASURES): inter-ocular units (IOD) from neutral."""
    rom_iod: float | None = None
    peak_speed_iod_s: float | None = None
    time_to_peak_s: float | None = None
    asymmetry: float | None = Field(None, description="|L - R| / (L + R); null when the region hardly moves")
    rom_left_iod: float | None = Field(None, description="range of motion of the patient's left side (L)")
    rom_right_iod: float | None = Field(None, description="range of motion of the patient's right side (R)")


class RepetitionMeasures(_Open):
    amplitude_iod: float | None = None
    duration_s: float | None = None
    partial: bool = False
    regions: dict[str, RegionMeasures] = Field(default_factory=dict)


class RestMeasures(_Open):
    blink_rate_per_min: float | None = None
    n_blinks: int | None = None
    spontaneous_movement_iod: float | None = None
    lips_apart_share: float | None = None
    tremor_power_iod2: float | None = None
    tremor_peak_hz: float | None = None
    face_time_s: float | None = None


class Measures(_Open):
    """Computed (not learned) movement measures of the recording; names, units, meanings in
    worker.measures.MEASURES and docs/api.md."""
    regions: dict[str, RegionMeasures] = Field(default_factory=dict, description="median over the repetitions")
    fatigue: float | None = None
    variability: float | None = None
    n_repetitions: int | None = None
    rest: RestMeasures | None = None


class Repetition(_Open):
    index: int
    onset_s: float | None = None
    peak_s: float | None = None
    offset_s: float | None = None
    partial: bool = Field(False, description="cut by the start or end of the recording (half a repetition)")
    score: float | None = None
    measures: RepetitionMeasures | dict[str, Any] = Field(default_factory=dict)


class Window(_Open):
    """One scored window of a whole recording."""
    onset_s: float | None = None
    offset_s: float | None = None
    repetition: int | None = None
    score: float | None = None
    padded: bool | str | None = Field(None, description="false, or the padding kind of a short window")


class ItemResult(_Open):
    expression: str
    score: float | None = Field(None, description="model output clipped to the model's scale (0..4 without one)")
    score_rounded: int | None = Field(None, description="the nearest grade of the scale")
    meaning: str | None = Field(None, description="the grade's meaning on the scale, e.g. 0 normal .. 4 severe")
    abstained: bool = False
    reasons: list[str] = Field(default_factory=list, description="why no score was given (abstained)")
    model: ModelFacts | None = None
    quality: QualityReport = Field(default_factory=QualityReport)
    not_for_clinical_use: bool = True
    video: VideoFacts | None = None
    timings: dict[str, float] = Field(default_factory=dict, description="seconds per stage, and total")
    scale: ScaleInfo | None = None
    aggregation: Aggregation | None = None
    windows: list[Window] | None = None
    repetitions: list[Repetition] | None = None
    findings: list[str] | None = Field(None, description="codes, e.g. fewer_repetitions_than_asked")
    measures: Measures | None = None

    @model_validator(mode="after")
    def _score_on_its_scale(self) -> ItemResult:
        low, high = (self.scale.min, self.scale.max) if self.scale else DEFAULT_RANGE
        for name, value in (("score", self.score), ("score_rounded", self.score_rounded)):
            if value is not None and not low <= value <= high:
                raise ValueError(f"{name} {value} lies outside the scale {low:g}..{high:g}")
        if self.abstained and self.score is not None:
            raise ValueError("an abstained result carries no score")
        return self


def validated(result: dict[str, Any]) -> dict[str, Any]:
    """The result checked against ItemResult, as plain JSON with the keys the builder set."""
    return ItemResult.model_validate(result).model_dump(mode="json", exclude_unset=True)
