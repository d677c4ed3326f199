"""`feqa scorer`: the host's one scoring process, fed by its worker processes (worker/score_server.py).

Start it before (or beside) the workers of the same host, which then use it through FEQA_SCORER_SOCKET:

    feqa scorer --socket /run/feqa/scorer.sock
    FEQA_SCORER_SOCKET=/run/feqa/scorer.sock feqa worker --pool prefork --concurrency 6

It loads the models of FEQA_MODEL_DIR / FEQA_MODEL_STORE once (on FEQA_CUDA_DEVICE_ID's GPU when set) and
runs every worker's windows through one dynamic batcher (FEQA_SCORE_BATCH_WAIT_MS, 5 ms when unset).
"""
from __future__ import annotations

import argparse
import signal
from pathlib import Path

HELP = "run the host's scoring process that batches the windows of its worker processes"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--socket", type=Path, default=None,
                        help="Unix socket path (default FEQA_SCORER_SOCKET, else <FEQA_VAR_DIR>/scorer.sock)")
    parser.add_argument("--model-dir", default=None, help="model directory (default FEQA_MODEL_DIR)")
    parser.add_argument("--wait-ms", type=float, default=None,
                        help="how long windows wait for others to share a call (default FEQA_SCORE_BATCH_WAIT_MS or 5)")


def run(args: argparse.Namespace) -> int:
    import logging

    from model.batcher import BatchingScorer
    from worker.runtime import local_scorer
    from worker.score_server import ScoreServer
    from worker.settings import configure

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = configure(model_dir=args.model_dir)
    path = args.socket or settings.scorer_socket or settings.var_dir / "scorer.sock"
    wait_ms = args.wait_ms if args.wait_ms is not None else (settings.score_batch_wait_ms or 5.0)
    scorer, where = local_scorer(settings)
    if not scorer.expressions():
        print(f"no models in {where}")
        return 1
    scorer.warmup()
    server = ScoreServer(BatchingScorer(scorer, settings.score_max_batch, wait_ms / 1000), path, settings.secret_key)

    def stop(signum: int, frame: object) -> None:
        server.close()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"scorer ready on {path} ({', '.join(scorer.expressions())}; batch wait {wait_ms:g} ms)", flush=True)
    server.serve_forever()
    return 0
