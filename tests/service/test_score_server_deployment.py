"""A GPU host's shape with real parts, on the CPU: one `feqa scorer` process holding the models, a Celery
worker with two prefork processes that hold none (their model directory is empty) and score through the
scorer's socket, the API and Redis. Every video of an assessment is scored, by the scorer's model, and the
scorer saw every worker process's windows."""
from __future__ import annotations

import time

import httpx
import pytest

from bench.servers import PYTHON, feqa_stack, start, worker_cmd
from worker.score_server import RemoteScorer
from worker.settings import DEFAULT_SECRET

pytestmark = pytest.mark.integration
N_ITEMS = 3


def test_workers_without_models_score_through_the_hosts_scorer(tmp_path, model_dir, video_bytes):
    sock = tmp_path / "run" / "scorer.sock"
    empty = tmp_path / "no-models"
    empty.mkdir()
    with feqa_stack(tmp_path, model_dir=model_dir, broker="redis", workers=0, ready=False,
                    env={"FEQA_SCORER_SOCKET": str(sock)}) as stack:
        scorer = start("scorer", [PYTHON, "-m", "service.cli", "scorer", "--socket", str(sock), "--wait-ms", "20"],
                       stack.env, stack.var_dir / "logs")
        stack.procs.append(scorer)
        deadline = time.monotonic() + 90
        while not sock.exists():
            assert scorer.alive() and time.monotonic() < deadline, stack.logs()
            time.sleep(0.2)
        worker = start("worker-prefork", worker_cmd(pool="prefork", concurrency=2, name="gpuhost"),
                       {**stack.env, "FEQA_MODEL_DIR": str(empty)}, stack.var_dir / "logs")
        stack.procs.append(worker)
        stack.wait_ready()
        key = stack.create_key("clinic-gpu")
        with stack.client(key) as http:
            r = http.post("/v1/assessments", data={"expression": ["smile"] * N_ITEMS},
                          files=[("video", (f"clip{i}.mp4", video_bytes, "video/mp4")) for i in range(N_ITEMS)])
            assert r.status_code == 202, r.text
            body = stack.wait_done(http, r.json()["id"], timeout=150)
        assert body["status"] == "succeeded", (body, stack.logs())
        served_sha = RemoteScorer(sock, stack.env.get("FEQA_SECRET_KEY", DEFAULT_SECRET)
                                  ).manifest("smile")["sha256"]
        assert {it["result"]["model"]["sha256"] for it in body["items"]} == {served_sha}
        stats = RemoteScorer(sock, stack.env.get("FEQA_SECRET_KEY", DEFAULT_SECRET)).stats()
        assert stats["requests"] >= N_ITEMS and sum(stats["batches"]) >= N_ITEMS, stats
        workers = httpx.get(f"{stack.base_url}/readyz").json()["checks"]["workers"]
        assert workers and all(w["versions"].get("smile") for w in workers)   # the scorer's models, reported
