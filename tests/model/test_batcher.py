"""Dynamic batching across jobs (model/batcher.py): concurrent callers share onnxruntime calls and each gets
exactly the scores a direct call gives; a bad request fails only its caller; CUDA device selection."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from model.batcher import BatchingScorer, providers_for
from model.errors import ContractError
from model.scorer import Scorer
from tests.conftest import ROOT
from tests.model.test_scorer_batch import _inputs

DEMO = ROOT / "models" / "demo"


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    return Scorer(DEMO)


def test_concurrent_jobs_are_batched_and_each_gets_its_own_scores(scorer):
    batcher = BatchingScorer(scorer, max_batch=32, max_wait_s=0.05)
    jobs = [_inputs(scorer, "smile", b, seed=i) for i, b in enumerate((3, 1, 5, 2, 4, 6))]
    want = [scorer.score("smile", *j) for j in jobs]
    got: dict[int, np.ndarray] = {}
    start = threading.Barrier(len(jobs))

    def job(i: int) -> None:
        start.wait()
        got[i] = batcher.score("smile", *jobs[i])
    threads = [threading.Thread(target=job, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for i, w in enumerate(want):
        np.testing.assert_allclose(got[i], w, rtol=1e-5, atol=1e-5)
    assert sum(batcher.batches) == 21 and max(batcher.batches) > 6      # windows of several jobs in one call
    assert batcher.manifest("smile") == scorer.manifest("smile")        # the rest passes through
    batcher.close()


def test_a_bad_request_fails_alone_and_big_or_other_expression_requests_run_apart(scorer):
    batcher = BatchingScorer(scorer, max_batch=8, max_wait_s=0.05)
    good = _inputs(scorer, "smile", 2)
    trajs, index_t, frames = _inputs(scorer, "smile", 2, seed=1)
    out: dict[str, object] = {}

    def run(name, *args):
        try:
            out[name] = batcher.score(*args)
        except Exception as exc:   # noqa: BLE001 - the test inspects it
            out[name] = exc
    threads = [threading.Thread(target=run, args=("good", "smile", *good)),
               threading.Thread(target=run, args=("bad", "smile", trajs[:, :, :3], index_t, frames)),
               threading.Thread(target=run, args=("frown", "frown", *_inputs(scorer, "frown", 2))),
               threading.Thread(target=run, args=("big", "smile", *_inputs(scorer, "smile", 12)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    np.testing.assert_allclose(out["good"], scorer.score("smile", *good), rtol=1e-5, atol=1e-5)
    assert isinstance(out["bad"], ContractError)
    assert out["frown"].shape == (2,) and out["big"].shape == (12,)
    assert 12 in batcher.batches                      # larger than max_batch: run alone, whole
    batcher.close()


def test_providers_pin_the_cuda_device_of_this_worker_process():
    assert providers_for(None, None) is None
    assert providers_for(["CPUExecutionProvider"], None) == ["CPUExecutionProvider"]
    assert providers_for(None, 1) == [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]
    assert providers_for(["CUDAExecutionProvider", "CPUExecutionProvider"], 0)[0] == \
        ("CUDAExecutionProvider", {"device_id": 0})
