"""The job store goes away: the API answers 503 problem+json with a code, then recovers by itself.

Given an API whose PostgreSQL job store is reached through a TCP proxy on 127.0.0.1, when the proxy cuts
every connection and refuses new ones (the database host is gone), then reads, uploads and /readyz answer
503 with `code: database_unavailable` (and Retry-After), /healthz stays 200, no partial upload is left in
storage; when the proxy lets connections through again, the same requests succeed without a restart.
"""
from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.faults.support import TcpProxy, leftovers, upload, wait_for
from tests.servers import feqa_stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def proxied(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0] + "@" if len(netloc) == 2 else ""
    return parts._replace(netloc=f"{user}127.0.0.1:{port}").geturl()


@contextlib.contextmanager
def fresh_schema(base_url: str) -> Iterator[str]:
    """A schema of its own, made and dropped over fresh direct connections (no pool to go stale)."""
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    schema = f"feqa_fault_{uuid.uuid4().hex[:10]}"
    eng = sa.create_engine(base_url, poolclass=NullPool)
    with eng.begin() as c:
        c.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{base_url}{'&' if '?' in base_url else '?'}options=-csearch_path%3D{schema}"
    finally:
        with eng.begin() as c:
            c.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        eng.dispose()


def test_database_outage_answers_503_and_recovers(models, video, tmp_path):
    base = os.environ.get("DATABASE_URL_TEST", DEFAULT_PG)
    target = urlsplit(base)
    with TcpProxy(target.hostname or "127.0.0.1", target.port or 5432) as proxy, \
            fresh_schema(base) as direct, \
            feqa_stack(tmp_path, model_dir=models, database_url=proxied(direct, proxy.port), workers=0,
                       ready=False) as stack:
        # The schema is made and dropped over direct connections; only the service goes through the proxy.
        key = stack.create_key("clinic")
        with stack.client(key) as http:
            aid = upload(http, video).json()["id"]
            assert http.get(f"/v1/assessments/{aid}").status_code == 200

            # When: the database host disappears.
            proxy.cut()
            for r in (http.get(f"/v1/assessments/{aid}"), upload(http, video), http.get("/readyz")):
                assert r.status_code == 503, (r.status_code, r.text)
                if r.url.path != "/readyz":
                    assert r.headers["content-type"].startswith("application/problem+json")
                    assert r.json()["code"] == "database_unavailable"
                    assert r.headers.get("retry-after")
            assert http.get("/healthz").status_code == 200    # the process itself is alive
            assert leftovers(stack.var_dir) == []
            assert stack.procs[0].alive()

            # Then: the database is back; the API recovers without a restart.
            proxy.restore()
            wait_for(lambda: http.get(f"/v1/assessments/{aid}").status_code == 200, 20, "reads working again")
            r = upload(http, video)
            assert r.status_code == 202, r.text
            assert http.get(f"/v1/assessments/{r.json()['id']}").json()["status"] == "queued"
