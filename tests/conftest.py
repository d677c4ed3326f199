"""Shared test fixtures: where ../shared lives, and artifacts."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FEQA_SHARED", ROOT.parent / "shared"))
FIXTURES = SHARED / "reference" / "fixtures"
VIDEOS = SHARED / "videos"
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def real_video() -> Path:
    """The real face clip the integration tests upload: the project's own copy, else ../shared's."""
    for candidate in (ROOT / "tests" / "data" / "pyfeat_single_face.mp4", VIDEOS / "pyfeat_single_face.mp4"):
        if candidate.is_file():
            return candidate
    pytest.fail("no real face video: tests/data/pyfeat_single_face.mp4 and ../shared/videos are both missing")


@pytest.fixture(scope="session")
def video_path() -> Path:
    """The real face clip (tests/data, else ../shared)."""
    return real_video()


@pytest.fixture(scope="session")
def video_bytes(video_path: Path) -> bytes:
    return video_path.read_bytes()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """Untrained compact models for smile (results say trained_on "untrained")."""
    from bench.servers import untrained_models

    return untrained_models(tmp_path_factory.mktemp("models"), ["smile"])
