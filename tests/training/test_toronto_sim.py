"""Given the licensed identity photos, when the Toronto NeuroFace tasks are simulated, then each task moves its
own region, a higher Toronto rating (1 normal .. 5 severely impaired) moves it less, clips are labelled on the
Toronto scale, and whole recordings have the repetitions their plan says."""
from __future__ import annotations

import numpy as np
import pytest

from model.contract import TORONTO_EXPRESSIONS
from model.scales import TORONTO
from training.datasets import read_dataset_manifest
from training.simulate import (
    BROWS,
    LOWER_CHEEKS,
    LOWER_LIP,
    MOUTH_CORNERS,
    TORONTO_REGIONS,
    FaceGeometry,
    demo_recording_plan,
    identity_face,
    known_episodes,
    mesh_motion,
    plan_clip,
    pseudo_identities,
    score_for,
    simulate,
    simulate_recordings,
)
from training.simulate import load_episodes as load_known

# points far from where each task acts: its movement there must stay small
ELSEWHERE = {"blow": BROWS["right"] + BROWS["left"], "kiss": BROWS["right"] + BROWS["left"],
             "brow": LOWER_LIP + list(MOUTH_CORNERS.values()), "open": BROWS["right"] + BROWS["left"],
             "spread": BROWS["right"] + BROWS["left"]}


def _peak_motion(geo: FaceGeometry, task: str, severity: int, points: list[int], seed: int = 7) -> float:
    rng = np.random.default_rng(seed)
    plan = plan_clip(task, severity, rng)
    plan.tremor_px = 0.0        # the jaw tremor is another sign; this measures the task's own movement
    plan.blinks = []
    d = mesh_motion(geo, plan, rng)
    return float(np.linalg.norm(d[:, points], axis=-1).mean(1).max() / geo.iod)


@pytest.mark.parametrize("task", TORONTO_EXPRESSIONS)
def test_each_toronto_task_moves_its_region_less_as_the_rating_rises(task):
    geo = FaceGeometry(identity_face(pseudo_identities(1)[0])[1])
    region = TORONTO_REGIONS[task]
    motion = [_peak_motion(geo, task, sev, region) for sev in range(5)]
    scores = [score_for(task, sev) for sev in range(5)]
    assert scores == [1, 2, 3, 4, 5] and (TORONTO.low, TORONTO.high) == (1, 5)
    assert all(a > b for a, b in zip(motion, motion[1:], strict=False)), (task, motion)
    assert motion[0] > 0.05 and motion[0] > 3 * motion[-1], (task, motion)
    # the intended region moves, the far one hardly does
    assert motion[0] > 4 * _peak_motion(geo, task, 0, ELSEWHERE[task]), task


def test_the_toronto_tasks_move_different_things():
    geo = FaceGeometry(identity_face(pseudo_identities(1)[0])[1])
    corners = list(MOUTH_CORNERS.values())
    rng = np.random.default_rng(0)

    def field(task):
        p = plan_clip(task, 0, rng)
        p.tremor_px, p.blinks = 0.0, []
        return mesh_motion(geo, p, rng)[-1]
    d = {t: field(t) for t in TORONTO_EXPRESSIONS}
    out = {s: geo.out(s) for s in ("right", "left")}
    # spread draws the corners out, kiss draws them in; open drops the lower lip; blow pushes the cheeks out
    assert all(d["spread"][MOUTH_CORNERS[s], 0] * out[s] > 0.1 * geo.iod for s in out)
    assert all(d["kiss"][MOUTH_CORNERS[s], 0] * out[s] < -0.08 * geo.iod for s in out)
    assert d["open"][LOWER_LIP, 1].mean() > 0.1 * geo.iod
    assert all((d["blow"][LOWER_CHEEKS[s], 0] * out[s]).mean() > 0.05 * geo.iod for s in out)
    assert d["brow"][BROWS["left"] + BROWS["right"], 1].mean() < -0.06 * geo.iod
    assert np.abs(d["brow"][corners]).max() < 0.01 * geo.iod


def test_simulated_toronto_clips_are_labelled_on_the_toronto_scale(tmp_path):
    manifest = simulate(tmp_path, identities=1, per_severity=1, expressions=("kiss",), progress=False,
                        test_identities=("astronaut",))
    samples = read_dataset_manifest(manifest)
    assert sorted(s.score for s in samples) == [1, 2, 3, 4, 5]
    assert all(f"_s{int(s.score)}_" in s.video for s in samples)


def test_a_demo_recording_lasts_6_to_12_s_with_the_repetitions_the_protocol_asks_or_fewer():
    for task, most in (("spread", 5), ("smile", 3)):
        for sev in (0, 4):
            for seed in range(3):
                plan = demo_recording_plan(task, sev, np.random.default_rng(seed))
                eps = known_episodes(plan.truth())
                assert 6 * 25 <= plan.n_frames <= 12 * 25 and 2 <= len(eps) <= most, (task, sev, len(eps))
                assert all(0 < on < pk < off < plan.n_frames for on, pk, off in eps)
                assert eps[0][0] >= 0.5 * 25                                # a neutral lead-in
    rest = demo_recording_plan("sit_at_rest", 2, np.random.default_rng(1))
    assert rest.episodes == [] and 6 * 25 <= rest.n_frames <= 12 * 25
    fixed = demo_recording_plan("kiss", 4, np.random.default_rng(0), seconds=6.0)
    assert fixed.n_frames == 150 and all(off < 150 for _, _, off in known_episodes(fixed.truth()))


def test_simulated_recordings_write_their_known_episodes(tmp_path):
    manifest = simulate_recordings(tmp_path, identities=1, expressions=("brow",), progress=False,
                                   test_identities=("astronaut",), per_severity={"test": 1}, seconds=6.0,
                                   severities=(0, 4))
    samples = read_dataset_manifest(manifest)
    known = load_known(manifest)
    assert sorted(s.score for s in samples) == [1, 5]
    import av

    for s in samples[:2]:
        plan = known[s.video]
        with av.open(s.video) as c:
            n = sum(1 for _ in c.decode(video=0))
        assert n == plan["n_frames"] and plan["episode_frames"] and plan["score"] == s.score
        assert all(0 <= on < pk < off < n for on, pk, off in plan["episode_frames"])
