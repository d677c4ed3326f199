"""Workers take their models from a model store (worker/model_store.py), here a prefix on a real S3-speaking
server (moto): copied into a private cache, each file checked against its manifest's sha256, kept when
unchanged, refused when the store holds a changed file, removed when withdrawn."""
from __future__ import annotations

import pytest

from model.errors import ModelIntegrityError
from model.scorer import Scorer
from tests.conftest import ROOT
from tests.s3server import moto_server
from worker.model_store import resolve_model_dir
from worker.settings import Settings

DEMO = ROOT / "models" / "demo"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with moto_server(tmp_path_factory.mktemp("s3")) as server:
        yield server


def _settings(s3, tmp_path, store: str) -> Settings:
    env = s3.env()
    return Settings(var_dir=tmp_path / "var", model_store=store, storage_backend="s3", s3_bucket=s3.bucket,
                    s3_endpoint_url=env["FEQA_S3_ENDPOINT_URL"], s3_access_key_id=s3.access_key,
                    s3_secret_access_key=s3.secret_key, s3_region="us-east-1")


def _publish(s3, prefix: str, names: list[str], onnx_bytes: bytes | None = None) -> None:
    c = s3.client()
    for name in names:
        c.put_object(Bucket=s3.bucket, Key=f"{prefix}{name}.json", Body=(DEMO / f"{name}.json").read_bytes())
        c.put_object(Bucket=s3.bucket, Key=f"{prefix}{name}.onnx",
                     Body=onnx_bytes if onnx_bytes is not None else (DEMO / f"{name}.onnx").read_bytes())


def test_models_come_from_the_bucket_verified_kept_and_withdrawn(s3, tmp_path):
    _publish(s3, "models/v1/", ["smile-compact", "frown-compact"])
    settings = _settings(s3, tmp_path, f"s3://{s3.bucket}/models/v1/")
    d = resolve_model_dir(settings)
    assert d.is_relative_to(settings.var_dir)
    scorer = Scorer(d)
    assert scorer.expressions() == ["frown", "smile"]
    assert scorer.manifest("smile") == Scorer(DEMO).manifest("smile")
    before = (d / "smile-compact.onnx").stat().st_mtime_ns
    s3.client().delete_object(Bucket=s3.bucket, Key="models/v1/frown-compact.json")
    assert resolve_model_dir(settings) == d
    assert (d / "smile-compact.onnx").stat().st_mtime_ns == before          # unchanged: not copied again
    assert sorted(p.name for p in d.iterdir()) == ["smile-compact.json", "smile-compact.onnx"]   # withdrawn


def test_a_changed_file_in_the_store_is_refused_and_never_cached(s3, tmp_path):
    _publish(s3, "models/bad/", ["smile-compact"], onnx_bytes=(DEMO / "smile-compact.onnx").read_bytes()[:-10])
    settings = _settings(s3, tmp_path, f"s3://{s3.bucket}/models/bad/")
    with pytest.raises(ModelIntegrityError, match="does not match its manifest"):
        resolve_model_dir(settings)
    cache = next((settings.var_dir / "model-cache").iterdir())
    assert list(cache.iterdir()) == []


def test_a_folder_store_is_used_as_it_is(tmp_path):
    assert resolve_model_dir(Settings(var_dir=tmp_path, model_store=str(DEMO))) == DEMO
    assert resolve_model_dir(Settings(var_dir=tmp_path, model_dir=DEMO)) == DEMO
