"""Session fixtures for the training tests: the small PFED5 and Toronto NeuroFace layouts built from the real
videos (once per session), one shared feature cache, and the runs several tests read."""
from __future__ import annotations

import json

import pytest

from tests.training.layouts import TINY_MODEL, TINY_RECIPE, build_all


@pytest.fixture(scope="session")
def layouts(tmp_path_factory):
    return build_all(tmp_path_factory.mktemp("datasets"))


@pytest.fixture(scope="session")
def work(tmp_path_factory):
    """One feature cache for the session: each clip is extracted once."""
    return tmp_path_factory.mktemp("work")


def feqa(*argv) -> int:
    from service.cli import main

    return main([str(a) for a in argv])


def tiny_args(work) -> list:
    return ["--model-json", json.dumps(TINY_MODEL), *TINY_RECIPE, "--work", work, "--workers", "1", "--quiet",
            "--device", "cpu"]


@pytest.fixture(scope="session")
def pfed5_run(layouts, work, tmp_path_factory):
    """`feqa train --dataset pfed5` on the small layout (training split without header, test split with one)."""
    pf = layouts[0]
    out = tmp_path_factory.mktemp("pfed5_run")
    rc = feqa("train", "--dataset", "pfed5", "--data-root", pf.root, "--split-csv", pf.train_csv,
              "--test-csv", pf.test_csv, "--val-fraction", "0.4", "--out", out, *tiny_args(work))
    assert rc == 0
    (report_dir,) = (out / "reports").iterdir()
    return out, json.loads((report_dir / "report.json").read_text())


@pytest.fixture(scope="session")
def toronto_run(layouts, work, tmp_path_factory):
    """`feqa train --dataset toronto --folds 3` on the small layout."""
    tl = layouts[1]
    out = tmp_path_factory.mktemp("toronto_run")
    rc = feqa("train", "--dataset", "toronto", "--data-root", tl.root, "--repetitions", tl.repetitions,
              "--scores", tl.scores, "--folds", "3", "--out", out, *tiny_args(work))
    assert rc == 0
    (report_dir,) = (out / "reports").iterdir()
    return out, json.loads((report_dir / "report.json").read_text())
