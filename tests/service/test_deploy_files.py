"""docker-compose.yml and docker/: the compose file against the compose-spec schema (check-jsonschema's
vendored copy, offline), and the images' pip lists against pyproject.toml and against what a worker
really imports (a task scored and drawn in a process where torch cannot be imported)."""
from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import metadata

import pytest
import yaml

from tests.conftest import ROOT

DOCKER = ROOT / "docker"
WORKER_IMAGES = ("Dockerfile.worker-cpu", "Dockerfile.worker-gpu")
_SPEC = re.compile(r'"([A-Za-z0-9_.\-\[\]]+(?:[<>=!~]=?[^"]*)?)"')


def _pip_specs(dockerfile: str) -> list[str]:
    """The quoted requirement strings of the file's `pip install` lines (continuations joined)."""
    text = (DOCKER / dockerfile).read_text().replace("\\\n", " ")
    return [spec for line in text.splitlines() if line.startswith("RUN ") and "pip install" in line
            for spec in _SPEC.findall(line)]


def _name(spec: str) -> str:
    return re.split(r"[\[<>=!~;]", spec, maxsplit=1)[0].strip().lower().replace("_", "-")


def _pyproject() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] + project["optional-dependencies"]["gpu"]
    return {_name(s): s.split(";")[0].strip() for s in specs}


def test_compose_file_matches_the_compose_spec_schema():
    r = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
                        str(ROOT / "docker-compose.yml")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_compose_services_build_existing_dockerfiles_and_store_objects_in_minio():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"redis", "postgres", "minio", "minio-bucket", "api", "worker-cpu", "worker-gpu"} <= set(services)
    bucket_env = services["minio-bucket"]["environment"]
    assert services["minio-bucket"]["depends_on"]["minio"]["condition"] == "service_healthy"
    assert services["minio"]["healthcheck"]["test"]
    for name in ("api", "worker-cpu", "worker-gpu"):
        svc = services[name]
        env = svc["environment"]
        assert (ROOT / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file(), name
        assert svc["depends_on"]["postgres"]["condition"] == "service_healthy", name
        assert svc["depends_on"]["minio-bucket"]["condition"] == "service_completed_successfully", name
        assert env["FEQA_SECRET_KEY"].startswith("${FEQA_SECRET_KEY:?"), name
        # Object storage, and no volume shared with another FEQA service: only the read-only models.
        assert env["FEQA_STORAGE_BACKEND"] == "s3" and env["FEQA_S3_ENDPOINT_URL"] == "http://minio:9000", name
        assert env["FEQA_S3_BUCKET"] == bucket_env["FEQA_S3_BUCKET"], name
        assert env["FEQA_S3_SECRET_ACCESS_KEY"].startswith("${FEQA_S3_SECRET_ACCESS_KEY:?"), name
        assert "FEQA_STORAGE_DIR" not in env, name
        assert all(v.endswith(":ro") for v in svc.get("volumes", [])), (name, svc.get("volumes"))
    assert "uploads" not in compose["volumes"]
    assert services["worker-gpu"]["profiles"] == ["gpu"]


def test_images_that_may_use_object_storage_install_boto3():
    for dockerfile in ("Dockerfile.api", *WORKER_IMAGES):
        assert "boto3" in {_name(s) for s in _pip_specs(dockerfile)}, dockerfile


@pytest.mark.parametrize("dockerfile", ["Dockerfile.api", *WORKER_IMAGES])
def test_image_requirements_are_pyproject_requirements(dockerfile):
    wanted = _pyproject()
    specs = _pip_specs(dockerfile)
    assert specs, f"no pip requirements found in {dockerfile}"
    for spec in specs:
        assert wanted.get(_name(spec)) == spec, f"{dockerfile}: {spec!r} differs from pyproject ({wanted.get(_name(spec))!r})"
    assert "pip install --no-deps -e ." in (DOCKER / dockerfile).read_text()   # nothing beyond the list
    if dockerfile in WORKER_IMAGES:
        runs = [ln for ln in (DOCKER / dockerfile).read_text().replace("\\\n", " ").splitlines()
                if ln.startswith("RUN ")]
        assert not any("torch" in ln for ln in runs), f"{dockerfile} installs torch"


WORKER_RUN = """
import os, sys
sys.modules["torch"] = None          # an image without torch: any import of it fails
from pathlib import Path
from worker.jobs.storage import LocalStorage
from worker.jobs.db import migrate
from worker.jobs.store import NewItem, Store
from model.scorer import Scorer
from worker import runtime, tasks
import service.cli, worker.cli_worker  # the `feqa worker` entry point
tmp, video = Path(sys.argv[2]), Path(sys.argv[3])
migrate(f"sqlite:///{tmp / 'db.sqlite3'}")
st = runtime.ProcessState(store=Store(f"sqlite:///{tmp / 'db.sqlite3'}"), storage=LocalStorage(tmp / "storage"),
                        worker_id=runtime.this_worker_id())
st.scorer, st.warmed = Scorer(sys.argv[1]), True
runtime.install(st)
aid = st.store.new_id()
st.storage.put_file(f"uploads/{aid}/0.video", video)
st.store.create_assessment(aid, "t", [NewItem("smile", f"uploads/{aid}/0.video", "0", video.stat().st_size)])
iid = st.store.item_ids(aid)[0]
assert tasks.assess_item.apply(args=[iid]).get() == "succeeded"
runtime.flush_pictures()
assert sorted(st.store.get_item(iid).artifacts) == ["overlay", "trajectories"]
from importlib.metadata import packages_distributions
dists = packages_distributions()
print(sorted({d for m, v in list(sys.modules.items()) if v is not None for d in dists.get(m.split(".")[0], [])}))
"""


def _closure(names: set[str]) -> set[str]:
    """The distributions `names` pull in (all their requirements, recursively, extras included)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        try:
            reqs = metadata.requires(n) or []
        except metadata.PackageNotFoundError:
            continue
        todo.extend(_name(r) for r in reqs)
    return seen


def test_a_worker_scores_and_draws_without_torch_using_only_its_image_packages(tmp_path, model_dir, video_path):
    r = subprocess.run([sys.executable, "-c", WORKER_RUN, str(model_dir), str(tmp_path), str(video_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    used = {_name(d) for d in eval(r.stdout.strip().splitlines()[-1])} - {"feqa", "setuptools"}   # noqa: S307
    assert "torch" not in used
    image = _closure({_name(s) for s in _pip_specs("Dockerfile.worker-cpu")})
    assert used <= image, f"the worker image lacks {sorted(used - image)}"


def test_compose_migrates_once_before_the_api_and_the_workers_start():
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert services["migrate"]["command"] == ["feqa", "migrate"]
    for name in ("api", "worker-cpu", "worker-gpu"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully", name


def _copied(dockerfile: str) -> list[str]:
    return [ln.split()[1] for ln in (DOCKER / dockerfile).read_text().splitlines() if ln.startswith("COPY ")]


def test_images_hold_only_the_packages_they_run():
    # the API runs service on worker (settings, job store, probe) and model; a worker runs worker and model
    assert _copied("Dockerfile.api") == ["pyproject.toml", "model", "worker", "service"]
    for dockerfile in WORKER_IMAGES:
        assert _copied(dockerfile) == ["pyproject.toml", "model", "worker"], dockerfile
        text = (DOCKER / dockerfile).read_text()
        assert 'CMD ["feqa-worker", "--concurrency"' in text and 'CMD ["feqa-worker", "--healthcheck"]' in text


def test_the_commands_run_where_packages_are_missing():
    # given an install without service/ or training/ (a worker image, the API image), then what is there runs
    code = ("import sys\nsys.modules['training'] = None\nfrom service.cli import build_parser\n"
            "cmds = build_parser()._subparsers._group_actions[0].choices\n"
            "assert 'train' not in cmds and {'serve', 'worker', 'migrate'} <= set(cmds), sorted(cmds)\n"
            "sys.modules['service'] = None\nfrom worker.cli_worker import main\n"
            "raise SystemExit(main(['--help']))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "feqa-worker" in r.stdout and "--healthcheck" in r.stdout
