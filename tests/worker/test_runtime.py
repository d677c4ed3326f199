"""The worker process's lifecycle (worker.runtime): it is ready only when every model it needs is loaded.

Given a worker process with scoring models, when it loads its models, then the face detector and
landmarker are loaded and run once too, the heartbeat names them, and only then is the worker warmed
(what /readyz and the container health check read). When the face models cannot be loaded, the
worker stays unwarmed and says why.
"""
from __future__ import annotations

import pytest

from bench.servers import untrained_models
from worker import runtime
from worker import settings as worker_settings
from worker.jobs.db import migrate
from worker.jobs.storage import LocalStorage
from worker.jobs.store import Store


@pytest.fixture()
def st(tmp_path, monkeypatch):
    models = untrained_models(tmp_path / "models", ["smile"])
    monkeypatch.setattr(worker_settings, "_current", worker_settings.get_settings())   # restored afterwards
    worker_settings.configure(var_dir=tmp_path / "var", model_dir=models)
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    migrate(url)
    return runtime.ProcessState(store=Store(url), storage=LocalStorage(tmp_path / "storage"), worker_id="h:1")


def test_warmed_only_with_the_face_models_loaded_and_run(st):
    from worker.face import DETECTOR_FILE, LANDMARK_FILE, default_mesh

    runtime.load_models(st)
    assert st.warmed and st.problem is None
    assert [m["name"] for m in st.face_models] == [DETECTOR_FILE, LANDMARK_FILE]
    assert all(len(m["sha256"]) == 64 for m in st.face_models)
    assert default_mesh.cache_info().currsize == 1          # the sessions extraction will use
    runtime._beat(st)
    (hb,) = st.store.ready_workers(60)
    assert [m["name"] for m in hb.detail["face_models"]] == [DETECTOR_FILE, LANDMARK_FILE]


def test_not_warmed_when_the_face_models_cannot_load(st, monkeypatch):
    import worker.face

    def missing():
        raise FileNotFoundError("face_landmark_468.onnx")

    monkeypatch.setattr(worker.face, "default_mesh", missing)
    runtime.load_models(st)
    assert not st.warmed and st.scorer is None and "face_landmark_468" in st.problem
    runtime._beat(st)
    assert st.store.ready_workers(60) == []
