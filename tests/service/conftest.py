"""Fixtures for the service tests: in-process apps for unit tests (the real video and untrained models are
tests/conftest.py's `video_path`, `video_bytes`, `model_dir`)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest


def stand_in_models(model_dir: Path, expressions=("smile", "frown")) -> Path:
    """Manifest + empty .onnx pairs: what the API reads to know what is served (it never loads a model)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    for e in expressions:
        (model_dir / f"{e}-stand-in.json").write_text(
            f'{{"name": "{e}-stand-in", "version": "0", "expression": "{e}", "trained_on": "untrained"}}')
        (model_dir / f"{e}-stand-in.onnx").write_bytes(b"")
    return model_dir


@pytest.fixture()
def settings(tmp_path):
    from worker.jobs.db import migrate
    from worker.settings import Settings

    s = Settings(var_dir=tmp_path / "var", model_dir=stand_in_models(tmp_path / "models"), rate_limit_per_minute=0)
    migrate(s.db_url)   # what `feqa migrate` does before the API starts
    return s


class RecordingQueue:
    """Stands in for the broker in in-process API unit tests (integration tests use real workers)."""

    def __init__(self) -> None:
        self.sent: list[int] = []

    def enqueue(self, item_ids: list[int]) -> None:
        self.sent.extend(item_ids)


@pytest.fixture()
def queue() -> RecordingQueue:
    return RecordingQueue()


@pytest.fixture()
def app(settings, queue):
    from service.api.main import create_app

    return create_app(settings, queue=queue)


@pytest.fixture()
def client(app):
    from fastapi.testclient import TestClient

    with TestClient(app) as c:
        yield c


def pg_url_or_skip() -> str:
    url = os.environ.get("DATABASE_URL_TEST")
    if not url:
        pytest.skip("DATABASE_URL_TEST is not set: no PostgreSQL to test against (CI sets it)")
    return url
