"""The job-store tests run on SQLite and, when DATABASE_URL_TEST is set, on PostgreSQL: one `store` fixture."""
from __future__ import annotations

import pytest

from bench.servers import postgres_url
from tests.service.conftest import pg_url_or_skip
from worker.jobs.db import migrate
from worker.jobs.store import Store


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        migrate(f"sqlite:///{tmp_path / 'store.sqlite3'}")
        yield Store(f"sqlite:///{tmp_path / 'store.sqlite3'}")
        return
    with postgres_url(pg_url_or_skip()) as url:
        migrate(url)
        yield Store(url)
