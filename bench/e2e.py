"""`feqa bench e2e`: seconds from upload to result for a 10 s 720p clip on `feqa serve` (bench.api_bench)."""
from __future__ import annotations


def main(argv: list[str] | None = None) -> dict:
    from bench.api_bench import main as api_main

    return api_main(["--only", "e2e", *(argv or [])])
