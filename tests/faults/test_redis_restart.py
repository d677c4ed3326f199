"""Redis restarts while jobs are queued: none is lost.

Given a private redis-server with append-only persistence (never the shared 127.0.0.1:6379 one), an API
and one worker, when four assessments are submitted (one running, three queued) and Redis is killed with
SIGKILL and started again, then the queued messages are still in Redis, the API accepts a new upload after
the restart, the worker reconnects, and every assessment ends succeeded, each exactly once.
"""
from __future__ import annotations

import pytest
import redis

from bench.servers import feqa_stack
from tests.faults.support import own_redis, upload, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_jobs_survive_a_redis_restart(models, video, tmp_path):
    with own_redis(tmp_path) as rd, feqa_stack(tmp_path, model_dir=models, broker="redis", workers=1,
                                               env={"REDIS_URL": rd.url}) as stack:
        key = stack.create_key("clinic")
        queue = stack.env["FEQA_QUEUE"]
        store = stack.store()
        with stack.client(key) as http:
            ids = []
            for i in range(4):
                r = upload(http, video, name=f"c{i}.mp4")
                assert r.status_code == 202, r.text
                ids.append(r.json()["id"])

            def running_and_queued() -> int | None:
                states = [store.get_item(store.item_ids(a)[0]).status for a in ids]
                return states.count("running") == 1 and states.count("queued") >= 2

            wait_for(running_and_queued, 60, "one item running and others queued", 0.05)
            conn = redis.Redis.from_url(rd.url)
            waiting = conn.llen(queue)
            conn.close()
            assert waiting >= 2

            # When: Redis dies without a save and comes back from its append-only file.
            rd.kill()
            rd.start()
            conn = redis.Redis.from_url(rd.url)
            assert conn.llen(queue) >= waiting - 1    # the worker may have taken one just before the kill
            conn.close()

            # The API's broker connection recovers: a new upload is accepted and queued.
            r = upload(http, video, name="after.mp4")
            assert r.status_code == 202, r.text + stack.logs()
            ids.append(r.json()["id"])

            bodies = [stack.wait_done(http, aid, timeout=150) for aid in ids]
        assert [b["status"] for b in bodies] == ["succeeded"] * 5, (bodies, stack.logs())
        assert all(store.get_item(store.item_ids(a)[0]).attempts == 1 for a in ids)   # none ran twice
        conn = redis.Redis.from_url(rd.url)
        wait_for(lambda: conn.llen(queue) == 0, 10, "an empty queue")
        conn.close()
