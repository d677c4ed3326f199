"""What the worker fleet serves, read from the heartbeats in the job store: per worker its model
versions and whether it is busy, and the version skew (one expression served by more than one model
version, as during a rollout). /readyz and /metrics report it; the queue length comes from the broker."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from worker.jobs.store import Store
from worker.settings import Settings

log = logging.getLogger("feqa.api")


@dataclass
class WorkerView:
    id: str
    models: dict[str, dict]          # expression -> {"name", "version", "sha256"}
    busy: bool
    busy_s: float | None
    up_s: float | None
    queue: str | None
    face_models: list = field(default_factory=list)


@dataclass
class Fleet:
    workers: list[WorkerView] = field(default_factory=list)
    skew: dict[str, list[dict]] = field(default_factory=dict)   # expression -> the versions served

    @property
    def busy_share(self) -> float:
        return sum(w.busy for w in self.workers) / len(self.workers) if self.workers else 0.0


def fleet(store: Store, settings: Settings) -> Fleet:
    out = Fleet()
    served: dict[str, dict[str, dict]] = {}
    for hb in store.ready_workers(settings.heartbeat_max_age_s):
        detail = hb.detail or {}
        models = {m.get("expression"): {k: m.get(k) for k in ("name", "version", "sha256")}
                  for m in hb.models or [] if m.get("expression")}
        out.workers.append(WorkerView(hb.worker_id, models, bool(detail.get("busy")), detail.get("busy_s"),
                                      detail.get("up_s"), detail.get("queue"),
                                      [m.get("name") for m in detail.get("face_models") or []]))
        for expression, m in models.items():
            served.setdefault(expression, {})[str(m.get("sha256"))] = m
    out.skew = {e: sorted(v.values(), key=lambda m: (str(m.get("version")), str(m.get("sha256"))))
                for e, v in sorted(served.items()) if len(v) > 1}
    return out


def broker_queue_lengths(settings: Settings) -> dict[str, int] | None:
    """Messages waiting in the broker per queue (Redis lists; Celery's priority sub-queues counted
    with their queue). None when the broker is not Redis or does not answer."""
    url = settings.celery_broker_url
    if not url.startswith(("redis://", "rediss://")):
        return None
    try:
        import redis

        r = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        try:
            q = settings.queue
            names = [q, *(f"{q}\x06\x16{n}" for n in range(1, 10))]
            with r.pipeline() as p:
                for name in names:
                    p.llen(name)
                return {q: int(sum(p.execute()))}
        finally:
            r.close()
    except Exception as exc:   # a metrics scrape must not fail because the broker is away
        log.warning("broker queue length unavailable (%s)", type(exc).__name__)
        return None
