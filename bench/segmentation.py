"""`python -m bench.segmentation`: how many known repetitions worker.segment finds in simulated whole recordings.

Per task and severity one simulated recording (training.simulate.plan_recording: a neutral lead-in, then
`--repetitions` repetitions with pauses; the plan knows each repetition's onset, peak and offset) is rendered
(small frames around the face), tracked and segmented by the real pipeline (worker.extract.extract_recording,
worker.segment.segment). A known repetition is found when one segmented episode, used once, has its onset within
ONSET_TOL_S of the known onset and its peak inside the known onset..offset; a segmented episode that matches
none is a false one. sit_at_rest has no repetitions: every episode found there is a false one.
tests/worker/test_segment.py asserts the share found per task on severity 1 (>= 80 %, at most one false).

    .venv/bin/python -m bench.segmentation                        # severities 0-4, every task (~4 min on 2 cores)
    .venv/bin/python -m bench.segmentation --severities 1 --tasks blow,kiss,open
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from model.contract import PreprocessContract
from training.simulate import (
    SIM_EXPRESSIONS,
    known_episodes,
    plan_recording,
    simulated_recording,
    write_video,
)
from worker import segment as sg
from worker.extract import extract_recording

IDENTITY, SIZE, CROP = "pyfeat_man", 224, 1.4
CONTRACT = PreprocessContract(tp=64, tf=16, frame_size=64)
ONSET_TOL_S = 0.4
TASKS = tuple(e for e in SIM_EXPRESSIONS if e != "sit_at_rest") + ("sit_at_rest",)


def match(episodes: list[tuple[int, int, int]], known: list[list[int]], fps: float,
          onset_tol_s: float = ONSET_TOL_S) -> tuple[int, int]:
    """(known repetitions found, segmented episodes that match none), each episode matched at most once."""
    used: set[int] = set()
    for on, _, off in known:
        for j, (a, pk, _) in enumerate(episodes):
            if j not in used and abs(a - on) <= onset_tol_s * fps and on <= pk <= off:
                used.add(j)
                break
    return len(used), len(episodes) - len(used)


def plan_for(task: str, severity: int, seed: int, repetitions: int):
    """A whole recording of `repetitions` repetitions at `severity` (amplitude, rise time, tremor and asymmetry
    follow the severity as the demo recordings do; head motion and lighting as render_recording draws them)."""
    rng = np.random.default_rng(seed)
    if task == "sit_at_rest":
        return plan_recording(task, severity, rng, duration_s=6.0)
    return plan_recording(task, severity, rng, repetitions=repetitions, lead_s=0.8, pause_s=0.7, tail_s=0.6,
                          hold_s=0.5)


def detect(task: str, severity: int, out: Path, *, seed: int = 0, repetitions: int = 4) -> dict:
    """Render, track and segment one recording; its counts against the plan's known repetitions."""
    plan = plan_for(task, severity, 1000 + 37 * seed + 11 * severity + TASKS.index(task), repetitions)
    frames, truth = simulated_recording(IDENTITY, plan, seed=seed + severity, size=SIZE, face_crop=CROP)
    path = out / f"{task}_s{severity}_{seed}.mp4"
    write_video(path, frames)
    rec = extract_recording(path, CONTRACT)
    seg = sg.segment(rec.mesh, rec.runs(), task, rec.fps)
    path.unlink()
    known = known_episodes(truth)
    # the recording's rows are its frames here (the face is never lost in these renders)
    found, false = match([(e.onset, e.peak, e.offset) for e in seg.episodes], known, rec.fps)
    return {"task": task, "severity": severity, "known": len(known), "found": found, "false": false,
            "segmented": len(seg.episodes), "amplitude": truth["episodes"][0]["amplitude"] if known else 0.0,
            "tremor_iod": round(truth["tremor_iod"], 4), "range_iod": round(seg.range, 4),
            "noise_iod": round(seg.noise, 5), "findings": list(seg.findings), "n_frames": rec.n}


def detection(tasks: tuple[str, ...] = TASKS, severities: tuple[int, ...] = (1,), *, seed: int = 0,
              repetitions: int = 4, out: Path | None = None) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="feqa-seg-") as tmp:
        for task in tasks:
            for s in severities:
                rows.append(detect(task, s, Path(out or tmp), seed=seed, repetitions=repetitions))
    return rows


def per_task(rows: list[dict]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for r in rows:
        t = out.setdefault(r["task"], {"found": 0, "known": 0, "false": 0})
        for k in ("found", "known", "false"):
            t[k] += r[k]
    return out


def print_rows(rows: list[dict]) -> None:
    for r in rows:
        print(f"{r['task']:<13} severity {r['severity']}  found {r['found']}/{r['known']}  false {r['false']}  "
              f"(amplitude {r['amplitude']:.2f}, tremor {r['tremor_iod']:.3f} IOD; activation range "
              f"{r['range_iod']:.4f}, noise {r['noise_iod']:.4f} IOD) {r['findings']}")
    for task, t in per_task(rows).items():
        share = f"{100 * t['found'] / t['known']:.0f}%" if t["known"] else "-"
        print(f"  {task:<13} found {t['found']}/{t['known']} ({share})  false {t['false']}")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.segmentation")
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--severities", default="0,1,2,3,4")
    p.add_argument("--repetitions", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv or [])
    rows = detection(tuple(args.tasks.split(",")), tuple(int(s) for s in args.severities.split(",")),
                     seed=args.seed, repetitions=args.repetitions)
    print_rows(rows)
    tot = per_task(rows)
    report = {"rows": rows, "per_task": tot, "onset_tolerance_s": ONSET_TOL_S,
              "found": sum(t["found"] for t in tot.values()), "known": sum(t["known"] for t in tot.values()),
              "false": sum(t["false"] for t in tot.values())}
    print(f"known repetitions found: {report['found']}/{report['known']}, false: {report['false']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
