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


def _history_plan(url: str) -> str:
    """The query plan of a patient's history page (the filter and order of Store.patient_assessments)."""
    from sqlalchemy import text

    migrate(url)
    sql = ("SELECT id FROM assessments WHERE tenant = 't' AND patient_ref = 'ward-3/P-1' AND deleted_at IS NULL "
           "ORDER BY created_at DESC, id DESC LIMIT 21")
    with get_engine(url).connect() as conn:
        if conn.dialect.name == "sqlite":
            return " ".join(str(r[-1]) for r in conn.execute(text("EXPLAIN QUERY PLAN " + sql)))
        conn.execute(text("SET enable_seqscan = off"))      # an empty table: make the planner show its choice
        return " ".join(str(r[0]) for r in conn.execute(text("EXPLAIN " + sql)))


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_the_patient_history_query_uses_its_index(tmp_path, dialect):
    if dialect == "sqlite":
        plan = _history_plan(f"sqlite:///{tmp_path / 'm.sqlite3'}")
    else:
        with postgres_url(pg_url_or_skip()) as url:
            plan = _history_plan(url)
    assert "ix_assessments_tenant_patient_created" in plan, plan
