"""Given a whole recording's movement episodes, when training draws its windows, then each window holds its
whole repetition (or lies inside a long one), starts at rest clear of the neighbouring repetitions when the
pauses allow, and an epoch sees one window per recording; the serving placement is one of the windows the
training rule can draw."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from model.scales import TORONTO
from training.loop import TrainItem, sampling_units
from training.train import DEMO_EXPRESSIONS
from training.windows import (
    Episode,
    aggregate,
    aggregate_recording,
    episode_agreement,
    random_window,
    recording_features,
    run_windows,
    serving_windows,
    start_range,
)

TP = 64
EPISODES = [Episode(30, 45, 70), Episode(100, 112, 140), Episode(175, 190, 215)]   # 250 frames, 10 s


def test_training_windows_hold_their_whole_repetition_and_start_at_rest():
    rng = np.random.default_rng(0)
    for k, ep in enumerate(EPISODES):
        starts = set()
        for _ in range(300):
            a, b = random_window(250, EPISODES, k, TP, rng)
            assert b - a + 1 == TP and 0 <= a and b < 250
            assert a <= ep.onset and b >= ep.offset                      # the whole repetition is inside
            if k:
                assert a > EPISODES[k - 1].offset                        # the previous one is not
            if k + 1 < len(EPISODES):
                assert b < EPISODES[k + 1].onset                         # nor the next one
            starts.add(a)
        lo, hi = start_range(250, EPISODES, k, TP)
        assert starts == set(range(lo, hi + 1)) and hi > lo              # random over the whole allowed range


def test_a_long_episode_and_a_still_recording_keep_windows_inside():
    rng = np.random.default_rng(1)
    long = [Episode(20, 60, 150)]
    for _ in range(100):
        a, b = random_window(200, long, 0, TP, rng)
        assert 20 <= a and b <= 150
        a, b = random_window(200, [], 0, TP, rng)                         # at rest: anywhere in the recording
        assert 0 <= a and b <= 199
    assert random_window(40, long, 0, TP, rng) == (0, 39)                 # shorter than Tp: all of it


def test_when_the_pauses_are_short_the_window_still_holds_the_repetition():
    eps = [Episode(10, 20, 40), Episode(48, 60, 80)]
    rng = np.random.default_rng(2)
    for _ in range(50):
        a, b = random_window(120, eps, 1, TP, rng)
        assert a <= 48 and b >= 80


def test_serving_windows_are_centred_and_inside_the_training_rule():
    wins = serving_windows(250, EPISODES, TP)
    assert len(wins) == len(EPISODES)
    for k, ((a, b), ep) in enumerate(zip(wins, EPISODES, strict=True)):
        lo, hi = start_range(250, EPISODES, k, TP)
        assert lo <= a <= hi and b - a + 1 == TP and a <= ep.onset and b >= ep.offset
    still = serving_windows(250, [], TP)
    assert still[0][0] == 0 and still[-1][1] == 249 and len(still) == 4
    assert aggregate([1.0, 3.0, 1.2]) == 1.2


def test_an_epoch_draws_one_window_per_recording():
    items = [TrainItem(None, None, None, 0.0, f"c{i}") for i in range(3)]
    items += [TrainItem(None, None, None, 1.0, f"r{i}", pool="rec_a") for i in range(4)]
    items += [TrainItem(None, None, None, 2.0, f"s{i}", pool="rec_b") for i in range(2)]
    units = sampling_units(items)
    assert [len(u) for u in units] == [1, 1, 1, 4, 2]
    assert sorted(i for u in units for i in u) == list(range(9))


def test_run_windows_stay_inside_their_episode_and_run():
    from types import SimpleNamespace as E

    runs = [(0, 250), (250, 330)]
    eps = [E(onset=30, peak=45, offset=70, run=0), E(onset=100, peak=112, offset=140, run=0),
           E(onset=260, peak=270, offset=300, run=1)]
    wins = run_windows(runs, eps, TP, np.random.default_rng(0), per_episode=3)
    assert {k for _, _, k in wins} == {0, 1, 2}
    for a, b, k in wins:
        e = eps[k]
        ra, rb = runs[e.run]
        assert b - a == TP and ra <= a <= e.onset and e.offset < b <= rb
    rest = run_windows([(0, 200)], [], TP, np.random.default_rng(0), per_episode=2)
    assert 2 <= len(rest) <= 4 and all(0 <= a and b <= 200 and k == -1 for a, b, k in rest)


def test_windows_of_a_simulated_recording_hold_the_repetitions_serving_finds(tmp_path):
    """The real path: render a recording, track it once, segment it as serving does, cut training windows."""
    from model.contract import PreprocessContract
    from training.datasets import read_dataset_manifest
    from training.simulate import load_episodes, simulate_recordings
    from training.train import DEMO_CONTRACT

    manifest = simulate_recordings(tmp_path / "rec", identities=1, expressions=("open",), progress=False,
                                   test_identities=("astronaut",), per_severity={"test": 1}, seconds=6.0,
                                   severities=(0,))
    (s,) = read_dataset_manifest(manifest)
    known = load_episodes(manifest)[s.video]["episode_frames"]
    contract = PreprocessContract(tp=TP, tf=16, frame_size=64, **DEMO_CONTRACT)
    d = recording_features(s.video, "open", contract, tmp_path / "cache", split="train", per_episode=2,
                           known=known)
    assert d["trajs"].shape[1:] == (63, TP, 5) and d["frames"].shape[1:] == (16, 64, 64, 3)
    found, total = episode_agreement(d)
    assert total == len(known) >= 2 and found == total
    for a, b, k in zip(d["start"], d["stop"], d["episode"], strict=True):
        on, _, off, _ = d["episodes"][k]
        assert b - a == TP and a <= on and off < b
    served = recording_features(s.video, "open", contract, tmp_path / "cache", split="test")
    raw, agg = aggregate_recording(np.zeros(len(served["start"])), served, TORONTO)
    assert agg["n_repetitions"] == len(served["episodes"]) and raw == 0.0
    assert set(DEMO_EXPRESSIONS) >= {"blow", "kiss", "brow", "open", "spread", "smile"}


def test_both_recording_evaluations_score_serving_windows_the_same_way(tmp_path):
    """training.train's two whole-recording evaluations (a checkpoint in torch, an exported model in
    onnxruntime) score the same serving windows of a rendered recording by one rule: the same untrained
    network gives the same window count, repetitions found and (within export tolerance) the same score."""
    import torch

    from model.config import get_config
    from model.export import export_model
    from model.network import TrampFormer, checkpoint
    from training.datasets import read_dataset_manifest
    from training.simulate import simulate_recordings
    from training.train import evaluate_exported_on_recordings, evaluate_recordings

    manifest = simulate_recordings(tmp_path / "rec", identities=1, expressions=("smile",), progress=False,
                                   test_identities=("astronaut",), per_severity={"test": 1}, seconds=6.0,
                                   severities=(2,))
    samples = read_dataset_manifest(manifest)
    cfg = get_config("compact", expression="smile")
    torch.manual_seed(0)
    net = TrampFormer(cfg).eval()
    with torch.no_grad():
        net.head.layers[2].bias += 2.0   # an untrained output, moved inside the 0-4 scale (else both clip to 0)
    torch.save(checkpoint(net, meta={"expression": "smile"}), tmp_path / "smile.pt")
    export_model(net, cfg, tmp_path / "models", "smile-compact-untrained", "smile", "0.0.0+untrained",
                 training={"description": "none"}, metrics={}, trained_on="untrained", clinical_use=False)
    logged: list[str] = []
    by_torch = evaluate_recordings(tmp_path / "smile.pt", samples, tmp_path / "cache", log=logged.append)
    by_onnx = evaluate_exported_on_recordings(tmp_path / "models", samples, tmp_path / "cache",
                                              log=logged.append)["smile"]
    assert not logged, logged
    for r in (by_torch, by_onnx):
        assert r["n_recordings"] == 1 and r["y_true"] == [float(samples[0].score)]
        assert r["n_windows"] >= 1 and r["recordings"] == [Path(samples[0].video).name]
        assert 0.0 < r["y_pred"][0] < 4.0 and r["rule"].startswith("serving's")
    assert by_onnx["scored_by"].startswith("exported ONNX")
    assert by_torch["n_windows"] == by_onnx["n_windows"]
    assert by_torch["known_repetitions_found"] == by_onnx["known_repetitions_found"]
    assert abs(by_torch["y_pred"][0] - by_onnx["y_pred"][0]) < 1e-3
