"""Alembic environment: runs on the connection `worker.jobs.db.migrate` hands over (or the URL)."""
from __future__ import annotations

from alembic import context

from worker.jobs.db import Base, get_engine

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    """The URL given by worker.jobs.db.migrate, else the configured database (for the alembic CLI)."""
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from worker.settings import get_settings

    return get_settings().db_url


def run() -> None:
    conn = config.attributes.get("connection")
    if conn is not None:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = get_engine(_url())   # creates var/ for SQLite
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata,
                      literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run()
