"""What the patient is asked to do: each protocol's title and description, each task's title and
instructions. One definition, read by the web form's page (service/api/routes/web.py renders it) and served
per task by GET /v1/models (`protocols.<p>.tasks[].title / instructions`), which the form's script applies
and API clients can show. The protocols, their tasks and the order come from model.contract.PROTOCOLS."""
from __future__ import annotations

from dataclasses import dataclass

from model.contract import PROTOCOLS


@dataclass(frozen=True)
class Task:
    title: str
    instructions: str


@dataclass(frozen=True)
class Protocol:
    title: str
    description: str


PROTOCOL_INFO: dict[str, Protocol] = {
    "pfed5": Protocol("PFED5 (Parkinson's disease, MDS-UPDRS 3.2)",
                      "five tasks: rest, smile, frown, squeeze eyes, clench teeth"),
    "toronto": Protocol("Toronto NeuroFace (non-speech tasks)", "five tasks: blow, kiss, brow, open, spread"),
}

TASKS: dict[str, Task] = {
    # PFED5
    "sit_at_rest": Task("Sit at rest", "Sit still and look at the camera with a relaxed face for about 10 seconds. "
                                       "Do not talk or move your head."),
    "smile": Task("Smile", "Smile as widely as you can, showing your teeth, hold it for a moment, then relax. "
                           "Do this three times."),
    "frown": Task("Frown", "Frown hard, pulling your eyebrows down and together, then relax. Do this three times."),
    "squeeze_eyes": Task("Squeeze eyes", "Close your eyes as tightly as you can, then open them. Do this three "
                                         "times."),
    "clench_teeth": Task("Clench teeth", "Bite your teeth together and pull your lips apart to show them, then "
                                         "relax. Do this three times."),
    # Toronto NeuroFace
    "blow": Task("Blow (puff cheeks)", "Fill your cheeks with air and blow it out as if blowing out a candle. "
                                       "Do this five times."),
    "kiss": Task("Kiss (pucker lips)", "Push your lips forward as if blowing a kiss, then relax. Do this five "
                                       "times."),
    "brow": Task("Raise eyebrows", "Raise your eyebrows as high as you can, then relax. Do this five times."),
    "open": Task("Open mouth", "Open your mouth as wide as you can, then close it. Do this five times."),
    "spread": Task("Spread lips", "Spread your lips wide with your mouth closed, as if saying \"eee\", then relax. "
                                  "Do this five times."),
}


def task(expression: str) -> Task:
    """The task's words; a task without its own (none today: a test checks) gets its name as the title."""
    return TASKS.get(expression) or Task(expression.replace("_", " ").capitalize(), "")


def protocols() -> dict[str, dict]:
    """Per protocol in model.contract.PROTOCOLS order: title, description and its tasks with their words."""
    return {key: {"title": PROTOCOL_INFO[key].title, "description": PROTOCOL_INFO[key].description,
                  "tasks": [{"expression": e, "title": task(e).title, "instructions": task(e).instructions}
                            for e in expressions]}
            for key, expressions in PROTOCOLS.items()}
