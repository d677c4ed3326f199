"""Prometheus metrics: request count and latency (middleware), queue depth and per-stage job
durations (read from the job store at scrape time, since the workers are other processes), the
scaling signals (broker queue length per queue, worker busy share) and the model versions each worker
serves with a skew flag per expression (service/api/fleet.py)."""
from __future__ import annotations

import time
from collections.abc import Iterator

from fastapi import APIRouter, Request, Response
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.fleet import broker_queue_lengths, fleet
from worker.jobs.status import IN_FLIGHT
from worker.jobs.store import Store
from worker.settings import Settings

router = APIRouter(tags=["operations"])


class StoreCollector:
    def __init__(self, store: Store, settings: Settings | None = None) -> None:
        self.store, self.settings = store, settings

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("feqa_queue_depth", "Items waiting or running", labels=["status"])
        counts = self.store.queue_depth()
        for status in IN_FLIGHT:
            depth.add_metric([status], counts.get(status, 0))
        yield depth
        stages = SummaryMetricFamily("feqa_job_stage_seconds", "Time spent per job stage", labels=["stage"])
        for stage, n, total in self.store.stage_stats():
            stages.add_metric([stage], count_value=n, sum_value=total)
        yield stages
        if self.settings is not None:
            yield from self._fleet(self.settings)

    def _fleet(self, settings: Settings) -> Iterator[Metric]:
        lengths = broker_queue_lengths(settings)
        if lengths is not None:
            broker = GaugeMetricFamily("feqa_broker_queue_length", "Messages waiting in the broker per queue "
                                       "(scale workers on this)", labels=["queue"])
            for q, n in lengths.items():
                broker.add_metric([q], n)
            yield broker
        f = fleet(self.store, settings)
        yield GaugeMetricFamily("feqa_workers_ready", "Workers with warmed models and a fresh heartbeat",
                                value=len(f.workers))
        yield GaugeMetricFamily("feqa_workers_busy", "Ready workers running a task now",
                                value=sum(w.busy for w in f.workers))
        yield GaugeMetricFamily("feqa_worker_busy_share", "Share of ready workers running a task now (0..1)",
                                value=f.busy_share)
        busy = CounterMetricFamily("feqa_worker_busy_seconds", "Seconds the worker process spent in tasks; "
                                   "rate() over feqa_worker_up_seconds is its busy share", labels=["worker"])
        up = GaugeMetricFamily("feqa_worker_up_seconds", "Seconds since the worker process started",
                               labels=["worker"])
        info = GaugeMetricFamily("feqa_worker_model_info", "A model version a worker serves (1)",
                                 labels=["worker", "expression", "name", "version", "sha256"])
        for w in f.workers:
            if w.busy_s is not None:
                busy.add_metric([w.id], w.busy_s)
            if w.up_s is not None:
                up.add_metric([w.id], w.up_s)
            for expression, m in sorted(w.models.items()):
                info.add_metric([w.id, expression, str(m.get("name")), str(m.get("version")),
                                 str(m.get("sha256"))], 1)
        yield from (busy, up, info)
        skew = GaugeMetricFamily("feqa_model_version_skew", "1 when ready workers serve more than one version "
                                 "of this expression's model", labels=["expression"])
        expressions = sorted({e for w in f.workers for e in w.models})
        for e in expressions:
            skew.add_metric([e], 1 if e in f.skew else 0)
        yield skew


class Metrics:
    def __init__(self, store: Store, settings: Settings | None = None) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("feqa_http_requests", "HTTP requests", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("feqa_http_request_duration_seconds", "HTTP request latency",
                                 ["method", "route"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5, 10))
        self.registry.register(StoreCollector(store, settings))



class MetricsMiddleware:
    """Plain ASGI middleware (BaseHTTPMiddleware would add a task and a stream per request)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), [500]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            # The route template, not the path: ids must not explode the label set.
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(scope["method"], route, str(status[0])).inc()
            self.metrics.latency.labels(scope["method"], route).observe(time.perf_counter() - start)


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
