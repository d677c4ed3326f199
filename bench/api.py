"""`feqa bench api`: upload latency under concurrent clients and status reads per second (bench.api_bench)."""
from __future__ import annotations


def main(argv: list[str] | None = None) -> dict:
    from bench.api_bench import main as api_main

    return api_main(["--only", "upload,status", *(argv or [])])
