"""`feqa bench invariance`: does the same movement score the same wherever it sits in the recording? (issue 12)

For each clip, one movement (a repetition found by worker.segment in a real video, or a simulated patient's
single repetition, from 0.3 s before its onset to 0.3 s after its offset) is written out as a video with
neutral time before it, after it and on both sides (and alone), and each version goes through the whole
pipeline (`worker.pipeline.score_video`: decode, track, segment, batch score, aggregate). The spread is
max - min of the task scores over before/after/both, and alone when the movement fills a model window. Targets: median spread over
the clips <= 0.25, worst <= 0.5. The same run also times the whole-recording path against the single-window
path (`extract` + one window, what the service did before) on the 10.9 s 720p clip (the cost target: <= +25%).

Neutral time is the same person's own stillest half second of the video away from the movement (for the
simulated patients, their neutral lead-in), played forwards and backwards (no frozen frame), joined to the
movement as a patient waiting before or after it would be (the join is a cut, as in the issue's example of a
smile joined with two seconds of the same person not smiling).

    .venv/bin/python -m bench.invariance [--quick] [--lead 2.0] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(__import__("os").environ.get("FEQA_SHARED", ROOT.parent / "shared"))
VIDEOS = SHARED / "videos"
CLIP_720P = VIDEOS / "tfjs-models_facemesh_input.mp4"

# (file, expression, which episode): real people's movements in the shared videos (licences in their MANIFEST)
REAL = (
    ("pyfeat_single_face.mp4", "smile", 0),
    ("liveportrait_d6.mp4", "frown", 0),
    ("liveportrait_d6.mp4", "smile", 0),
    ("liveportrait_d6.mp4", "squeeze_eyes", 0),
    ("liveportrait_d13.mp4", "smile", 0),
    ("pyfeat_WolfgangLanger_Pexels.mp4", "frown", 0),
    ("pyfeat_WolfgangLanger_Pexels.mp4", "squeeze_eyes", 0),
)
PLACEMENTS = ("alone", "before", "after", "both")   # the spread is over before/after/both (+ alone if it fits)
MAX_SIDE = 480          # composed clips are scaled down to this (the tracker works on any size; faster)


def decode(path: Path, fps: float = 25.0) -> list[np.ndarray]:
    from worker.video import DecodeLimits, iter_frames

    return [np.ascontiguousarray(f.rgb) for f in iter_frames(path, fps, DecodeLimits(max_duration_s=120))]


def write(path: Path, frames: list[np.ndarray], fps: float = 25.0) -> Path:
    import av
    import cv2

    h, w = frames[0].shape[:2]
    k = min(1.0, MAX_SIDE / max(h, w))
    size = (int(round(w * k)) // 2 * 2, int(round(h * k)) // 2 * 2)
    with av.open(str(path), "w") as out:
        st = out.add_stream("libx264", rate=int(fps))
        st.width, st.height, st.pix_fmt = size[0], size[1], "yuv420p"
        st.options = {"crf": "18", "preset": "veryfast"}
        for f in frames:
            img = cv2.resize(f, size, interpolation=cv2.INTER_AREA) if size != (w, h) else f
            for p in st.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                out.mux(p)
        for p in st.encode():
            out.mux(p)
    return path


def pingpong(lo: int, hi: int, n: int) -> list[int]:
    """n indices going lo, lo+1, .., hi-1, hi-2, .., lo, lo+1, .. (a still stretch played back and forth)."""
    seq = list(range(lo, hi)) if hi - lo >= 2 else [lo, lo]
    cycle = seq + seq[-2:0:-1]
    return [cycle[i % len(cycle)] for i in range(n)]


def compose(frames: list[np.ndarray], on: int, off: int, lead: int, margin: int, placement: str,
            still: tuple[int, int] | None = None) -> list:
    """The movement [on - margin, off + margin] with `lead` frames of the person's own still frames before and/or
    after it: `still` (a stretch of the video where the face is at rest, played back and forth), or else the
    stretch next to the movement, played so that it joins the movement without a jump (before: it ends on the
    frame just before the movement; after: it starts on the movement's last)."""
    a, b = max(0, on - margin), min(len(frames), off + margin + 1)
    span = max(3, margin)
    if still is not None:
        rest = [frames[i] for i in pingpong(still[0], still[1], lead)]
        return ((rest if placement in ("before", "both") else []) + frames[a:b]
                + (rest[::-1] if placement in ("after", "both") else []))
    out = []
    if placement in ("before", "both"):
        if a >= 2:          # the stretch just before the movement, played so that it ends on frame a-1
            lo, hi = max(0, a - span), a
            out += [frames[hi - 1 - (i - lo)] for i in pingpong(lo, hi, lead)][::-1]
        else:               # the movement starts the video: its own first frames, starting on frame a
            out += [frames[i] for i in pingpong(a, a + span, lead)][::-1]
    out += frames[a:b]
    if placement in ("after", "both"):
        lo, hi = (b - 1, min(len(frames), b - 1 + span)) if b + 1 < len(frames) else (b - span, b)
        out += [frames[i] for i in pingpong(lo, hi, lead)]
    return out


def find_episode(path: Path, expression: str, which: int, tp: int) -> tuple | None:
    """(frames, onset, offset, still) of one complete repetition of `expression` in a real video, via the
    pipeline's own tracking and segmentation; `still` is the 0.5 s of the video, away from the movement, where
    the task's regions are nearest their neutral position (the person not doing the task)."""
    from model.contract import PreprocessContract
    from worker import segment as sg
    from worker.extract import extract_recording

    rec = extract_recording(path, PreprocessContract(tp=tp, tf=16, frame_size=64))
    seg = sg.segment(rec.mesh, rec.runs(), expression, rec.fps)
    eps = [e for e in seg.episodes if not e.partial]
    if len(eps) <= which:
        return None
    e = eps[which]
    frames = decode(path)
    on, off = int(rec.src[e.onset]), int(rec.src[e.offset])
    w = int(round(0.5 * rec.fps))
    best, still = None, None
    for r in range(0, rec.n - w):
        f0, f1 = int(rec.src[r]), int(rec.src[r + w - 1])
        if f1 - f0 != w - 1 or (f1 >= on - w and f0 <= off + w):     # gaps, or too near the movement
            continue
        cost = float(np.abs(seg.activation[r:r + w]).mean())     # the activation is signed: nearest 0
        if best is None or cost < best:
            best, still = cost, (f0, f1 + 1)
    return frames, on, off, still


def score(path: Path, expression: str, scorer) -> dict:
    from worker.pipeline import score_video

    res, _ = score_video(path, expression, scorer)
    return res


def run_clip(name: str, frames: list, on: int, off: int, expression: str, scorer, tmp: Path, lead_s: float,
             fps: float = 25.0, still: tuple[int, int] | None = None) -> dict:
    """Score the movement (its frames from 0.3 s before the onset to 0.3 s after the offset) with `lead_s` of
    neutral time before it, after it and on both sides; the spread is over those three placements (the issue's
    definition). The movement alone is scored too and joins the spread when it fills a model window with room
    for the window's shifts; a shorter one is padded by the contract's rule (a different input, reported as
    `alone_padded`), not the same movement."""
    from worker.segment import JITTER_S

    tp = scorer.contract(expression).tp
    lead, margin = int(round(lead_s * fps)), int(round(0.3 * fps))
    a, b = max(0, on - margin), min(len(frames), off + margin + 1)
    alone_fits = b - a >= tp + 2 * int(round(max(JITTER_S) * fps))
    scores, reps = {}, {}
    for pl in PLACEMENTS:
        clip = write(tmp / f"{name}_{pl}.mp4", compose(frames, on, off, lead, margin, pl, still), fps)
        res = score(clip, expression, scorer)
        key = pl if pl != "alone" or alone_fits else "alone_padded"
        scores[key] = res.get("score")
        reps[key] = len(res.get("repetitions") or [])
    vals = [v for k, v in scores.items() if k != "alone_padded"]
    ok = all(v is not None for v in vals)
    return {"clip": name, "expression": expression, "scores": scores, "repetitions_found": reps,
            "spread": round(float(np.ptp(vals)), 4) if ok else None}


def simulated_clips(n: int) -> list[tuple[str, list, int, int, str]]:
    """Simulated patients: one repetition of a known severity between neutral stretches (ground-truth bounds)."""
    from training.simulate import plan_recording, simulated_recording

    out = []
    exprs = ("smile", "frown", "squeeze_eyes", "clench_teeth")
    for k in range(n):
        expr, sev = exprs[k % len(exprs)], k % 5
        plan = plan_recording(expr, sev, np.random.default_rng(300 + k), repetitions=1, lead_s=1.0, tail_s=1.0,
                              blink_rate=0.0)
        frames, truth = simulated_recording(("grace_hopper", "astronaut")[k % 2], plan, seed=k,
                                            size=None, face_crop=None)
        e = truth["episodes"][0]
        out.append((f"sim{k}_{expr}_s{sev}", list(frames), int(e["onset_s"] * plan.fps),
                    int(e["offset_s"] * plan.fps), expr, (0, int(0.8 * plan.fps))))   # the neutral lead-in
    return out


def cost(scorer, runs: int = 2) -> dict:
    """Seconds for the 10.9 s 720p clip: the single-window path (extract + one window scored, the service before
    issue 12) against the whole-recording path (score_video: track once, segment, all windows in one batch,
    measures). Best of `runs` each, interleaved, so that the machine's load hits both alike."""
    from worker.extract import extract
    from worker.pipeline import score_video

    contract = scorer.contract("smile")
    single, whole, single_cpu, whole_cpu, stages = [], [], [], [], {}
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        ex = extract(CLIP_720P, contract, keep_crops=True)
        scorer.score("smile", ex.trajs[None], ex.index_t[None], ex.frames[None])
        single.append(time.perf_counter() - t0)
        single_cpu.append(time.process_time() - c0)
        t0, c0 = time.perf_counter(), time.process_time()
        res, _ = score_video(CLIP_720P, "smile", scorer)
        whole.append(time.perf_counter() - t0)
        whole_cpu.append(time.process_time() - c0)
        stages = res["timings"]
    s, w = min(single), min(whole)
    sc, wc = min(single_cpu), min(whole_cpu)     # CPU seconds (both threads): far less noisy on a busy machine
    out = {"clip": CLIP_720P.name, "single_window_s": round(s, 3), "whole_recording_s": round(w, 3),
           "added_pct": round(100 * (w - s) / s, 1), "single_window_cpu_s": round(sc, 3),
           "whole_recording_cpu_s": round(wc, 3), "added_cpu_pct": round(100 * (wc - sc) / sc, 1),
           "target_added_pct": 25.0, "whole_stages_s": stages,
           "n_windows": res.get("aggregation", {}).get("n_windows"), "abstained": res.get("abstained")}
    if res.get("abstained"):
        # this clip is not scorable (quality), so neither path ran the network on it: time the batch the whole
        # path would have scored (every window placed on it) against the one window, and add the difference
        from worker import segment as sg
        from worker.extract import extract_recording

        rec = extract_recording(CLIP_720P, contract)
        seg = sg.segment(rec.mesh, rec.runs(), "smile", rec.fps)
        wins = [rec.window(pl.start, pl.stop) for pl in sg.plan_windows(seg, contract.tp)]
        batch = [np.stack([getattr(x, k) for x in wins]) for k in ("trajs", "index_t", "frames")]

        def best(fn, n=3):
            ts = []
            for _ in range(n):
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
            return min(ts)

        all_s = best(lambda: scorer.score("smile", *batch))
        one_s = best(lambda: scorer.score("smile", *(b[:1] for b in batch)))
        out.update({"windows_if_scorable": len(wins), "batch_score_s": round(all_s, 4),
                    "one_window_score_s": round(one_s, 4),
                    "added_pct_if_scorable": round(100 * (w + all_s - one_s - s) / s, 1)})
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="two real and two simulated clips, one cost run")
    p.add_argument("--lead", type=float, default=2.0, help="seconds of neutral time added (default 2)")
    p.add_argument("--simulated", type=int, default=4, help="simulated clips (default 4)")
    p.add_argument("--no-cost", action="store_true", help="skip the cost comparison")
    p.add_argument("--cost-only", action="store_true", help="only the cost comparison")
    p.add_argument("--json", type=Path, default=None, help="also write the report here")


def main(args: argparse.Namespace | list[str] | None = None) -> dict:
    if not isinstance(args, argparse.Namespace):
        p = argparse.ArgumentParser(prog="feqa bench invariance")
        add_arguments(p)
        args = p.parse_args(args or [])
    from model.scorer import Scorer

    scorer = Scorer(ROOT / "models" / "demo")
    rows = []
    real = [] if args.cost_only else REAL[:2] if args.quick else REAL
    with tempfile.TemporaryDirectory(prefix="feqa-inv-") as tmp:
        tmpd = Path(tmp)
        for fname, expr, which in real:
            path = VIDEOS / fname if (VIDEOS / fname).exists() else ROOT / "tests" / "data" / fname
            if not path.exists():
                print(f"{fname}: missing (set FEQA_SHARED)")
                continue
            found = find_episode(path, expr, which, scorer.contract(expr).tp)
            if found is None:
                print(f"{fname} {expr}: no complete repetition found; skipped")
                continue
            frames, on, off, still = found
            if still is None:
                print(f"{fname} {expr}: no still half second of the person away from the movement; skipped")
                continue
            rows.append(run_clip(f"{Path(fname).stem}_{expr}{which}", frames, on, off, expr, scorer, tmpd,
                                 args.lead, still=still))
            rows[-1]["still_frames"] = still
            _print_row(rows[-1])
        n_sim = 0 if args.cost_only else 2 if args.quick else args.simulated
        for name, frames, on, off, expr, still in simulated_clips(n_sim):
            rows.append(run_clip(name, frames, on, off, expr, scorer, tmpd, args.lead, still=still))
            _print_row(rows[-1])
    spreads = [r["spread"] for r in rows if r["spread"] is not None]
    report = {"lead_s": args.lead, "clips": rows,
              "median_spread": round(float(np.median(spreads)), 4) if spreads else None,
              "worst_spread": round(float(np.max(spreads)), 4) if spreads else None,
              "target": {"median": 0.25, "worst": 0.5}}
    print(f"spread over placements: median {report['median_spread']}, worst {report['worst_spread']} "
          f"(targets <= 0.25 / <= 0.5) over {len(spreads)} clips")
    if not args.no_cost and CLIP_720P.exists():
        report["cost"] = cost(scorer, 1 if args.quick else 3)
        c = report["cost"]
        print(f"cost, {c['clip']}: single window {c['single_window_s']} s, whole recording "
              f"{c['whole_recording_s']} s ({c['added_pct']:+.1f}%, target <= +25%), {c['n_windows']} windows; "
              f"CPU {c['single_window_cpu_s']} -> {c['whole_recording_cpu_s']} s ({c['added_cpu_pct']:+.1f}%); "
              f"stages {c['whole_stages_s']}")
        if "added_pct_if_scorable" in c:
            print(f"  (not scorable, so no window was scored by either path; scoring its {c['windows_if_scorable']} "
                  f"windows in one batch takes {c['batch_score_s']} s against {c['one_window_score_s']} s for one: "
                  f"{c['added_pct_if_scorable']:+.1f}% with them)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return report


def _print_row(r: dict) -> None:
    s = "  ".join(f"{k} {v:.3f}" if v is not None else f"{k} -" for k, v in r["scores"].items())
    print(f"{r['clip']:<44} {r['expression']:<13} {s}  spread {r['spread']}  reps {r['repetitions_found']}")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
