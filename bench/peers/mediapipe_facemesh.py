"""FEQA's face tracker beside Google MediaPipe's own FaceMesh, on the same decoded frames.

    .venv/bin/python bench/peers/mediapipe_facemesh.py [--videos A.mp4 B.mp4] [--max-frames N] [--json OUT]
    feqa bench extract --peer mediapipe          (the same, through worker.bench)
    make bench                                   (section "peers")

MediaPipe 0.10.21 pins numpy below 2, so it cannot live in the project's environment: the first run builds a
side virtualenv in var/peers/mediapipe-venv (mediapipe from PyPI, numpy<2, and the project's own onnxruntime
and PyAV versions) and runs the comparison there, in one process pinned to one CPU, so both trackers see the
same frames under the same load. FEQA's tracker is imported from this checkout (worker.face), unchanged.

Per video and overall it prints: the share of frames on which each found a face; FEQA's landmark error
against MediaPipe's in units of MediaPipe's inter-ocular distance (outer eye corners 33-263; mean over the 468
points, then median and p95 over frames both found a face on); jitter of each (mean distance of a point from
the midpoint of its previous and next positions, in the same units, median over frames: noise plus
acceleration, equal motion for both trackers); CPU ms per frame of each (process CPU time, which counts
MediaPipe's graph threads as well) and the ratio FEQA / MediaPipe, with the wall-clock figures beside.

MediaPipe runs its legacy `solutions.face_mesh` graph (short-range detector, 468 points, no iris refinement,
video mode: it re-detects only when the track is lost). FEQA runs `FaceTracker(FaceMesh(threads=1))` as
extraction does.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / "var" / "peers" / "mediapipe-venv"
VIDEOS = Path(os.environ.get("FEQA_SHARED", ROOT.parent / "shared")) / "videos"
MEDIAPIPE = "mediapipe==0.10.21"


def _requirements() -> list[str]:
    """What the side environment holds: MediaPipe and numpy<2, plus the project's onnxruntime and PyAV versions, and onnx
    so FEQA's tracker runs on the same runtime as in the service."""
    from importlib.metadata import version

    # onnx: whichever release still takes numpy<2 and MediaPipe's protobuf (FEQA uses it only to load its graphs)
    return [MEDIAPIPE, "numpy<2", *(f"{p}=={version(p)}" for p in ("onnxruntime", "av")), "onnx"]


def venv_python() -> Path:
    return VENV / "bin" / "python"


def ensure_venv(quiet: bool = True) -> Path:
    """Build (once) the side virtualenv; rebuilt when the requirement list changes."""
    reqs = _requirements()
    stamp = VENV / "feqa-requirements.txt"
    py = venv_python()
    if py.exists() and stamp.exists() and stamp.read_text().split() == reqs:
        return py
    print(f"building {VENV.relative_to(ROOT)} ({', '.join(reqs)}); this takes a few minutes once", file=sys.stderr)
    VENV.parent.mkdir(parents=True, exist_ok=True)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", *(["-q"] if quiet else []), *reqs], check=True)
    stamp.write_text("\n".join(reqs) + "\n")
    return py


# ------------------------------------------------------------------------------------------------------------
# inside the side environment

def _pin_one_cpu() -> int | None:
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    cpu = cpus[-1]
    os.sched_setaffinity(0, {cpu})
    return cpu


def _stats(values, digits: int = 5) -> dict:
    import numpy as np

    v = np.asarray(values, np.float64)
    if not v.size:
        return {"median": None, "p95": None, "n": 0}
    return {"median": round(float(np.median(v)), digits), "p95": round(float(np.percentile(v, 95)), digits),
            "n": int(v.size)}


def _jitter(track: list, iod: list) -> list[float]:
    """Second-difference jitter of a landmark track (None where no face), per frame with three faces in a row."""
    import numpy as np

    out = []
    for t in range(1, len(track) - 1):
        a, b, c = track[t - 1], track[t], track[t + 1]
        if a is None or b is None or c is None or not iod[t]:
            continue
        out.append(float(np.linalg.norm(b - (a + c) / 2, axis=1).mean() / iod[t]))
    return out


def _mediapipe_points(result, w: int, h: int):
    import numpy as np

    if not result.multi_face_landmarks:
        return None
    lms = result.multi_face_landmarks[0].landmark
    return np.array([(p.x * w, p.y * h) for p in lms], np.float64)


def _run_video(path: Path, fm_factory, tracker_factory, max_frames: int | None) -> dict:
    """Both trackers on every decoded frame of one video (25 fps, as extraction decodes)."""
    import numpy as np

    from worker.video import iter_frames

    mp_mesh, tracker = fm_factory(), tracker_factory()
    ours, theirs, iod = [], [], []
    cpu = {"feqa": 0.0, "mediapipe": 0.0}
    wall = {"feqa": 0.0, "mediapipe": 0.0}
    n = 0
    for fr in iter_frames(path, 25.0):
        if max_frames and n >= max_frames:
            break
        rgb = np.ascontiguousarray(fr.rgb)
        h, w = rgb.shape[:2]
        order = ("feqa", "mediapipe") if n % 2 == 0 else ("mediapipe", "feqa")   # no first-mover bias
        for who in order:
            c, t = time.process_time(), time.perf_counter()
            if who == "feqa":
                st = tracker.step(rgb)
                p_ours = None if st.pts is None else st.pts[:, :2].astype(np.float64)
            else:
                p_theirs = _mediapipe_points(mp_mesh.process(rgb), w, h)
            cpu[who] += time.process_time() - c
            wall[who] += time.perf_counter() - t
        ours.append(p_ours)
        theirs.append(p_theirs)
        iod.append(float(np.linalg.norm(p_theirs[263] - p_theirs[33])) if p_theirs is not None else 0.0)
        n += 1
    mp_mesh.close()
    err = [float(np.linalg.norm(a - b, axis=1).mean() / d) for a, b, d in zip(ours, theirs, iod, strict=True)
           if a is not None and b is not None and d > 0]
    return {
        "video": path.name, "frames": n,
        "size": f"{w}x{h}" if n else None,
        "face_share": {"feqa": round(sum(p is not None for p in ours) / max(1, n), 4),
                       "mediapipe": round(sum(p is not None for p in theirs) / max(1, n), 4)},
        "error_iod": _stats(err),
        "jitter_iod": {"feqa": _stats(_jitter(ours, iod)), "mediapipe": _stats(_jitter(theirs, iod))},
        "cpu_s": {k: round(v, 4) for k, v in cpu.items()},
        "wall_s": {k: round(v, 4) for k, v in wall.items()},
        "_err": err,
        "_jit": {"feqa": _jitter(ours, iod), "mediapipe": _jitter(theirs, iod)},
    }


def inner(args: argparse.Namespace) -> dict:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    cpu_pinned = _pin_one_cpu()
    import mediapipe as mp
    import numpy as np

    from worker.face import FaceMesh, FaceTracker

    mesh = FaceMesh(threads=1)

    def fm_factory():
        return mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=False,
                                               min_detection_confidence=0.5, min_tracking_confidence=0.5)

    def tracker_factory():
        return FaceTracker(mesh, redetect_every=args.redetect_every)

    videos = [Path(v) for v in args.videos] if args.videos else sorted(
        p for p in VIDEOS.iterdir() if p.suffix.lower() in (".mp4", ".mov", ".webm", ".mkv"))
    # warm-up (graph start, first-call allocations) outside the timings
    from worker.video import iter_frames
    first = np.ascontiguousarray(next(iter(iter_frames(videos[0], 25.0))).rgb)
    warm = fm_factory()
    for _ in range(3):
        warm.process(first)
        tracker_factory().step(first)
    warm.close()

    per = [_run_video(v, fm_factory, tracker_factory, args.max_frames) for v in videos]
    n = sum(r["frames"] for r in per)
    cpu = {k: sum(r["cpu_s"][k] for r in per) for k in ("feqa", "mediapipe")}
    wall = {k: sum(r["wall_s"][k] for r in per) for k in ("feqa", "mediapipe")}
    err = [e for r in per for e in r.pop("_err")]
    jit = {k: [j for r in per for j in r["_jit"][k]] for k in ("feqa", "mediapipe")}
    for r in per:
        r.pop("_jit")
        r["ms_per_frame"] = {k: round(1000 * r["cpu_s"][k] / max(1, r["frames"]), 3) for k in cpu}
        r["ratio"] = round(r["cpu_s"]["feqa"] / r["cpu_s"]["mediapipe"], 3) if r["cpu_s"]["mediapipe"] else None
    import cv2
    import onnxruntime

    overall = {
        "frames": n,
        "face_share": {k: round(sum(r["face_share"][k] * r["frames"] for r in per) / max(1, n), 4)
                       for k in ("feqa", "mediapipe")},
        "error_iod": _stats(err),
        "jitter_iod": {k: _stats(v) for k, v in jit.items()},
        "ms_per_frame": {k: round(1000 * v / max(1, n), 3) for k, v in cpu.items()},
        "wall_ms_per_frame": {k: round(1000 * v / max(1, n), 3) for k, v in wall.items()},
        "ratio": round(cpu["feqa"] / cpu["mediapipe"], 3) if cpu["mediapipe"] else None,
        "wall_ratio": round(wall["feqa"] / wall["mediapipe"], 3) if wall["mediapipe"] else None,
    }
    return {"videos": per, "overall": overall,
            "setup": {"cpu_pinned": cpu_pinned, "loadavg": [round(x, 2) for x in os.getloadavg()],
                      "mediapipe": mp.__version__, "numpy": np.__version__, "onnxruntime": onnxruntime.__version__,
                      "opencv": cv2.__version__, "redetect_every": args.redetect_every,
                      "timing": "process CPU time around each call, one process pinned to one CPU"}}


# ------------------------------------------------------------------------------------------------------------

def table(res: dict) -> str:
    def pct(x):
        return "-" if x is None else f"{100 * x:.2f}%"

    head = (f"{'video':42s} {'frames':>6s} {'found F/MP':>11s} {'err med':>8s} {'err p95':>8s} "
            f"{'jit F':>7s} {'jit MP':>7s} {'ms F':>6s} {'ms MP':>6s} {'ratio':>6s}")
    lines = [head, "-" * len(head)]
    rows = [*res["videos"], {**res["overall"], "video": "overall",
                             "ms_per_frame": res["overall"]["ms_per_frame"]}]
    for r in rows:
        fs, j = r["face_share"], r["jitter_iod"]
        lines.append(f"{r['video'][:42]:42s} {r['frames']:6d} {fs['feqa']:5.2f}/{fs['mediapipe']:<5.2f} "
                     f"{pct(r['error_iod']['median']):>8s} {pct(r['error_iod']['p95']):>8s} "
                     f"{pct(j['feqa']['median']):>7s} {pct(j['mediapipe']['median']):>7s} "
                     f"{r['ms_per_frame']['feqa']:6.2f} {r['ms_per_frame']['mediapipe']:6.2f} "
                     f"{r['ratio'] if r['ratio'] is not None else '-':>6}")
    o = res["overall"]
    lines.append(f"wall ms/frame: FEQA {o['wall_ms_per_frame']['feqa']}, MediaPipe {o['wall_ms_per_frame']['mediapipe']}"
                 f" (ratio {o['wall_ratio']}); setup {res['setup']}")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--videos", nargs="*", help="clips (default: every video in ../shared/videos)")
    p.add_argument("--max-frames", type=int, default=None, help="frames per video (default: all)")
    p.add_argument("--redetect-every", type=int, default=10, help="FEQA's detector period while tracking")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="bench/peers/mediapipe_facemesh.py", description=__doc__.splitlines()[0])
    add_arguments(p)
    args = p.parse_args(argv) if not isinstance(argv, argparse.Namespace) else argv
    if args.inner:
        res = inner(args)
        print(json.dumps(res))
        return res
    py = ensure_venv()
    cmd = [str(py), str(Path(__file__).resolve()), "--inner", "--redetect-every", str(args.redetect_every)]
    if args.videos:
        cmd += ["--videos", *[str(Path(v).resolve()) for v in args.videos]]
    if args.max_frames:
        cmd += ["--max-frames", str(args.max_frames)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "GLOG_minloglevel": "2",
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, check=True, text=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    print(table(res))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n")
    return res


if __name__ == "__main__":
    main()
