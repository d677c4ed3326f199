"""The alembic migrations create exactly the schema the ORM models describe."""
from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from bench.servers import postgres_url
from tests.service.conftest import pg_url_or_skip
from worker.jobs.db import Base, get_engine, migrate


def assert_no_drift(url: str) -> None:
    migrate(url)
    migrate(url)   # a second start finds nothing to do
    with get_engine(url).connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_migrations_match_the_models(tmp_path, dialect):
    if dialect == "sqlite":
        assert_no_drift(f"sqlite:///{tmp_path / 'm.sqlite3'}")
    else:
        with postgres_url(pg_url_or_skip()) as url:
            assert_no_drift(url)
