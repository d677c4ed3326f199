"""Scaling and rollout signals: per-worker model versions, version skew, busy share (/readyz, /metrics)
from the heartbeats in the job store, and the broker queue length from a real Redis."""
from __future__ import annotations

import os
import uuid

import redis

from service.api.fleet import broker_queue_lengths
from worker.settings import Settings


def _models(version: str, sha: str) -> list[dict]:
    return [{"name": "smile-compact", "version": version, "expression": "smile", "sha256": sha,
             "trained_on": "untrained"},
            {"name": "frown-compact", "version": "1", "expression": "frown", "sha256": "f" * 64,
             "trained_on": "untrained"}]


def test_readyz_and_metrics_report_versions_per_worker_skew_and_busy_share(client, app):
    store = app.state.store
    store.heartbeat("host-a:1", _models("1", "a" * 64), True, {"busy": True, "busy_s": 12.5, "up_s": 50.0})
    store.heartbeat("host-b:2", _models("1", "a" * 64), True, {"busy": False, "busy_s": 2.0, "up_s": 40.0})
    r = client.get("/readyz").json()
    assert r["status"] == "ok" and r["checks"]["version_skew"] == {}
    assert {w["id"]: w["versions"] for w in r["checks"]["workers"]} == {
        "host-a:1": {"smile": "1", "frown": "1"}, "host-b:2": {"smile": "1", "frown": "1"}}
    text = client.get("/metrics").text
    assert 'feqa_model_version_skew{expression="smile"} 0.0' in text
    assert "feqa_worker_busy_share 0.5" in text and "feqa_workers_ready 2.0" in text
    assert 'feqa_worker_busy_seconds_total{worker="host-a:1"} 12.5' in text

    # A rollout: host-b now serves smile version 2.
    store.heartbeat("host-b:2", _models("2", "b" * 64), True, {"busy": True, "busy_s": 3.0, "up_s": 41.0})
    r = client.get("/readyz").json()
    assert r["status"] == "ok"                       # skew is flagged, not an outage
    assert [m["version"] for m in r["checks"]["version_skew"]["smile"]] == ["1", "2"]
    assert "frown" not in r["checks"]["version_skew"]
    text = client.get("/metrics").text
    assert 'feqa_model_version_skew{expression="smile"} 1.0' in text
    assert 'feqa_model_version_skew{expression="frown"} 0.0' in text
    assert ('feqa_worker_model_info{expression="smile",name="smile-compact",sha256="' + "b" * 64
            + '",version="2",worker="host-b:2"} 1.0') in text
    assert "feqa_worker_busy_share 1.0" in text


def test_broker_queue_length_counts_waiting_messages_in_redis(tmp_path):
    url = f"redis://127.0.0.1:6379/{os.environ.get('FEQA_TEST_REDIS_DB', '11')}"
    queue = f"feqa.test.{uuid.uuid4().hex[:8]}"
    s = Settings(var_dir=tmp_path, redis_url=url, queue=queue)
    r = redis.Redis.from_url(url)
    try:
        assert broker_queue_lengths(s) == {queue: 0}
        r.lpush(queue, "m1", "m2")
        r.lpush(f"{queue}\x06\x163", "m3")           # a priority sub-queue counts with its queue
        assert broker_queue_lengths(s) == {queue: 3}
    finally:
        r.delete(queue, f"{queue}\x06\x163")
        r.close()
    assert broker_queue_lengths(Settings(var_dir=tmp_path)) is None       # the SQLite broker: no list
    assert broker_queue_lengths(Settings(var_dir=tmp_path, redis_url="redis://127.0.0.1:1/0")) is None
