"""Throughput: videos per minute with 1, 2 and 4 worker processes against one API.

Each run starts a fresh API + N Celery worker processes (solo pool, one process each, as
`feqa worker` runs one process per GPU), submits `jobs` uploads of the same clip at once, and measures
the wall time from the first upload to the last result. Broker: the shared Redis at 127.0.0.1:6379 when
it answers (a private queue), else the single-machine SQLite broker.

    .venv/bin/python -m bench.throughput [--workers 1,2,4] [--jobs 8] [--video PATH]
    feqa bench throughput --batching [--no-e2e] [--configs compact,paper] [--providers CPUExecutionProvider]

--batching adds the scorer figures (untrained smile models of each configuration, onnxruntime on the
given providers, one intra-op thread as a worker runs): ms per onnxruntime call at batch 1, 8 and 32 and
windows/s; and dynamic batching across jobs (model/batcher.py): `--jobs` concurrent jobs of
`--windows-per-video` windows each scored one call per job, then through one BatchingScorer, as videos
per minute of the scoring stage alone. On a CUDA host pass --providers CUDAExecutionProvider,CPUExecutionProvider.

--score-server runs each worker count a second time as a GPU host would: one `feqa scorer` process holding the
models (worker/score_server.py) and one prefork worker of N extraction processes scoring through it; the run
then also gives the scorer's onnxruntime calls and the most windows in one. Every run gives the GPU utilisation
(mean and peak from nvidia-smi every 0.5 s) where a GPU is present, else null.
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


class GpuSampler:
    """Mean and peak GPU utilisation (nvidia-smi, every 0.5 s) while a run lasts; None without a GPU."""

    def __init__(self) -> None:
        import shutil
        import threading

        self.samples: list[float] = []
        self._stop = threading.Event()
        self._smi = shutil.which("nvidia-smi")
        self._thread = threading.Thread(target=self._run, daemon=True) if self._smi else None

    def _run(self) -> None:
        import subprocess

        while not self._stop.wait(0.5):
            try:
                out = subprocess.run([str(self._smi), "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=5).stdout
                self.samples.append(max(float(v) for v in out.split()))
            except (OSError, ValueError, subprocess.SubprocessError):
                return

    def __enter__(self) -> GpuSampler:
        if self._thread:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(6)

    def figures(self) -> dict | None:
        if not self.samples:
            return None
        return {"mean_pct": round(sum(self.samples) / len(self.samples), 1), "max_pct": max(self.samples),
                "samples": len(self.samples)}


def one_run(tmp: Path, model_dir: Path, video: bytes, workers: int, jobs: int, broker: str,
            score_server: bool = False, providers: str | None = None) -> dict:
    """`workers` solo worker processes that each load the models; with `score_server`, one `feqa scorer`
    process holding the models and one prefork worker of `workers` processes that hold none."""
    from bench.servers import PYTHON, feqa_stack, start, worker_cmd

    env = {"FEQA_RATE_LIMIT_PER_MINUTE": "0"}
    if providers:
        env["FEQA_PROVIDERS"] = json.dumps(providers.split(","))
    sock = tmp / f"s{workers}" / "scorer.sock"
    if score_server:
        env["FEQA_SCORER_SOCKET"] = str(sock)
    with feqa_stack(tmp / (f"s{workers}" if score_server else f"w{workers}"), model_dir=model_dir, broker=broker,
                    workers=0 if score_server else workers, env=env, ready=False) as stack:
        if score_server:
            stack.procs.append(start("scorer", [PYTHON, "-m", "service.cli", "scorer", "--socket", str(sock)],
                                     stack.env, stack.var_dir / "logs"))
            deadline = time.monotonic() + 120
            while not sock.exists():
                if time.monotonic() > deadline or not stack.procs[-1].alive():
                    raise TimeoutError("the scorer process did not start: " + stack.logs())
                time.sleep(0.2)
            empty = tmp / f"s{workers}" / "no-models"
            empty.mkdir(exist_ok=True)
            stack.procs.append(start("worker-prefork", worker_cmd(pool="prefork", concurrency=workers),
                                     {**stack.env, "FEQA_MODEL_DIR": str(empty)}, stack.var_dir / "logs"))
        stack.wait_ready()
        deadline = time.monotonic() + 60          # every worker reports ready, not just the first
        while len(stack.client().get("/readyz").json()["checks"]["workers"]) < workers:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only some of {workers} workers became ready")
            time.sleep(0.3)
        key = stack.create_key("bench")
        with stack.client(key, timeout=120) as http, GpuSampler() as gpu:
            t0 = time.perf_counter()
            ids = [http.post("/v1/assessments", files={"video": ("v.mp4", video, "video/mp4")},
                             data={"expression": "smile"}).json()["id"] for _ in range(jobs)]
            bodies = [stack.wait_done(http, aid, timeout=600) for aid in ids]
            wall = time.perf_counter() - t0
        batches = None
        if score_server:
            from worker.score_server import RemoteScorer

            batches = RemoteScorer(sock, stack.env.get("FEQA_SECRET_KEY") or _default_secret()).stats()["batches"]
    ok = sum(b["status"] == "succeeded" for b in bodies)
    out = {"workers": workers, "jobs": jobs, "succeeded": ok, "wall_s": round(wall, 2),
           "videos_per_min": round(60 * jobs / wall, 2), "s_per_video": round(wall / jobs, 2),
           "layout": ("one scorer process + one prefork worker of N processes" if score_server
                      else "N solo worker processes, each with its models"),
           "gpu_utilisation": gpu.figures()}
    if batches is not None:
        out["scorer_calls"] = len(batches)
        out["windows_per_call_max"] = max(batches, default=0)
    return out


def _default_secret() -> str:
    from worker.settings import DEFAULT_SECRET

    return DEFAULT_SECRET


def _time_calls(fn, repeats: int) -> float:
    fn()                                          # first call allocates
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def batching_figures(work_dir: Path, configs: list[str], providers: list[str] | None, jobs: int,
                     windows_per_video: int, repeats: int = 5, batches: tuple[int, ...] = (1, 8, 32)) -> list[dict]:
    rows = []
    for config in configs:
        rows.append(_config_figures(work_dir, config, providers, jobs, windows_per_video, repeats, batches))
        print(f"{config}: {json.dumps(rows[-1])}", file=sys.stderr, flush=True)
    return rows


def _config_figures(work_dir: Path, config: str, providers: list[str] | None, jobs: int, windows_per_video: int,
                    repeats: int, batches: tuple[int, ...] = (1, 8, 32)) -> dict:
    import threading

    import numpy as np

    from model.batcher import BatchingScorer
    from model.scorer import Scorer

    d = work_dir / f"models-untrained-{config}"
    if not any(d.glob("smile-*.onnx")):
        from model.export import export_untrained

        export_untrained(d, expressions=["smile"], config=config)
    scorer = Scorer(d, providers=providers, intra_op_threads=1)
    c = scorer.contract("smile")
    rng = np.random.default_rng(0)

    def inputs(b: int):
        return (rng.normal(0, 0.05, (b, 63, c.tp, 5)).astype(np.float32),
                np.tile(2 * np.arange(c.tp, dtype=np.float32) / c.tp - 1, (b, 1)),
                rng.integers(100, 156, (b, c.tf, c.frame_size, c.frame_size, 3), dtype=np.uint8))
    row: dict = {"config": config, "providers": scorer.providers, "ms_per_batch": {}, "windows_per_s": {}}
    for b in batches:
        x = inputs(b)
        s = _time_calls(lambda x=x: scorer.score("smile", *x), repeats if b < 32 else max(2, repeats // 2))
        row["ms_per_batch"][b] = round(1000 * s, 2)
        row["windows_per_s"][b] = round(b / s, 1)
        print(f"{config}: batch {b}: {1000 * s:.1f} ms per call", file=sys.stderr, flush=True)
    video = [inputs(windows_per_video) for _ in range(jobs)]

    def per_job(score) -> float:
        start = threading.Barrier(jobs)

        def one(i: int) -> None:
            start.wait()
            score("smile", *video[i])
        threads = [threading.Thread(target=one, args=(i,)) for i in range(jobs)]
        t0 = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        return time.perf_counter() - t0
    direct = per_job(scorer.score)
    batcher = BatchingScorer(scorer, max_batch=32, max_wait_s=0.005)
    batched = per_job(batcher.score)
    batcher.close()
    row["scoring_videos_per_min"] = {"one_call_per_job": round(60 * jobs / direct, 1),
                                     "dynamic_batching": round(60 * jobs / batched, 1),
                                     "jobs": jobs, "windows_per_video": windows_per_video,
                                     "batch_sizes": sorted(set(batcher.batches))}
    return row


def main(argv: list[str] | None = None) -> dict:
    sys.path.insert(0, str(ROOT))
    from bench.servers import untrained_models

    p = argparse.ArgumentParser(prog="bench.throughput", description=__doc__.splitlines()[0])
    p.add_argument("--workers", default="1,2,4")
    p.add_argument("--jobs", type=int, default=8)
    p.add_argument("--video", type=Path, default=DEFAULT_VIDEO if DEFAULT_VIDEO.is_file() else FALLBACK_VIDEO)
    p.add_argument("--model-dir", type=Path, default=None)
    p.add_argument("--work-dir", type=Path, default=ROOT / "var" / "bench")
    p.add_argument("--batching", action="store_true", help="add the scorer batching figures")
    p.add_argument("--no-e2e", action="store_true", help="skip the API + worker runs")
    p.add_argument("--configs", default="compact,paper")
    p.add_argument("--providers", default=None, help="comma-separated onnxruntime providers")
    p.add_argument("--windows-per-video", type=int, default=15, help="windows one video scores (n_windows)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per batch size (median reported)")
    p.add_argument("--batches", default="1,8,32", help="batch sizes timed (paper at 32 needs ~20 GB on CPU)")
    p.add_argument("--score-server", action="store_true",
                   help="also run each worker count as one `feqa scorer` + a prefork worker of N processes")
    args = p.parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    report: dict = {}
    if args.batching:
        report["batching"] = batching_figures(args.work_dir, args.configs.split(","),
                                              args.providers.split(",") if args.providers else None, args.jobs,
                                              args.windows_per_video, args.repeats,
                                              tuple(int(b) for b in args.batches.split(",")))
    if args.no_e2e:
        return report
    model_dir = args.model_dir or untrained_models(args.work_dir / "models-untrained", ["smile"])
    broker = "redis" if redis_up() else "sqlite"
    video = args.video.read_bytes()
    runs = []
    with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp:
        for n in (int(x) for x in args.workers.split(",")):
            runs.append(one_run(Path(tmp), model_dir, video, n, args.jobs, broker, providers=args.providers))
            if args.score_server:
                runs.append(one_run(Path(tmp), model_dir, video, n, args.jobs, broker, score_server=True,
                                    providers=args.providers))
    return {**report, "video": args.video.name, "broker": broker, "runs": runs}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), indent=2))
