"""`feqa migrate`: bring the job store's schema to the newest revision (alembic), then exit.

The one place migrations run: `feqa serve` runs it at start, the compose deployment runs it as a
one-shot service before the API and the workers start. Safe to run while other processes use the
database, and several at once (they take a lock); a current schema is left as it is.
"""
from __future__ import annotations

import argparse

HELP = "create or upgrade the job store's database schema (DATABASE_URL, else var/feqa.sqlite3)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 0 when the schema is current, 1 when it needs `feqa migrate`")


def run(args: argparse.Namespace) -> int:
    from worker.jobs.db import migrate, schema_revision
    from worker.settings import get_settings

    url = get_settings().db_url
    if args.check:
        current, head = schema_revision(url)
        print(f"schema revision {current or 'none'}, newest {head}")
        return 0 if current == head else 1
    migrate(url)
    print(f"schema at revision {schema_revision(url)[0]}")
    return 0
