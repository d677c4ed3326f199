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
