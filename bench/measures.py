"""Movement measures against simulated patients whose movement is known (issue 12, item 4).

Eight smile recordings (three repetitions each) whose amplitude, left/right asymmetry, rise time (speed) and
fatigue are set independently (each parameter a different permutation of its values), and eight recordings at
rest whose blink count, tremor amplitude and time with the lips apart are set the same way, are rendered
(small frames around the face), tracked and measured by the real pipeline (worker.extract.extract_recording,
worker.segment, worker.measures), and eight more at rest whose spontaneous movement (the simulator's slow slight
smile, `twitch`) is set beside a tremor of varied size. Each measure should rank its known value with Spearman's
rho >= 0.9 (tests/worker/test_measures.py asserts it). The known value is the simulator's parameter, or what follows from
the parameters for the quantity measured (e.g. the mean movement of both sides for the range of motion).

    .venv/bin/python -m bench.measures            # prints every measure's rho (about 3 minutes on 2 cores)
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

from model.contract import PreprocessContract
from training.simulate import plan_recording, simulated_recording, write_video
from worker import measures as ms
from worker import segment as sg
from worker.extract import extract_recording

N = 8
IDENTITY, SIZE, CROP = "pyfeat_man", 224, 1.4
CONTRACT = PreprocessContract(tp=64, tf=16, frame_size=64)


def _perm(seed: int, values: np.ndarray) -> np.ndarray:
    return values[np.random.default_rng(seed).permutation(len(values))]


def _measure(path: Path, expression: str):
    rec = extract_recording(path, CONTRACT)
    seg = sg.segment(rec.mesh, rec.runs(), expression, rec.fps)
    return seg, *ms.compute(seg)


def task_set(out: Path) -> list[dict]:
    """Smile recordings with known amplitude, asymmetry, rise time and fatigue, measured."""
    amp = _perm(1, np.linspace(0.45, 1.05, N))
    asym = _perm(2, np.linspace(0.0, 0.5, N))
    rise = _perm(3, np.linspace(0.25, 0.9, N))
    fatigue = _perm(4, np.linspace(0.0, 0.5, N))
    rows = []
    for i in range(N):
        plan = plan_recording("smile", None, np.random.default_rng(100 + i), repetitions=3, lead_s=0.8,
                              pause_s=0.6, tail_s=0.6, hold_s=0.4, amplitude=float(amp[i]), asym=float(asym[i]),
                              rise_s=float(rise[i]), fatigue=float(fatigue[i]), tremor_iod=0.0, blink_rate=0.0)
        plan.weak_side = 1.0                      # the subject's left is the weak side in every recording
        frames, truth = simulated_recording(IDENTITY, plan, seed=i, size=SIZE, face_crop=CROP)
        write_video(out / f"t{i}.mp4", frames, lossless=True)
        seg, m, reps = _measure(out / f"t{i}.mp4", "smile")
        a = [e["amplitude"] for e in truth["episodes"]]
        both_sides = float(np.median(a)) * (1 - plan.asym / 2)      # mean movement of the two sides
        rows.append({"n_reps": len(seg.episodes), "rom_known": both_sides, "asym_known": truth["asymmetry_index"],
                     "speed_known": both_sides * 1.5 / rise[i], "rise": rise[i],
                     "fatigue_known": (a[-1] - a[0]) / a[0], "cv_known": float(np.std(a) / np.mean(a)),
                     "rom": m["regions"]["mouth_corners"]["rom_iod"],
                     "asym": m["regions"]["mouth_corners"]["asymmetry"],
                     "speed": m["regions"]["mouth_corners"]["peak_speed_iod_s"],
                     "ttp": m["regions"]["mouth_corners"]["time_to_peak_s"],
                     "fatigue": m["fatigue"], "cv": m["variability"]})
    return rows


def rest_set(out: Path) -> list[dict]:
    """Rest recordings with known blink count, tremor amplitude and time with the lips apart, measured."""
    duration = 6.0
    blinks = _perm(5, np.array([0, 1, 2, 3, 4, 5, 6, 7]))
    tremor = _perm(6, np.linspace(0.004, 0.03, N))
    share = _perm(7, np.linspace(0.0, 0.7, N))
    rows = []
    for i in range(N):
        apart = share[i] * duration
        plan = plan_recording("sit_at_rest", None, np.random.default_rng(200 + i), duration_s=duration,
                              tremor_iod=float(tremor[i]), tremor_hz=5.0, twitch=0.0, blink_rate=0.0,
                              lips_intervals=[(0.5, 0.5 + apart)] if apart > 0 else [])
        plan.blinks = list(np.linspace(0.5, duration - 0.5, blinks[i])) if blinks[i] else []
        frames, truth = simulated_recording(IDENTITY, plan, seed=50 + i, size=SIZE, face_crop=CROP)
        write_video(out / f"r{i}.mp4", frames, lossless=True)
        _, m, _ = _measure(out / f"r{i}.mp4", "sit_at_rest")
        rest = m["rest"]
        rows.append({"blinks_known": int(blinks[i]), "blinks": rest["n_blinks"],
                     "rate_known": blinks[i] / duration * 60, "rate": rest["blink_rate_per_min"],
                     "tremor_known": float(tremor[i]), "tremor": rest["tremor_power_iod2"],
                     "tremor_hz": rest["tremor_peak_hz"],
                     "share_known": truth["lips_apart_share"], "share": rest["lips_apart_share"]})
    return rows



N_TWITCH = N


def twitch_set(out: Path) -> list[dict]:
    """Rest recordings with a known amount of spontaneous movement (the simulator's `twitch`: a slow slight smile
    at 0.6 Hz) and a tremor of varied size beside it (a 4-6 Hz tremor is not spontaneous movement); lips shut
    and no blinks, so that the twitch is the only slow movement."""
    duration = 5.0
    twitch = _perm(8, np.linspace(0.0, 0.4, N_TWITCH))
    tremor = _perm(9, np.linspace(0.004, 0.03, N_TWITCH))
    rows = []
    for i in range(N_TWITCH):
        plan = plan_recording("sit_at_rest", None, np.random.default_rng(400 + i), duration_s=duration,
                              tremor_iod=float(tremor[i]), tremor_hz=5.0, twitch=float(twitch[i]), blink_rate=0.0,
                              lips_part=0.0)
        plan.blinks = []
        frames, _ = simulated_recording(IDENTITY, plan, seed=70 + i, size=SIZE, face_crop=CROP)
        write_video(out / f"w{i}.mp4", frames, lossless=True)
        _, m, _ = _measure(out / f"w{i}.mp4", "sit_at_rest")
        rows.append({"twitch_known": float(twitch[i]), "spontaneous": m["rest"]["spontaneous_movement_iod"]})
    return rows


TASK_PAIRS = (("rom_known", "rom", "range of motion, mouth corners"), ("asym_known", "asym", "asymmetry index"),
              ("speed_known", "speed", "peak speed"), ("rise", "ttp", "time to peak (vs rise time)"),
              ("fatigue_known", "fatigue", "fatigue"), ("cv_known", "cv", "variability"))
REST_PAIRS = (("rate_known", "rate", "blink rate per minute"), ("tremor_known", "tremor", "tremor power 4-6 Hz"),
              ("share_known", "share", "share of time with lips apart"))
TWITCH_PAIRS = (("twitch_known", "spontaneous", "spontaneous movement (vs twitch)"),)


def rho(rows: list[dict], known: str, measured: str) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr([r[known] for r in rows], [r[measured] for r in rows])[0])


def main(argv: list[str] | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="feqa-measures-") as tmp:
        task, rest, twitch = task_set(Path(tmp)), rest_set(Path(tmp)), twitch_set(Path(tmp))
    out = {}
    for rows, pairs in ((task, TASK_PAIRS), (rest, REST_PAIRS), (twitch, TWITCH_PAIRS)):
        for known, measured, label in pairs:
            out[measured] = round(rho(rows, known, measured), 3)
            print(f"{label:<36} Spearman rho {out[measured]:.3f}  (target >= 0.9)")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
