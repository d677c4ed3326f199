"""Redis restarts while jobs are queued: none is lost.

Given a private redis-server with append-only persistence (never the shared 127.0.0.1:6379 one), an API
and a worker, when four assessments are submitted and Redis is killed (SIGKILL) and started again while
they are queued or running, then the queued messages are still in Redis, the API accepts a new upload
after the restart, and every assessment ends succeeded.
"""
from __future__ import annotations

import pytest
import redis

from tests.faults.support import own_redis, upload, wait_for
from tests.servers import feqa_stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_jobs_survive_a_redis_restart(models, video, tmp_path):
    with own_redis(tmp_path) as rd, feqa_stack(tmp_path, model_dir=models, broker="redis", workers=0, ready=False,
                                               env={"REDIS_URL": rd.url}) as stack:
        key = stack.create_key("clinic")
        queue = stack.env["FEQA_QUEUE"]
        with stack.client(key) as http:
            ids = []
            for i in range(3):
                r = upload(http, video, name=f"c{i}.mp4")
                assert r.status_code == 202, r.text
                ids.append(r.json()["id"])
            conn = redis.Redis.from_url(rd.url)
            assert conn.llen(queue) == 3          # queued, no worker yet
            conn.close()

            # When: Redis dies without a save and comes back from its append-only file.
            rd.kill()
            rd.start()
            conn = redis.Redis.from_url(rd.url)
            assert conn.llen(queue) == 3
            conn.close()

            # The API's broker connection recovers: a new upload is accepted and queued.
            r = upload(http, video, name="after.mp4")
            assert r.status_code == 202, r.text + stack.logs()
            ids.append(r.json()["id"])

            stack.add_worker()
            bodies = [stack.wait_done(http, aid, timeout=150) for aid in ids]
        assert [b["status"] for b in bodies] == ["succeeded"] * 4, bodies
        conn = redis.Redis.from_url(rd.url)
        wait_for(lambda: conn.llen(queue) == 0, 10, "an empty queue")
        conn.close()


def test_worker_reconnects_after_redis_restart_mid_job(models, video, tmp_path):
    """Redis dies while one item is running and others wait: the worker reconnects and finishes all."""
    with own_redis(tmp_path) as rd, feqa_stack(tmp_path, model_dir=models, broker="redis", workers=1,
                                               env={"REDIS_URL": rd.url}) as stack:
        key = stack.create_key("clinic")
        with stack.client(key) as http:
            ids = [upload(http, video, name=f"c{i}.mp4").json()["id"] for i in range(3)]
            store = stack.store()

            def first_running() -> bool:
                return any(store.get_item(store.item_ids(a)[0]).status == "running" for a in ids)

            wait_for(first_running, 60, "an item running", 0.05)
            rd.kill()
            rd.start()
            bodies = [stack.wait_done(http, aid, timeout=150) for aid in ids]
        assert [b["status"] for b in bodies] == ["succeeded"] * 3, (bodies, stack.logs())
