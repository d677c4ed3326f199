"""The host's scorer process (worker/score_server.py): worker processes score through it exactly as through
their own Scorer, a bad request fails alone, windows of different processes share one onnxruntime call, and a
scorer that goes away is an error the task retries, picked up again when it is back."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from bench.servers import untrained_models
from model.batcher import BatchingScorer
from model.errors import ContractError
from model.scorer import Scorer
from worker.score_server import RemoteScorer, ScorerUnavailable, ScoreServer

ROOT = Path(__file__).resolve().parents[2]
SECRET = "test-secret-for-the-scorer"


def _inputs(contract, n: int, seed: int):
    rng = np.random.default_rng(seed)
    c = contract
    return (rng.normal(0, 1, (n, 63, c.tp, 5)).astype(np.float32),
            np.tile(np.linspace(-1, 1, c.tp, dtype=np.float32), (n, 1)),
            rng.integers(0, 255, (n, c.tf, c.frame_size, c.frame_size, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return untrained_models(tmp_path_factory.mktemp("scorer-models"), ("smile",))


@pytest.fixture()
def served(models, tmp_path):
    local = Scorer(models)
    server = ScoreServer(BatchingScorer(local, max_batch=32, max_wait_s=0.4), tmp_path / "run" / "scorer.sock", SECRET)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield server, local
    server.close()


def test_a_worker_scores_through_the_scorer_as_through_its_own_models(served):
    server, local = served
    remote = RemoteScorer(server.path, SECRET)
    assert remote.expressions() == local.expressions() == ["smile"]
    assert remote.manifest("smile")["sha256"] == local.manifest("smile")["sha256"]
    assert remote.contract("smile") == local.contract("smile")
    x = _inputs(local.contract("smile"), 3, seed=1)
    assert np.array_equal(remote.score("smile", *x), local.score("smile", *x))
    assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o600      # only this host's service user


def test_a_bad_request_fails_its_caller_only_with_its_code(served):
    server, local = served
    remote = RemoteScorer(server.path, SECRET)
    trajs, index_t, frames = _inputs(local.contract("smile"), 1, seed=2)
    with pytest.raises(ContractError) as err:
        remote.score("smile", trajs[:, :10], index_t, frames)           # 10 slots instead of 63
    assert err.value.code == "contract_mismatch"
    assert remote.score("smile", trajs, index_t, frames).shape == (1,)   # the same connection still serves
    with pytest.raises(Exception) as unknown:
        remote.manifest("blow")
    assert getattr(unknown.value, "code", "") == "model_unavailable"


def test_a_client_without_the_key_is_refused(served):
    server, _ = served
    with pytest.raises(ScorerUnavailable):
        RemoteScorer(server.path, "another-secret")
    assert RemoteScorer(server.path, SECRET).expressions() == ["smile"]   # and the server keeps serving


CLIENT = """
import sys, time, numpy as np
sys.path.insert(0, {root!r})
from worker.score_server import RemoteScorer
r = RemoteScorer({path!r}, {secret!r})
c = r.contract("smile")
rng = np.random.default_rng(int(sys.argv[1]))
x = (rng.normal(0, 1, (2, 63, c.tp, 5)).astype(np.float32), np.zeros((2, c.tp), np.float32),
     rng.integers(0, 255, (2, c.tf, c.frame_size, c.frame_size, 3), dtype=np.uint8))
while time.time() < float(sys.argv[2]):
    time.sleep(0.005)
print(" ".join(f"{{v:.6f}}" for v in r.score("smile", *x)))
"""


def test_windows_of_three_processes_share_one_onnxruntime_call(served, tmp_path):
    server, local = served
    script = tmp_path / "client.py"
    script.write_text(CLIENT.format(root=str(ROOT), path=str(server.path), secret=SECRET))
    start_at = time.time() + 8.0                 # every client connected and waiting by then
    procs = [subprocess.Popen([sys.executable, str(script), str(seed), str(start_at)], stdout=subprocess.PIPE,
                              text=True) for seed in (11, 12, 13)]
    outs = [p.communicate(timeout=120)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    stats = RemoteScorer(server.path, SECRET).stats()
    assert 6 in stats["batches"], stats        # 3 processes x 2 windows in one call (wait bound 0.4 s)
    c = local.contract("smile")
    for seed, out in zip((11, 12, 13), outs, strict=True):   # each got its own windows' scores back
        rng = np.random.default_rng(seed)
        x = (rng.normal(0, 1, (2, 63, c.tp, 5)).astype(np.float32), np.zeros((2, c.tp), np.float32),
             rng.integers(0, 255, (2, c.tf, c.frame_size, c.frame_size, 3), dtype=np.uint8))
        assert np.allclose([float(v) for v in out], local.score("smile", *x), atol=1e-5)


def test_a_scorer_that_goes_away_is_retried_and_picked_up_again(models, tmp_path):
    path = tmp_path / "scorer.sock"
    local = Scorer(models)

    def serve():
        server = ScoreServer(local, path, SECRET)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    server = serve()
    remote = RemoteScorer(path, SECRET)
    x = _inputs(local.contract("smile"), 1, seed=3)
    first = remote.score("smile", *x)
    server.close()
    with pytest.raises(ScorerUnavailable) as gone:
        remote.score("smile", *x)
    assert gone.value.code == "scorer_unavailable"   # transient: the worker's task retries it
    server = serve()                                # restarted: the same client reconnects by itself
    try:
        assert np.array_equal(remote.score("smile", *x), first)
    finally:
        server.close()
