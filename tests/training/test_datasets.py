"""Given small synthetic dataset layouts in tmp dirs, when the adapters read them, then clips, subjects,
scores, ranges and folds come out right; the feature cache re-extracts when the contract changes."""
from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from model.contract import PreprocessContract
from training.datasets import (
    FeatureCache,
    Sample,
    group_folds,
    holdout_validation,
    pfed5_samples,
    read_dataset_manifest,
    subject_folds,
    toronto_samples,
    write_manifest,
)
from training.frames_source import as_video, iter_video_range


def _frames(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(n)]


def _write_jpgs(folder, frames) -> None:
    folder.mkdir(parents=True)
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"{i + 1}.jpg"), f)


def test_manifest_round_trip_with_ranges_and_subscores(tmp_path):
    rows = [Sample(str(tmp_path / "a.mp4"), "s1", "smile", 2.0, 3, 40, "g1", "train", {"symmetry": 1.5}),
            Sample("rel/b.mp4", "s2", "frown", 0.0)]
    path = write_manifest(rows, tmp_path / "m.csv", comment="simulated\nnot for clinical use")
    back = read_dataset_manifest(path)
    assert back[0].start == 3 and back[0].end == 40 and back[0].subscores == {"symmetry": 1.5}
    assert back[0].group == "g1" and back[0].split == "train"
    assert back[1].video == str(tmp_path / "rel/b.mp4") and back[1].start is None
    assert path.read_text().startswith("# simulated\n# not for clinical use\n")


def test_pfed5_adapter_reads_split_csv_and_frame_folders(tmp_path):
    root = tmp_path / "frames"
    _write_jpgs(root / "001" / "12-104704_0", _frames(5))
    _write_jpgs(root / "002" / "12-200000_1", _frames(3, 1))
    split = tmp_path / "train.csv"
    split.write_text("12-104704_0_001,3,5,x,1\n12-200000_1_002,0,3,y,4\n")
    samples = pfed5_samples(root, split, split="train")
    assert [(s.subject, s.expression, s.score) for s in samples] == [("001", "smile", 3.0),
                                                                        ("002", "clench_teeth", 0.0)]
    # a frame folder becomes a lossless temporary video for extraction
    with as_video(samples[0].video, start=1, end=3) as v:
        got = list(iter_video_range(v, None, None))
    want = [cv2.cvtColor(cv2.imread(str(root / "001" / "12-104704_0" / f"{i}.jpg")), cv2.COLOR_BGR2RGB)
            for i in (2, 3, 4)]
    assert len(got) == 3 and all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))


def test_pfed5_adapter_with_header_and_class_column(tmp_path):
    _write_jpgs(tmp_path / "f" / "001" / "12-104704_0", _frames(2))
    split = tmp_path / "test.csv"
    split.write_text("videoID_subjectID,label,frame length,class,note\n12-104704_0_001,4,2,2,z\n")
    (s,) = pfed5_samples(tmp_path / "f", split)
    assert s.expression == "frown" and s.score == 4.0


def _toronto_layout(tmp_path, subjects):
    root = tmp_path / "toronto"
    (root / "videos").mkdir(parents=True)
    reps = ["File Name,repID,Number of Frames,start,end"]
    scores = ["File Name,rater1_overall,rater2_overall,rater1_symmetry"]
    for i, sub in enumerate(subjects):
        for task in ("BLOW", "SPREAD", "BIGSMILE"):
            name = f"{sub}_{task}_01"
            (root / "videos" / f"{name}.mp4").write_bytes(b"stub")
            for r in range(2):            # 1-based inclusive, Number of Frames = end - start + 1, as published
                reps.append(f"{name},{r + 1},50,{r * 50 + 1},{r * 50 + 50}")
            scores.append(f"{name}.mp4,{1 + i % 3},{2 + i % 3},{i % 4}")
    (tmp_path / "reps.csv").write_text("\n".join(reps) + "\n")
    (tmp_path / "scores.csv").write_text("\n".join(scores) + "\n")
    return root


def test_toronto_adapter_single_repetitions_and_mean_rater_score(tmp_path):
    root = _toronto_layout(tmp_path, ["A001", "S002", "N003"])
    samples = toronto_samples(root, tmp_path / "reps.csv", tmp_path / "scores.csv")
    assert {s.expression for s in samples} == {"blow", "spread"}       # BIGSMILE left out
    assert len(samples) == 3 * 2 * 2
    s = next(x for x in samples if x.subject == "S002" and x.expression == "blow" and x.start == 50)
    assert s.end == 99 and s.group == "stroke" and s.score == pytest.approx(2.5)
    assert s.subscores == {"rater1_symmetry": 1.0}


def test_subject_folds_are_balanced_over_groups():
    subjects = [f"A{i:02d}" for i in range(11)] + [f"S{i:02d}" for i in range(14)] + [f"N{i:02d}" for i in range(11)]
    groups = {"A": "ALS", "S": "stroke", "N": "healthy"}
    samples = [Sample(f"/v/{s}.mp4", s, "blow", 1.0, group=groups[s[0]]) for s in subjects]
    folds = subject_folds(samples, 3, seed=0)
    assert sorted(len(f) for f in folds) == [12, 12, 12]
    assert sorted(sum(folds, [])) == sorted(subjects)
    for g in "ASN":
        counts = [sum(s.startswith(g) for s in f) for f in folds]
        assert max(counts) - min(counts) <= 1, (g, counts)


def test_group_folds_keep_base_identities_together():
    samples = [Sample("/v", sub, "smile", 0, group=sub.split("-")[0])
               for sub in ["a", "a-mirror", "b", "b-mirror", "c", "c-mirror"]]
    folds = group_folds(samples, 3)
    for f in folds:
        assert len({s.split("-")[0] for s in f}) == 1 and len(f) == 2


def test_holdout_validation_never_shares_subjects():
    samples = [Sample(f"/v/{i}", f"s{i % 6}", "smile", float(i % 5)) for i in range(30)]
    tr, va = holdout_validation(samples, 0.34, seed=1)
    assert va and tr and not ({s.subject for s in tr} & {s.subject for s in va})


def test_holdout_validation_keeps_mirror_identities_with_their_base():
    samples = [Sample(f"/v/{b}{m}{i}", f"{b}{m}", "smile", float(i % 5), group=b)
               for b in "abcd" for m in ("", "-mirror") for i in range(5)]
    tr, va = holdout_validation(samples, 0.25, seed=0)
    assert va and not ({s.group for s in tr} & {s.group for s in va})


def test_feature_cache_reextracts_when_the_contract_changes(tmp_path):
    video = tmp_path / "v.mp4"
    video.write_bytes(b"not really a video")
    calls = []

    def fake_extract(path, contract):
        calls.append(contract.tp)
        return SimpleNamespace(trajs=np.full((63, contract.tp, 5), 1, np.float32),
                               index_t=np.zeros(contract.tp, np.float32),
                               frames=np.zeros((contract.tf, 4, 4, 3), np.uint8), quality={"scorable": True})

    s = Sample(str(video), "s", "smile", 1.0)
    c64 = PreprocessContract(tp=64, tf=16)
    FeatureCache(tmp_path / "cache", c64, fake_extract).get(s)
    d = FeatureCache(tmp_path / "cache", c64, fake_extract).get(s)      # cached: no second extraction
    assert calls == [64] and d["trajs"].shape == (63, 64, 5)
    d2 = FeatureCache(tmp_path / "cache", c64.with_(tp=128), fake_extract).get(s)
    assert calls == [64, 128] and d2["trajs"].shape == (63, 128, 5)
    video.write_bytes(b"another video")                                 # a changed file is re-extracted too
    FeatureCache(tmp_path / "cache", c64, fake_extract).get(s)
    assert calls == [64, 128, 64]


def test_stratified_validation_spans_groups_and_severities_and_never_takes_a_whole_group():
    from training.datasets import stratified_validation

    groups = {"A": "ALS", "S": "stroke", "N": "healthy", "O": "OP"}
    subjects = [f"A{i:02d}" for i in range(10)] + [f"S{i:02d}" for i in range(10)] + \
               [f"N{i:02d}" for i in range(5)] + ["O01"]
    # subject severity rises with its number; two clips each
    samples = [Sample(f"/v/{s}_{k}", s, "blow", 1.0 + int(s[1:]) % 5, group=groups[s[0]])
               for s in subjects for k in range(2)]
    for seed in range(5):
        tr, va, info = stratified_validation(samples, 0.2, seed)
        val_subjects = set(info["subjects"])
        assert val_subjects == {s.subject for s in va} and not val_subjects & {s.subject for s in tr}
        per_group = info["counts"]["val"]["per_group"]
        assert per_group == {"ALS": 4, "stroke": 4, "healthy": 2}            # 20% of 10, 10 and 5 subjects
        assert "OP" not in per_group and info["counts"]["train"]["per_group"]["OP"] == 2   # a 1-subject group
        for g in ("A", "S"):                                                 # spread over the severities
            sev = sorted(1 + int(s[1:]) % 5 for s in val_subjects if s[0] == g)
            assert sev[-1] - sev[0] >= 2, (seed, g, sev)
    tiny = [Sample("/v/a", "a", "smile", 0.0), Sample("/v/b", "b", "smile", 1.0), Sample("/v/b2", "b", "smile", 2)]
    tr, va, info = stratified_validation(tiny, 0.5, 0)
    assert "per-clip" in info["method"] and len(tr) + len(va) == 3
