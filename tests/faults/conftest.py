"""Fixtures for the fault-injection tests: real API, Celery worker and Redis processes."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import real_video
from tests.faults.support import shared_models


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> Path:
    return shared_models(tmp_path_factory)


@pytest.fixture(scope="session")
def video() -> Path:
    return real_video()
