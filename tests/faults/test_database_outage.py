"""The job store goes away: the API answers 503 problem+json with a code, then recovers by itself.

Given an API whose PostgreSQL job store is reached through a TCP proxy on 127.0.0.1, when the proxy cuts
every connection and refuses new ones (the database host is gone), then reads, uploads and /readyz answer
503 with `code: database_unavailable` (and Retry-After), /healthz stays 200, no partial upload is left in
storage; when the proxy lets connections through again, the same requests succeed without a restart.
"""
from __future__ import annotations

import os
from urllib.parse import urlsplit

import pytest

from bench.servers import feqa_stack, postgres_url
from tests.faults.support import TcpProxy, leftovers, upload, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def proxied(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0] + "@" if len(netloc) == 2 else ""
    return parts._replace(netloc=f"{user}127.0.0.1:{port}").geturl()


def test_database_outage_answers_503_and_recovers(models, video, tmp_path):
    base = os.environ.get("DATABASE_URL_TEST", DEFAULT_PG)
    target = urlsplit(base)
    with TcpProxy(target.hostname or "127.0.0.1", target.port or 5432) as proxy, \
            postgres_url(base) as direct, \
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
