"""API benchmarks against real processes (see bench/servers.py):

- upload: POST of a ~5 MB video by `--clients` concurrent clients; p50/p95/p99 latency (target p99 <= 200 ms)
- status: GET /v1/assessments/{id} from concurrent clients on one API process (target >= 500/s)
- e2e: a 10 s 720p clip on the single-machine default (`feqa serve`, compact model) ready after
  upload within the target of 5 s

    .venv/bin/python -m bench.api_bench [--only upload,status,e2e] [--uploads 100] [--clients 20]

`main(argv) -> dict` returns the numbers (and the targets) for `make bench`.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
SHARED_VIDEOS = ROOT.parent / "shared" / "videos"
CLIP_720P = SHARED_VIDEOS / "tfjs-models_facemesh_input.mp4"   # 1080x720, 10.9 s, H.264
TARGETS = {"upload_p99_ms": 200.0, "status_reads_per_s": 500.0, "e2e_ready_s": 5.0}


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * len(s) + 0.5)) - 1))]


def five_mb_video(out: Path, size: int = 5 * 1024 * 1024) -> bytes:
    """A valid MP4 of about 5 MB: the 720p clip re-encoded at a bitrate that lands near `size`."""
    if out.is_file():
        return out.read_bytes()
    from fractions import Fraction

    import av

    part = out.with_suffix(".part.mp4")
    with av.open(str(CLIP_720P)) as src, av.open(str(part), "w") as dst:
        vin = src.streams.video[0]
        duration = float(vin.duration * vin.time_base)
        vout = dst.add_stream("libx264", rate=25)
        vout.width, vout.height, vout.pix_fmt = vin.codec_context.width, vin.codec_context.height, "yuv420p"
        vout.bit_rate = int(size * 8 / duration)
        vout.options = {"preset": "ultrafast"}
        for i, frame in enumerate(src.decode(vin)):
            frame = frame.reformat(format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            for packet in vout.encode(frame):
                dst.mux(packet)
        for packet in vout.encode():
            dst.mux(packet)
    part.rename(out)
    return out.read_bytes()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux): the API's own cost, apart from the load generator."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    import os

    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def with_cpu(stack, fn, *args) -> dict:
    pid = stack.procs[0].popen.pid
    c0 = cpu_seconds(pid)
    out = fn(stack, *args)
    cpu = cpu_seconds(pid) - c0
    out["api_cpu_ms_per_request"] = round(1000 * cpu / max(1, out["n"]), 2)
    out["api_requests_per_cpu_second"] = round(out["n"] / cpu, 1) if cpu else None
    return out


def summary(lat_s: list[float]) -> dict:
    ms = [x * 1000 for x in lat_s]
    return {"n": len(ms), "p50_ms": round(percentile(ms, 50), 1), "p95_ms": round(percentile(ms, 95), 1),
            "p99_ms": round(percentile(ms, 99), 1), "max_ms": round(max(ms), 1),
            "mean_ms": round(statistics.fmean(ms), 1)}


async def _run_clients(n_clients: int, n_requests: int, one) -> tuple[list[float], dict[int, int], float]:
    lat: list[float] = []
    codes: dict[int, int] = {}
    remaining = iter(range(n_requests))

    async def client_loop() -> None:
        async with httpx.AsyncClient(timeout=60) as http:
            for _ in remaining:
                t0 = time.perf_counter()
                code = await one(http)
                lat.append(time.perf_counter() - t0)
                codes[code] = codes.get(code, 0) + 1

    t0 = time.perf_counter()
    await asyncio.gather(*(client_loop() for _ in range(n_clients)))
    return lat, codes, time.perf_counter() - t0


def bench_upload(stack, key: str, video: bytes, clients: int, uploads: int) -> dict:
    url = f"{stack.base_url}/v1/assessments"
    headers = {"X-API-Key": key}

    async def one(http: httpx.AsyncClient) -> int:
        r = await http.post(url, headers=headers, files=[("video", ("v.mp4", video, "video/mp4"))],
                            data={"expression": "smile"})
        return r.status_code

    lat, codes, wall = asyncio.run(_run_clients(clients, uploads, one))
    return {"video_mb": round(len(video) / 2**20, 2), "clients": clients, **summary(lat), "codes": codes,
            "uploads_per_s": round(len(lat) / wall, 1), "target_p99_ms": TARGETS["upload_p99_ms"]}


def bench_status(stack, key: str, video: bytes, clients: int, seconds: float) -> dict:
    with stack.client(key) as http:
        aid = http.post("/v1/assessments", files=[("video", ("v.mp4", video, "video/mp4"))],
                        data={"expression": "smile"}).json()["id"]
    url = f"{stack.base_url}/v1/assessments/{aid}"
    headers = {"X-API-Key": key}
    stop = time.perf_counter() + seconds

    async def one(http: httpx.AsyncClient) -> int:
        return (await http.get(url, headers=headers)).status_code

    async def timed() -> tuple[list[float], dict[int, int], float]:
        lat: list[float] = []
        codes: dict[int, int] = {}

        async def loop() -> None:
            async with httpx.AsyncClient(timeout=30) as http:
                while time.perf_counter() < stop:
                    t0 = time.perf_counter()
                    c = await one(http)
                    lat.append(time.perf_counter() - t0)
                    codes[c] = codes.get(c, 0) + 1

        t0 = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(clients)))
        return lat, codes, time.perf_counter() - t0

    lat, codes, wall = asyncio.run(timed())
    return {"clients": clients, "seconds": round(wall, 1), "reads_per_s": round(len(lat) / wall, 1), **summary(lat),
            "codes": codes, "target_reads_per_s": TARGETS["status_reads_per_s"]}


def bench_e2e(tmp: Path, model_dir: Path, runs: int, clip: Path = CLIP_720P) -> dict:
    from bench.servers import feqa_serve

    video = clip.read_bytes()
    times = []
    with feqa_serve(tmp / "e2e", model_dir=model_dir) as stack, stack.client() as http:
        for _ in range(runs):
            t0 = time.perf_counter()
            r = http.post("/v1/assessments", files=[("video", ("v.mp4", video, "video/mp4"))],
                          data={"expression": "smile"})
            body = stack.wait_done(http, r.json()["id"], timeout=120)
            times.append(time.perf_counter() - t0)
            res = body["items"][0].get("result") or {}
            # The worker draws the pictures after publishing the score; let it finish before the next
            # run, so that each run measures an idle service.
            deadline = time.monotonic() + 60
            while body["status"] == "succeeded" and not all(body["items"][0]["links"].values()) \
                    and time.monotonic() < deadline:
                time.sleep(0.2)
                body = http.get(r.json()["url"]).json()
        timings = res.get("timings", {})
    return {"clip": clip.name, "abstained": res.get("abstained"), "runs": runs, "ready_s": [round(t, 2) for t in times],
            "median_ready_s": round(statistics.median(times), 2), "status": body["status"],
            "worker_stage_s": timings, "target_ready_s": TARGETS["e2e_ready_s"]}


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="api_bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--only", default="upload,status,e2e")
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--uploads", type=int, default=100)
    p.add_argument("--status-seconds", type=float, default=10.0)
    p.add_argument("--e2e-runs", type=int, default=3)
    p.add_argument("--clip", type=Path, default=CLIP_720P, help="end-to-end clip (default: 10.9 s 1080x720)")
    p.add_argument("--model-dir", type=Path, default=None, help="default: untrained compact models exported once")
    p.add_argument("--work-dir", type=Path, default=ROOT / "var" / "bench")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    sys.path.insert(0, str(ROOT))
    from bench.servers import feqa_stack, untrained_models

    args = parse(argv)
    only = set(args.only.split(","))
    args.work_dir.mkdir(parents=True, exist_ok=True)
    out: dict = {"targets": TARGETS}
    with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp_s:
        tmp = Path(tmp_s)
        if only & {"upload", "status"}:
            video = five_mb_video(args.work_dir / "clip-5mb.mp4")
            # No worker: the numbers are the API's own (probe, storage, store, broker send).
            with feqa_stack(tmp / "api", workers=0, ready=False,
                            env={"FEQA_RATE_LIMIT_PER_MINUTE": "0"}) as stack:
                key = stack.create_key("bench")
                if "upload" in only:
                    out["upload"] = with_cpu(stack, bench_upload, key, video, args.clients, args.uploads)
                if "status" in only:
                    out["status"] = with_cpu(stack, bench_status, key, video, args.clients, args.status_seconds)
        if "e2e" in only:
            model_dir = args.model_dir or untrained_models(args.work_dir / "models-untrained", ["smile"])
            out["e2e"] = bench_e2e(tmp, model_dir, args.e2e_runs, args.clip)
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), indent=2))
