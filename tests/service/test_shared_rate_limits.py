"""Limits shared by every API process: with Redis configured, two API replicas behind one load balancer allow
one key its limit once, not once each; without Redis (or while it is down) each process limits on its own."""
from __future__ import annotations

import logging
import uuid

import httpx
import pytest
import redis

from bench.servers import REDIS_HOST, api_server, feqa_stack
from service.api.ratelimit import LocalBuckets, SharedBuckets, make_limiter

REDIS_URL = f"redis://{REDIS_HOST}:6379/11"


@pytest.fixture()
def scope():
    name = f"test-{uuid.uuid4().hex[:8]}"
    yield name
    r = redis.Redis.from_url(REDIS_URL)
    for k in r.scan_iter(f"feqa:ratelimit:{name}*"):
        r.delete(k)


def test_two_processes_share_one_bucket_per_caller(scope):
    a = SharedBuckets(5, REDIS_URL, scope)      # two API processes: two clients, one Redis
    b = SharedBuckets(5, REDIS_URL, scope)
    waits = [(a if i % 2 else b).check("key-1") for i in range(7)]
    assert waits[:5] == [0.0] * 5 and all(w > 0 for w in waits[5:])
    assert 0 < waits[5] <= 12.5                 # 5 a minute: the next token within 12 s
    assert a.check("key-2") == 0.0              # another caller has its own bucket
    assert SharedBuckets(5, REDIS_URL, scope + "-other").check("key-1") == 0.0   # another deployment too
    keys = [k.decode() for k in redis.Redis.from_url(REDIS_URL).scan_iter(f"feqa:ratelimit:{scope}:*")]
    assert keys and not any("key-1" in k or "key-2" in k for k in keys)   # a hash, never the caller itself
    ttl = redis.Redis.from_url(REDIS_URL).ttl(keys[0])
    assert 0 < ttl <= 120                       # the buckets expire once full again


def test_redis_down_falls_back_to_this_process_and_says_so_without_the_caller(caplog):
    dead = SharedBuckets(3, "redis://127.0.0.1:1/0", "down", timeout_s=0.1)
    calls = []
    real = dead._script
    dead._script = lambda **kw: (calls.append(1), real(**kw))[1]
    with caplog.at_level(logging.WARNING, logger="feqa.api.ratelimit"):
        waits = [dead.check("secret-key-id") for _ in range(4)]
    assert waits[:3] == [0.0] * 3 and waits[3] > 0        # still limited, per process
    assert len(calls) == 1                                # one failed call; then no waiting on Redis for a while
    text = caplog.text
    assert "Redis unavailable" in text and "secret-key-id" not in text
    assert text.count("Redis unavailable") == 1           # once a minute, not per request


def test_backend_choice():
    assert isinstance(make_limiter(10, "x", backend="auto", redis_url=None), LocalBuckets)
    assert isinstance(make_limiter(10, "x", backend="local", redis_url=REDIS_URL), LocalBuckets)
    assert isinstance(make_limiter(10, "x", backend="auto", redis_url=REDIS_URL), SharedBuckets)
    assert isinstance(make_limiter(0, "x", backend="redis", redis_url=REDIS_URL), LocalBuckets)   # 0: no limit
    with pytest.raises(ValueError):
        make_limiter(10, "x", backend="redis", redis_url=None)


def test_two_real_api_replicas_enforce_one_limit_for_a_key(tmp_path):
    """Two `feqa` API processes on one Redis and store, as behind a load balancer; 6 requests a minute."""
    with feqa_stack(tmp_path, broker="redis", workers=0, ready=False,
                    env={"FEQA_RATE_LIMIT_PER_MINUTE": "6"}) as stack:
        key = stack.create_key("clinic-lb")
        with api_server(stack.env, stack.var_dir / "api2") as (second, _):
            codes, retry = [], []
            for i in range(10):
                base = stack.base_url if i % 2 == 0 else second
                r = httpx.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=30)
                codes.append(r.status_code)
                if r.status_code == 429:
                    assert r.json()["code"] == "rate_limited"
                    retry.append(int(r.headers["retry-after"]))
            assert codes.count(200) == 6, codes        # per process it would have been 10 x 200
            assert codes.count(429) == 4 and all(1 <= s <= 11 for s in retry), (codes, retry)
            assert 429 in codes[0::2] and 429 in codes[1::2]   # both replicas refuse once the shared bucket is empty
