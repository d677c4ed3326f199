"""Throughput: videos per minute with 1, 2 and 4 worker processes against one API.

Each run starts a fresh API + N Celery worker processes (solo pool, one process each, as
`feqa worker` runs one process per GPU), submits `jobs` uploads of the same clip at once, and measures
the wall time from the first upload to the last result. Broker: the shared Redis at 127.0.0.1:6379 when
it answers (a private queue), else the single-machine SQLite broker.

    .venv/bin/python -m bench.throughput [--workers 1,2,4] [--jobs 8] [--video PATH]
"""
from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VIDEO = ROOT.parent / "shared" / "videos" / "tfjs-models_facemesh_input.mp4"
FALLBACK_VIDEO = ROOT / "tests" / "data" / "pyfeat_single_face.mp4"


def redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def one_run(tmp: Path, model_dir: Path, video: bytes, workers: int, jobs: int, broker: str) -> dict:
    from bench.servers import feqa_stack

    with feqa_stack(tmp / f"w{workers}", model_dir=model_dir, broker=broker, workers=workers,
                    env={"FEQA_RATE_LIMIT_PER_MINUTE": "0"}) as stack:
        deadline = time.monotonic() + 60          # every worker reports ready, not just the first
        while len(stack.client().get("/readyz").json()["checks"]["workers"]) < workers:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only some of {workers} workers became ready")
            time.sleep(0.3)
        key = stack.create_key("bench")
        with stack.client(key, timeout=120) as http:
            t0 = time.perf_counter()
            ids = [http.post("/v1/assessments", files={"video": ("v.mp4", video, "video/mp4")},
                             data={"expression": "smile"}).json()["id"] for _ in range(jobs)]
            bodies = [stack.wait_done(http, aid, timeout=600) for aid in ids]
            wall = time.perf_counter() - t0
    ok = sum(b["status"] == "succeeded" for b in bodies)
    return {"workers": workers, "jobs": jobs, "succeeded": ok, "wall_s": round(wall, 2),
            "videos_per_min": round(60 * jobs / wall, 2), "s_per_video": round(wall / jobs, 2)}


def main(argv: list[str] | None = None) -> dict:
    sys.path.insert(0, str(ROOT))
    from bench.servers import untrained_models

    p = argparse.ArgumentParser(prog="bench.throughput", description=__doc__.splitlines()[0])
    p.add_argument("--workers", default="1,2,4")
    p.add_argument("--jobs", type=int, default=8)
    p.add_argument("--video", type=Path, default=DEFAULT_VIDEO if DEFAULT_VIDEO.is_file() else FALLBACK_VIDEO)
    p.add_argument("--model-dir", type=Path, default=None)
    p.add_argument("--work-dir", type=Path, default=ROOT / "var" / "bench")
    args = p.parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    model_dir = args.model_dir or untrained_models(args.work_dir / "models-untrained", ["smile"])
    broker = "redis" if redis_up() else "sqlite"
    video = args.video.read_bytes()
    runs = []
    with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp:
        for n in (int(x) for x in args.workers.split(",")):
            runs.append(one_run(Path(tmp), model_dir, video, n, args.jobs, broker))
    return {"video": args.video.name, "broker": broker, "pool": "solo, one process per worker", "runs": runs}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), indent=2))
