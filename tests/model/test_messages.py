"""Every stable code a person can meet has a plain-language message (model/messages.py).

Given the codes the project can emit (the FeqaError classes, the quality report's reason and warning
constants, the API's problem codes, and every code literal in the source: `code="..."`, `"code": "..."`,
`fail_item(..., "...")`, the batch tool's `error_code`s, the web form's client-side codes), when each is
looked up, then it has a title and a what-to-do text in plain words.
"""
from __future__ import annotations

import inspect
import re

import pytest

from model import errors, messages
from tests.conftest import ROOT

SOURCES = [p for d in ("model", "worker", "service", "training") for p in (ROOT / d).rglob("*.py")] + \
          list((ROOT / "service" / "web").rglob("*.js"))
PATTERNS = [re.compile(p) for p in (
    # VideoError(..., code="no_face"), error_code="deleted", {"error_code": "file_not_found"}, {code: "..."} (JS)
    r"""\b(?:error_)?code["']?\s*[=:]\s*["']([a-z][a-z_]+)["']""",
    r"""\bfail(?:_item|ed)\([^,()]+,\s*["']([a-z][a-z_]+)["']""",          # fail_item(id, "timeout"), failed(row, ..)
    r"""\b_fail\([^,()]+,[^,()]+,\s*["']([a-z][a-z_]+)["']""",            # self._fail(s, it, "worker_lost", ...)
    r"""\(([a-z]+_[a-z_]+)\)["']""",                                       # web form: "... (unsupported_media_type)"
    r"""\bRowIssue\((?:[^,()"']+,\s*){3}["']([a-z][a-z_]+)["']""",           # training: RowIssue(src, n, clip, "bad_row"
)]
NOT_ERROR_CODES = {"exam"}   # FHIR observation-category code in service/views.py


def _subclasses(cls: type) -> list[type]:
    return [cls, *(s for sub in cls.__subclasses__() for s in _subclasses(sub))]


def _constants(module) -> set[str]:
    return {v for k, v in vars(module).items() if k.isupper() and isinstance(v, str) and re.fullmatch(r"[a-z_]+", v)}


def emitted_codes() -> dict[str, str]:
    """code -> where it was found."""
    from service import cli_batch, problems
    from training import datasets, runs
    from worker import quality, segment

    found: dict[str, str] = {}
    for cls in _subclasses(errors.FeqaError):
        found.setdefault(cls.code, f"model.errors.{cls.__name__}")
    for line in (inspect.getdoc(errors.VideoError) or "").split("Codes:")[-1].split(","):
        if line.strip():
            found.setdefault(line.strip(), "model.errors.VideoError docstring")
    for module in (quality, segment):   # quality reasons and warnings; whole-recording findings
        for code in _constants(module):
            found.setdefault(code, module.__name__)
    for module in (problems, cli_batch, runs):
        for code in _constants(module):
            found.setdefault(code, module.__name__)
    # training: the codes a failed clip is given, and DatasetError's own
    for code in re.findall(r"""return ["']([a-z]+_[a-z_]+)["']""", inspect.getsource(datasets.failure_reason)):
        found.setdefault(code, "training.datasets.failure_reason")
    found.setdefault(datasets.DatasetError("x").code, "training.datasets.DatasetError")
    for path in SOURCES:
        text = path.read_text(encoding="utf-8", errors="replace")
        for pattern in PATTERNS:
            for code in pattern.findall(text):
                found.setdefault(code, str(path.relative_to(ROOT)))
    return {c: w for c, w in found.items() if c not in NOT_ERROR_CODES}


def test_the_walk_finds_the_codes_of_every_layer():
    codes = emitted_codes()
    # one from each source, so that a broken walk cannot pass by finding nothing
    for code in ("model_checksum_mismatch", "several_faces", "head_turned", "nothing_to_retry", "worker_lost",
                 "no_face", "expression_not_recognised", "unsupported_file", "network_error",
                 "fewer_repetitions_than_asked", "bad_row", "duplicate_row", "frame_count_mismatch",
                 "video_not_found", "range_outside_video", "too_few_clips", "nothing_usable", "invalid_dataset"):
        assert code in codes, code
    assert len(codes) >= 40


def test_every_emitted_code_has_a_message():
    missing = {c: where for c, where in emitted_codes().items() if not messages.known(c)}
    assert not missing, f"add these codes to model/messages.py MESSAGES: {missing}"


@pytest.mark.parametrize("code", sorted(messages.MESSAGES))
def test_messages_are_plain_sentences(code):
    m = messages.message(code)
    assert m["code"] == code
    for text in (m["title"], m["what_to_do"]):
        assert text and text[0].isupper() and text.endswith("."), (code, text)
        assert not re.search(r"\b[a-z]+_[a-z_]+\b", text), f"{code}: a code in the words: {text!r}"
        assert not re.search(r"[A-Z][a-z]+(Error|Exception)\b", text), (code, text)


def test_exception_class_names_are_taken_out_of_specific_texts():
    assert messages.plain("not a readable video file (InvalidDataError)") == "not a readable video file"
    assert messages.plain("scoring failed (ModelUnavailable); try again") == "scoring failed; try again"
    assert messages.plain("no model for 'kiss' in /app/models/demo") == "no model for 'kiss' in demo"
    assert messages.plain("see https://x.org/a/b") == "see https://x.org/a/b"
    text = messages.explain("not_a_video", "not a readable video file (InvalidDataError)")
    assert text.startswith("Not a readable video file. Record the task again")
    assert "Error" not in text
    assert messages.explain("no_such_code_yet") == "Something went wrong. " + messages.FALLBACK[1]
    assert messages.reasons_text(["too_dark", "head_turned"]) == "The face is too dark. The head is turned away " \
        "from the camera."
