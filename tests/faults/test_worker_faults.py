"""Workers that die: SIGKILL in the middle of a job, and a video that kills its worker process every time.

Given two Celery workers on real Redis, when the worker scoring an item is killed with SIGKILL, then the
item is taken over by the other worker and finishes exactly once (one item row, one set of stage
durations, the result written once). Given a prefork worker whose child process dies on every attempt at
one video, then the item ends failed with code `worker_lost` after `task_max_retries + 1` attempts and
is never delivered again.
"""
from __future__ import annotations

import os
import signal
import time

import pytest
from sqlalchemy import func, select

from bench.servers import feqa_stack
from tests.faults.support import long_video, upload, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def item_of(stack, assessment_id: str):
    ids = stack.store().item_ids(assessment_id)
    assert len(ids) == 1, ids
    return stack.store().get_item(ids[0])


def running_pid(stack, assessment_id: str, not_pid: int | None = None) -> int | None:
    it = item_of(stack, assessment_id)
    if it.status == "running" and it.worker and it.stage != "done":
        pid = int(it.worker.rpartition(":")[2])
        return pid if pid != not_pid else None
    return None


def test_sigkill_mid_job_finishes_once_on_another_worker(models, tmp_path):
    with feqa_stack(tmp_path, model_dir=models, broker="redis", workers=2) as stack:
        key = stack.create_key("clinic")
        with stack.client(key) as http:
            r = upload(http, long_video())
            assert r.status_code == 202, r.text
            aid = r.json()["id"]
            pid = wait_for(lambda: running_pid(stack, aid), 60, "the item running on a worker", 0.05)
            victim = next(p for p in stack.workers if p.popen.pid == pid)

            # When: the worker holding the item dies without any chance to clean up.
            victim.kill(signal.SIGKILL)
            victim.popen.wait(10)
            # It really was in the middle of the job: no result yet (the other worker's housekeeping may
            # already have put it back to "queued").
            assert item_of(stack, aid).status in ("running", "queued")

            # Then: the surviving worker takes it over and finishes it.
            body = stack.wait_done(http, aid, timeout=90)
        assert body["status"] == "succeeded", body
        it = item_of(stack, aid)
        assert it.attempts == 2 and int(it.worker.rpartition(":")[2]) != pid
        time.sleep(1.5)   # a late duplicate delivery would have written by now
        from worker.jobs.db import Item, StageDuration

        with stack.store().session() as s:
            n_items = s.scalar(select(func.count()).select_from(Item).where(Item.assessment_id == aid))
            stages = list(s.scalars(select(StageDuration.stage).where(StageDuration.item_id == it.id)))
        assert n_items == 1
        assert stages and len(stages) == len(set(stages)), stages   # one result's timings, written once
        assert body["items"][0]["result"]["score"] is not None


def test_video_that_kills_its_worker_fails_after_bounded_attempts(models, tmp_path):
    """The poison video is simulated by killing the pool child that claims it, on every attempt: the
    observable effect of a decoder that segfaults on a file (no Python exception, the process is gone)."""
    env = {"FEQA_TASK_MAX_RETRIES": "2"}
    with feqa_stack(tmp_path, model_dir=models, broker="redis", workers=1, pool="prefork", env=env) as stack:
        key = stack.create_key("clinic")
        with stack.client(key) as http:
            aid = upload(http, long_video()).json()["id"]
            killed: list[int] = []
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and len(killed) < 5:
                it = item_of(stack, aid)
                if it.status == "failed":
                    break
                pid = running_pid(stack, aid, not_pid=killed[-1] if killed else None)
                if pid is not None:
                    os.kill(pid, signal.SIGKILL)     # the child dies; the parent forks a new one
                    killed.append(pid)
                time.sleep(0.05)
            body = stack.wait_done(http, aid, timeout=60)
            item = body["items"][0]
            assert body["status"] == "failed", body
            assert item["error"]["code"] == "worker_lost", item
            assert len(killed) == 3, killed            # task_max_retries + 1 attempts, then no more
            assert item_of(stack, aid).attempts == 3

            # Never loops: the message is gone from the queue and nothing claims the item again.
            import redis

            r = redis.Redis.from_url(stack.env["REDIS_URL"])
            time.sleep(3)
            assert r.llen(stack.env["FEQA_QUEUE"]) == 0
            after = item_of(stack, aid)
            assert (after.status, after.attempts, after.error_code) == ("failed", 3, "worker_lost")
            assert stack.workers[0].alive()            # the worker itself survived its children
            assert http.get("/readyz").status_code == 200
