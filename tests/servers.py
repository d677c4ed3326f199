"""The real-server helpers of the test suite live in bench/servers.py (the benchmarks start the same
servers, and bench/ does not import the tests). Tests may import them from either module."""
from __future__ import annotations

from bench.servers import (  # noqa: F401  (re-exported for the tests)
    PYTHON,
    REDIS_HOST,
    ROOT,
    Proc,
    Stack,
    api_cmd,
    api_server,
    feqa_serve,
    feqa_stack,
    free_port,
    postgres_url,
    service_env,
    start,
    untrained_models,
    wait_listening,
    wait_ready,
    worker_cmd,
)
