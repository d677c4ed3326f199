"""Request limits per API key and sign-in attempts per client address: token buckets.

One API process keeps its buckets in memory (`LocalBuckets`). Several API processes behind a load balancer
must share them, or each replica would allow the whole limit again: with Redis configured
(`FEQA_RATE_LIMIT_BACKEND=auto`, the default, or `redis`) the buckets live in Redis (`SharedBuckets`), updated
by one atomic script that reads the time from the Redis server, so API hosts need not agree on their clocks.
The Redis keys hold a hash of who is limited (an API key id or a client address), never the value itself.
When Redis cannot be reached the process falls back to its own buckets for that request (the limit then holds
per process, as without Redis) and logs that once a minute, without the caller; it tries Redis again after
`RETRY_REDIS_S`, so a dead Redis costs one timeout every few seconds, not one per request.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from typing import Any, Protocol

log = logging.getLogger("feqa.api.ratelimit")
RETRY_REDIS_S = 5.0     # after a failed call, requests use the local buckets this long (no wait on a dead Redis)

# KEYS[1] the bucket; ARGV: rate per second, capacity, key expiry (s). Returns the seconds to wait (0: allowed).
_BUCKET_SCRIPT = """
local rate = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local v = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(v[1]) or cap
local ts = tonumber(v[2]) or now
tokens = math.min(cap, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens < 1 then
  wait = (1 - tokens) / rate
else
  tokens = tokens - 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return tostring(wait)
"""


class Limiter(Protocol):
    def check(self, who: str) -> float:
        """0 when allowed, else the seconds to wait."""
        ...


class LocalBuckets:
    """A token bucket per caller in this process: `per_minute` requests, bursts up to that; 0 disables."""

    def __init__(self, per_minute: int) -> None:
        self.rate = per_minute / 60.0
        self.capacity = float(per_minute)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, who: str) -> float:
        if self.capacity <= 0:
            return 0.0
        now = time.monotonic()
        with self._lock:
            if len(self._buckets) > 100_000:      # bounded: a flood of distinct callers cannot grow it
                self._buckets.clear()
            tokens, last = self._buckets.get(who, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if tokens < 1.0:
                self._buckets[who] = (tokens, now)
                return (1.0 - tokens) / self.rate
            self._buckets[who] = (tokens - 1.0, now)
            return 0.0


class SharedBuckets:
    """The same buckets in Redis, shared by every API process that uses the same Redis and `name`."""

    def __init__(self, per_minute: int, redis_url: str, name: str, *, client: Any = None,
                 timeout_s: float = 0.25) -> None:
        self.rate = per_minute / 60.0
        self.capacity = float(per_minute)
        self.name = name
        self._local = LocalBuckets(per_minute)
        if client is None:
            import redis
            client = redis.Redis.from_url(redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self._redis = client
        self._script = client.register_script(_BUCKET_SCRIPT)
        self._expiry_s = int(self.capacity / self.rate) + 60 if self.rate > 0 else 60
        self._warned = 0.0
        self._down_until = 0.0

    def key(self, who: str) -> str:
        digest = hashlib.sha256(who.encode()).hexdigest()[:32]
        return f"feqa:ratelimit:{self.name}:{digest}"

    def check(self, who: str) -> float:
        if self.capacity <= 0:
            return 0.0
        if time.monotonic() < self._down_until:      # Redis failed a moment ago: do not wait on it again yet
            return self._local.check(who)
        try:
            return float(self._script(keys=[self.key(who)], args=[self.rate, self.capacity, self._expiry_s]))
        except Exception as exc:   # Redis down or slow: this process's own buckets keep a limit in force
            now = time.monotonic()
            self._down_until = now + RETRY_REDIS_S
            if now - self._warned > 60:
                self._warned = now
                log.warning("rate limit %s: Redis unavailable (%s); limiting per API process meanwhile",
                            self.name, type(exc).__name__)
            return self._local.check(who)


def make_limiter(per_minute: int, name: str, *, backend: str, redis_url: str | None, scope: str = "") -> Limiter:
    """`backend`: "local" (this process), "redis" (shared; needs `redis_url`) or "auto" (Redis when configured).
    `scope` separates deployments that share one Redis (the service's queue name)."""
    if backend not in ("auto", "local", "redis"):
        raise ValueError(f"rate limit backend must be auto, local or redis, not {backend!r}")
    if backend == "redis" and not redis_url:
        raise ValueError("FEQA_RATE_LIMIT_BACKEND=redis needs REDIS_URL")
    if backend == "local" or not redis_url or per_minute <= 0:
        return LocalBuckets(per_minute)
    return SharedBuckets(per_minute, redis_url, f"{scope}:{name}" if scope else name)
