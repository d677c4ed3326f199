"""Whole simulated recordings (issue 12): repetitions with pauses and a neutral lead-in, with their ground truth."""
from __future__ import annotations

import numpy as np

from training.simulate import episode_activation, plan_recording, simulated_recording


def test_plan_lays_out_repetitions_after_a_lead_in():
    rng = np.random.default_rng(0)
    plan = plan_recording("smile", 2, rng, repetitions=3, lead_s=1.0, pause_s=0.8, tail_s=0.6, rise_s=0.4,
                          hold_s=0.5)
    truth = plan.truth()
    eps = truth["episodes"]
    assert len(eps) == 3
    assert eps[0]["onset_s"] == 1.0
    for a, b in zip(eps, eps[1:], strict=False):
        assert abs(b["onset_s"] - a["offset_s"] - 0.8) < 1e-6        # the pause
    assert abs(truth["duration_s"] - (eps[-1]["offset_s"] + 0.6)) < 0.05
    t = np.arange(plan.n_frames) / plan.fps
    act = episode_activation(t, plan.episodes)
    assert act[t < 1.0].max() == 0.0                                  # neutral lead-in
    for e in eps:                                                       # full activation held at each peak
        k = int(np.ceil(e["peak_s"] * plan.fps))
        assert act[k] > 0.95 * e["amplitude"]
        assert act[int(e["offset_s"] * plan.fps) + 1] < 1e-6


def test_fatigue_shrinks_the_last_repetition_and_rest_has_none():
    rng = np.random.default_rng(1)
    plan = plan_recording("frown", 1, rng, repetitions=4, amplitude=1.0, fatigue=0.4)
    amps = [e["amplitude"] for e in plan.truth()["episodes"]]
    assert amps[0] == 1.0 and abs(amps[-1] - 0.6) < 1e-6 and amps == sorted(amps, reverse=True)
    rest = plan_recording("sit_at_rest", 3, rng, blink_rate=0.5)
    assert rest.truth()["episodes"] == [] and rest.n_frames == 200
    assert all(b - a >= 0.5 for a, b in zip(rest.blinks, rest.blinks[1:], strict=False))


def test_render_recording_returns_frames_and_truth():
    plan = plan_recording("smile", 0, np.random.default_rng(2), repetitions=1, lead_s=0.3, tail_s=0.3,
                          rise_s=0.3, hold_s=0.2, pause_s=0.5, head_motion=0.0)
    frames, truth = simulated_recording("tfjs_woman", plan, seed=3, size=128)
    assert frames.shape == (plan.n_frames, 128, 128, 3) and frames.dtype == np.uint8
    assert truth["episodes"][0]["onset_s"] == 0.3 and truth["n_frames"] == plan.n_frames
    # the mesh motion behind the frames: none before the onset and after the offset, the smile at the peak
    from training.simulate import FaceGeometry, identity_face, pseudo_identities, recording_motion

    _, mesh = identity_face(pseudo_identities(1)[0])
    plan.blinks, plan.tremor_iod = [], 0.0
    disp = np.abs(recording_motion(FaceGeometry(mesh), plan, np.random.default_rng(0))).max((1, 2))
    on, peak, off = (truth["episodes"][0][k] * plan.fps for k in ("onset_s", "peak_s", "offset_s"))
    assert disp[: int(np.floor(on)) + 1].max() < 1e-3 and disp[int(np.ceil(off)):].max() < 1e-3
    assert disp[int(np.ceil(peak))] > 5.0
