"""`make bench` / `python -m bench`: the whole benchmark suite in one command.

Sections (each may be chosen with --only):
  model       ms per sample, paper and compact, PyTorch eager and onnxruntime (model.bench)
  paper_int8  the paper network at batch 1, 2 threads: fp32 beside int8 variants, score drift on the reference
              fixture weights (bench.paper_int8)
  extract     extraction frames/s beside the decode-only floor, tracking speed (worker.bench)
  peers       FEQA's face tracker beside MediaPipe's FaceMesh on the shared videos (bench/peers/; builds a side
              virtualenv var/peers/mediapipe-venv on its first run)
  api         upload latency p50/p99, 20 concurrent clients, ~5 MB video; status reads/s (bench.api_bench)
  e2e         seconds from upload to result for a 10 s 720p clip on `feqa serve` (bench.api_bench)
  throughput  videos per minute with 1, 2 and 4 worker processes (bench.throughput)
  invariance  whole-recording score spread over placements of the same movement, and its cost (bench.invariance)
  segmentation known repetitions found per task in simulated whole recordings (bench.segmentation)

Prints a table and writes JSON (with the machine description) to bench/results/latest.json.

    .venv/bin/python -m bench                         # everything (about 10-15 minutes on 2 cores)
    .venv/bin/python -m bench --only model,api --quick
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SECTIONS = ("model", "paper_int8", "extract", "peers", "api", "e2e", "throughput", "invariance", "segmentation")


# --- the machine ---------------------------------------------------------------------------------
def _cpuinfo_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
        return getattr(mod, "__version__", None)
    except Exception:   # a missing optional library is reported as None
        return None


def busy_processes(limit: int = 5) -> list[str]:
    """The busiest other processes (command name and CPU %), to say what else was running."""
    try:
        out = subprocess.run(["ps", "-eo", "pcpu,comm", "--sort=-pcpu", "--no-headers"], capture_output=True,
                             text=True, timeout=5).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return []
    return [" ".join(line.split()) for line in out[:limit]]


def machine() -> dict:
    import onnxruntime as ort

    return {
        "cpu_model": _cpuinfo_model(), "cpu_cores": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": _mem_gib(), "os": platform.platform(), "python": platform.python_version(),
        "onnxruntime": ort.__version__, "onnxruntime_providers": ort.get_available_providers(),
        "torch": _version("torch"), "numpy": _version("numpy"), "opencv": _version("cv2"), "av": _version("av"),
        "gpu": None if "CUDAExecutionProvider" not in ort.get_available_providers() else "CUDA",
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "busy_processes_start": busy_processes(),
    }


# --- sections --------------------------------------------------------------------------------------
def run_model(quick: bool) -> dict:
    from model import bench as model_bench

    def ns(configs: list[str], batches: list[int]) -> argparse.Namespace:
        return argparse.Namespace(configs=configs, batches=batches, threads=os.cpu_count() or 1,
                                  reps=1 if quick else 2, no_eager=False, int8=False, json=None)

    # The paper model costs seconds per sample on a CPU: batch 1 only, so the suite stays in minutes.
    res = model_bench.main(ns(["paper"], [1]))
    res["configs"] += model_bench.main(ns(["compact"], [1] if quick else [1, 8]))["configs"]
    return res


def run_extract(quick: bool) -> dict:
    from worker import bench as worker_bench

    res = worker_bench.main({"frames": 60 if quick else 150, "jitter_steps": 10 if quick else 40,
                             "overlap_reps": 1 if quick else 3})
    d, ex = res["decode"], res["extraction"]
    frames = d["decoded_frames"]
    res["summary"] = {
        "extract_frames_per_s": round(frames / ex["extract_s"], 1),
        "decode_only_frames_per_s": round(frames / d["decode_only_s"], 1),
        "extract_over_decode": round(ex["extract_s"] / d["decode_only_s"], 2),
    }
    return res


def run_paper_int8(quick: bool) -> dict:
    from bench import paper_int8

    return paper_int8.main(["--reps", "1", "--parts", "rgb"] if quick else [])


def run_peers(quick: bool) -> dict:
    from bench.peers import mediapipe_facemesh

    return mediapipe_facemesh.main(["--max-frames", "60"] if quick else [])


def run_api(quick: bool) -> dict:
    from bench import api_bench

    return api_bench.main(["--only", "upload,status", "--clients", "20", "--uploads", "40" if quick else "100",
                           "--status-seconds", "3" if quick else "10"])


def run_e2e(quick: bool) -> dict:
    from bench import api_bench

    return api_bench.main(["--only", "e2e", "--e2e-runs", "1" if quick else "3"])


def run_throughput(quick: bool) -> dict:
    from bench import throughput

    return throughput.main(["--workers", "1,2,4", "--jobs", "4" if quick else "8"]
                           + (["--video", str(throughput.FALLBACK_VIDEO)] if quick else []))


def run_invariance(quick: bool) -> dict:
    from bench import invariance

    return invariance.main(["--quick"] if quick else [])


def run_segmentation(quick: bool) -> dict:
    from bench import segmentation

    return segmentation.main(["--severities", "2"] if quick else [])


RUNNERS = {"model": run_model, "paper_int8": run_paper_int8, "extract": run_extract, "peers": run_peers,
           "api": run_api, "e2e": run_e2e, "throughput": run_throughput, "invariance": run_invariance,
           "segmentation": run_segmentation}


# --- the table -------------------------------------------------------------------------------------
def rows(results: dict) -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    m = results.get("model", {})
    for cfg in m.get("configs", []):
        for engine, label in (("torch_eager", "PyTorch"), ("onnxruntime", "onnxruntime")):
            for b, t in cfg.get(engine, {}).items():
                if isinstance(t, dict) and "ms_per_sample" in t:
                    cpu = f"process CPU {t['cpu_ms_per_sample']:.1f} ms" if "cpu_ms_per_sample" in t else ""
                    out.append((f"model {cfg['config']} {label} {b}", f"{t['ms_per_sample']:.1f} ms/sample", cpu))
    ex = results.get("extract", {})
    if "summary" in ex:
        s = ex["summary"]
        out.append(("extraction (whole clip)", f"{s['extract_frames_per_s']} frames/s",
                    f"{ex['extraction']['extract_s']} s for {ex['decode']['duration_s']} s of video"))
        out.append(("decode-only floor", f"{s['decode_only_frames_per_s']} frames/s",
                    f"extraction = {s['extract_over_decode']}x decode"))
        out.append(("tracking 1280x720", f"{ex['tracking_1280x720']['tracking_fps']} frames/s", "target >= 150"))
    ov = ex.get("overlap")
    if ov:
        out.append(("extraction / max(decode-only, tracking-only)", f"{ov['extract_over_floor_min']}x",
                    f"best of {ov['reps']}: extract {ov['extraction']['wall_min_s']} s, decode "
                    f"{ov['decode']['wall_min_s']} s, tracking {ov['tracking']['wall_min_s']} s; target <= 1.1"))
    for name, v in results.get("paper_int8", {}).get("variants", {}).items():
        out.append((f"paper {name}, batch 1, 2 threads", f"{v['wall_s_min']} s/sample",
                    f"CPU {v['cpu_s_min']} s ({v['cpu_vs_fp32']}x fp32); drift vs fp32 {v['drift_fixture']:.1e}"))
    peer = results.get("peers", {}).get("overall")
    if peer:
        ms, err = peer["ms_per_frame"], peer["error_iod"]
        out.append(("tracking vs MediaPipe FaceMesh (CPU ms/frame)", f"{ms['feqa']} vs {ms['mediapipe']}",
                    f"ratio {peer['ratio']}; landmark error median {err['median']} p95 {err['p95']} IOD, "
                    f"{peer['frames']} frames"))
    up = results.get("api", {}).get("upload")
    if up:
        out.append((f"upload {up['video_mb']} MB, {up['clients']} clients",
                    f"p50 {up['p50_ms']} ms, p99 {up['p99_ms']} ms", f"{up['uploads_per_s']} uploads/s"))
    st = results.get("api", {}).get("status")
    if st:
        out.append((f"status reads, {st['clients']} clients", f"{st['reads_per_s']} reads/s",
                    f"p99 {st['p99_ms']} ms"))
    e2e = results.get("e2e", {}).get("e2e")
    if e2e:
        out.append(("end-to-end 10 s 720p clip (feqa serve)", f"{e2e['median_ready_s']} s",
                    f"runs {e2e['ready_s']}"))
    inv = results.get("invariance", {})
    if inv.get("median_spread") is not None:
        out.append(("whole-recording score spread over placements", f"median {inv['median_spread']}, "
                    f"worst {inv['worst_spread']}", f"targets <= 0.25 / <= 0.5, {len(inv['clips'])} clips"))
    seg = results.get("segmentation", {})
    if seg.get("known"):
        out.append(("known repetitions found, simulated recordings", f"{seg['found']}/{seg['known']}",
                    f"false {seg['false']}; per task in the section's output"))
    if inv.get("cost"):
        c = inv["cost"]
        out.append(("whole recording vs single window, 10.9 s 720p", f"{c['added_pct']:+.1f}%",
                    f"{c['single_window_s']} s -> {c['whole_recording_s']} s, target <= +25%"))
    for run in results.get("throughput", {}).get("runs", []):
        out.append((f"throughput, {run['workers']} worker process(es)", f"{run['videos_per_min']} videos/min",
                    f"{run['jobs']} jobs, {run['succeeded']} ok, {run['wall_s']} s"))
    return out


def table(results: dict) -> str:
    r = rows(results)
    if not r:
        return "(no results)"
    w0, w1 = max(len(a) for a, _, _ in r), max(len(b) for _, b, _ in r)
    lines = [f"{'measurement':{w0}s}  {'value':{w1}s}  note", "-" * (w0 + w1 + 30)]
    lines += [f"{a:{w0}s}  {b:{w1}s}  {c}" for a, b, c in r]
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--quick", action="store_true", help="fewer repetitions and requests (a smoke run)")
    p.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    args = p.parse_args(argv)
    unknown = set(args.only.split(",")) - set(SECTIONS)
    if unknown:
        p.error(f"unknown section(s): {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT))
    args = parse(argv)
    chosen = [s for s in SECTIONS if s in args.only.split(",")]
    report: dict = {"started_at": datetime.now(UTC).isoformat(timespec="seconds"), "quick": args.quick,
                    "sections": chosen, "machine": machine(), "results": {}, "errors": {}, "seconds": {}}
    for name in chosen:
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        try:
            report["results"][name] = RUNNERS[name](args.quick)
        except Exception as exc:   # one broken section must not hide the others' numbers
            report["errors"][name] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        report["seconds"][name] = round(time.perf_counter() - t0, 1)
    report["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    report["machine"]["busy_processes_end"] = busy_processes()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    mach = report["machine"]
    print(f"\nmachine: {mach['cpu_model']}, {mach['cpu_cores']} cores, {mach['memory_gib']} GiB, python "
          f"{mach['python']}, onnxruntime {mach['onnxruntime']}, torch {mach['torch']}, GPU: {mach['gpu'] or 'none'}; "
          f"load average {mach['loadavg_start']} -> {mach['loadavg_end']}")
    print(table(report["results"]))
    for name, err in report["errors"].items():
        print(f"!! {name} failed: {err}")
    print(f"\nwritten: {args.out}")
    return 1 if report["errors"] else 0
