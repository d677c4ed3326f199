"""Score scales: each model scores on its own clinical scale, named in its manifest.

PFED5 models score on the MDS-UPDRS item 3.2 (facial expression) scale, 0 to 4. Toronto NeuroFace
models score on the raters' 1 to 5 scale of that dataset. Nothing maps one scale onto the other: a
result, the web form, FHIR and batch output carry the scale of the model that made the score.

A manifest names its scale with `"scale": "<name>"`; a manifest without one (older exports) takes
the default scale of its expression's protocol.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from model.contract import TORONTO_EXPRESSIONS


@dataclass(frozen=True)
class Scale:
    name: str
    title: str
    low: int
    high: int
    meanings: dict[int, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"name": self.name, "title": self.title, "min": self.low, "max": self.high,
                "meanings": {str(k): v for k, v in sorted(self.meanings.items())}}

    def clip(self, raw: float) -> float:
        return float(min(max(float(raw), self.low), self.high))

    def grade(self, raw: float) -> dict:
        """Clip a model output to the scale, round to the nearest grade and name it."""
        if not math.isfinite(float(raw)):
            raise ValueError("model output is not a finite number")
        score = self.clip(raw)
        rounded = int(min(max(math.floor(score + 0.5), self.low), self.high))
        return {"score": round(score, 4), "score_rounded": rounded, "meaning": self.meanings[rounded]}


MDS_UPDRS = Scale(
    name="mds_updrs_3_2",
    title="MDS-UPDRS 3.2 facial expression, 0 (normal) to 4 (severe)",
    low=0, high=4,
    meanings={0: "normal", 1: "slight", 2: "mild", 3: "moderate", 4: "severe"},
)

TORONTO = Scale(
    name="toronto_neuroface",
    title="Toronto NeuroFace clinical rating, 1 (normal) to 5 (severely impaired)",
    low=1, high=5,
    meanings={1: "normal", 2: "mildly impaired", 3: "moderately impaired", 4: "markedly impaired",
              5: "severely impaired"},
)

SCALES: dict[str, Scale] = {s.name: s for s in (MDS_UPDRS, TORONTO)}


def default_scale(expression: str) -> Scale:
    return TORONTO if expression in TORONTO_EXPRESSIONS else MDS_UPDRS


def get_scale(name: str) -> Scale:
    try:
        return SCALES[name]
    except KeyError:
        raise ValueError(f"unknown score scale {name!r}; expected one of: {', '.join(SCALES)}") from None


def scale_for_manifest(manifest: dict) -> Scale:
    """The scale a model scores on: its manifest's `scale`, else its expression's default."""
    name = manifest.get("scale")
    if isinstance(name, dict):
        name = name.get("name")
    if name:
        return get_scale(str(name))
    return default_scale(str(manifest.get("expression", "")))
