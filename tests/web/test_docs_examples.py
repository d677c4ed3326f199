"""The curl and Python examples in the docs run against the real service and get what they promise.

Given the real service (web_stack: API + worker) and a scored assessment, when every ```bash block that
calls curl and every ```python block of README.md, docs/api.md and docs/users.md runs (the server URL and
key substituted into FEQA_API / FEQA_API_KEY, the placeholder id replaced by the real one), then every curl
answer is a success and every Python example exits 0; the problem JSON example is exactly what the server
answers for that upload, and the item example uses only declared fields; docs/api.md's result example
validates as worker.result.ItemResult, uses only declared fields, and has the keys (and kinds of values) of
a result the service serves. The docs name one API-key variable throughout.
(Kept beside the web tests to share their running service.)
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from bench.servers import PYTHON
from tests.conftest import ROOT, real_video

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DOCS = [ROOT / "README.md", ROOT / "docs" / "api.md", ROOT / "docs" / "users.md"]
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
PLACEHOLDER_IDS = ("6d33e9c2...", "<id>")


def blocks(lang: str) -> list[tuple[str, str]]:
    return [(path.name, body) for path in DOCS for kind, body in FENCE.findall(path.read_text()) if kind == lang]


def substitute(code: str, base: str, key: str, aid: str) -> str:
    code = re.sub(r"FEQA_API=\S+", f"FEQA_API={base}", code)
    code = re.sub(r"FEQA_API_KEY=\S+", f"FEQA_API_KEY={key}", code)
    for placeholder in PLACEHOLDER_IDS:
        code = code.replace(placeholder, aid)
    return code


@pytest.fixture(scope="module")
def scored(web_stack, tmp_path_factory):
    key = web_stack.create_key("docs-examples")
    work = tmp_path_factory.mktemp("docs-run")
    for name in ("smile.mp4", "frown.mp4"):
        shutil.copyfile(real_video(), work / name)
    with web_stack.client(key) as http:
        r = http.post("/v1/assessments", files=[("video", ("smile.mp4", real_video().read_bytes(), "video/mp4"))],
                      data={"expression": "smile"})
        assert r.status_code == 202, r.text
        aid = r.json()["id"]
        deadline = 180
        while deadline > 0:
            body = http.get(f"/v1/assessments/{aid}").json()
            if body["status"] == "succeeded" and body["items"][0]["pictures"] != "pending":
                break
            deadline -= 1
            __import__("time").sleep(0.5)
    assert body["items"][0]["pictures"] == "ready", body
    return key, aid, work


def test_every_curl_example_succeeds(web_stack, scored):
    key, aid, work = scored
    found = [(doc, b) for doc, b in blocks("bash") if "curl " in b]
    assert {doc for doc, _ in found} == {"README.md", "api.md", "users.md"}, found
    env = {**os.environ, "FEQA_API": web_stack.base_url, "FEQA_API_KEY": key}   # exported in an earlier block
    for doc, body in found:
        code = substitute(body, web_stack.base_url, key, aid).replace("curl ", "curl -w '\\nHTTP %{http_code}\\n' ")
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=work, env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, (doc, code, done.stdout[-2000:], done.stderr[-2000:])
        statuses = [int(s) for s in re.findall(r"^HTTP (\d{3})$", done.stdout, re.M)]
        assert len(statuses) == body.count("curl "), (doc, done.stdout[-2000:])
        assert all(200 <= s < 300 for s in statuses), (doc, statuses, done.stdout[-3000:])
    assert (work / "overlay.png").read_bytes()[:4] == b"\x89PNG"


def test_every_python_example_runs(web_stack, scored):
    key, aid, work = scored
    found = blocks("python")
    assert found, "no Python example found"
    env = {**os.environ, "FEQA_API": web_stack.base_url, "FEQA_API_KEY": key, "PYTHONPATH": str(ROOT)}
    for doc, body in found:
        done = subprocess.run([PYTHON, "-c", substitute(body, web_stack.base_url, key, aid)], cwd=work, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (doc, body, done.stdout[-2000:], done.stderr[-3000:])
    assert "404 not_found" in done.stdout


def test_the_docs_name_one_api_key_variable_and_say_swagger_ui_is_local():
    text = "\n".join(p.read_text() for p in [*DOCS, *sorted((ROOT / "docs").glob("*.md"))])
    assert not re.search(r"\$KEY\b|\bFEQA_KEY\b|\bKEY=feqa", text), re.findall(r".*(?:\$KEY\b|FEQA_KEY).*", text)
    assert "FEQA_API_KEY" in text and "public CDN" not in text


def test_the_json_examples_match_what_the_server_sends(web_stack, scored):
    """The problem example is what the server answers for that upload; the item example uses only declared
    fields."""
    import json

    key, _, work = scored
    examples = [json.loads(b) for _, b in blocks("json") if b.lstrip().startswith("{") and _parses(b)]
    problem = next(e for e in examples if e.get("type", "").startswith("urn:feqa:problem:"))
    item = next(e for e in examples if "progress" in e and "result" in e)
    with web_stack.client(key) as http:
        files = [("video", ("smile.mp4", (work / "smile.mp4").read_bytes(), "video/mp4")),
                 ("video", ("notes.mp4", b"not a video\n" * 100, "video/mp4"))]
        r = http.post("/v1/assessments", files=files, data={"expression": ["smile", "frown"]})
        spec = http.get("/openapi.json").json()["components"]["schemas"]
    assert r.status_code == problem["status"] and r.json() == problem, (r.json(), problem)
    assert set(item) <= set(spec["ItemOut"]["properties"])
    assert set(item["result"]) <= set(spec["ItemResult"]["properties"])


def _parses(text: str) -> bool:
    import json

    try:
        json.loads(text)
    except ValueError:
        return False
    return True


# The parts of the result example that may show fewer keys than a served result (a data-keyed map), and the
# one whose keys are the model manifest's own (free-form: the web stack serves untrained test models, the
# example comes from a demo model). Everywhere else the example has exactly the served keys.
EXAMPLE_SUBSETS = {"repetitions[].measures.regions"}
MANIFEST_DEFINED = {"model.training_data"}


def result_example() -> dict:
    import json

    text = (ROOT / "docs" / "api.md").read_text()
    section = text[text.index("\n## A result\n"):]
    kind, body = FENCE.findall(section)[0]
    assert kind == "json"
    return json.loads(body)


def _kind(v) -> str:
    return {bool: "bool", int: "number", float: "number", str: "str", dict: "object", list: "array"}.get(
        type(v), "null")


def differences(example, served, path: str = "") -> list[str]:
    out: list[str] = []
    if example is None or served is None or path in MANIFEST_DEFINED:
        return out
    if _kind(example) != _kind(served):
        return [f"{path or '.'}: {_kind(example)} in the example, {_kind(served)} served"]
    if isinstance(example, dict):
        def child(k: str) -> str:
            return f"{path}.{k}" if path else k

        out += [f"{child(k)}: not served" for k in sorted(set(example) - set(served))]
        if path not in EXAMPLE_SUBSETS:
            out += [f"{child(k)}: served, not in the example" for k in sorted(set(served) - set(example))]
        for k in sorted(set(example) & set(served)):
            out += differences(example[k], served[k], child(k))
    elif isinstance(example, list) and example and served:
        out += differences(example[0], served[0], f"{path}[]")
    return out


def test_the_api_result_example_is_a_real_served_result(web_stack, scored):
    from worker import result as rm

    example = result_example()
    assert "…" not in str(example) and "..." not in str(example)
    typed = rm.ItemResult.model_validate(example)                 # the typed model accepts it
    assert typed.score == example["score"] and typed.scale and typed.scale.name == "mds_updrs_3_2"
    declared = [(example, rm.ItemResult), (example["model"], rm.ModelFacts), (example["video"], rm.VideoFacts),
                (example["scale"], rm.ScaleInfo), (example["aggregation"], rm.Aggregation),
                (example["windows"][0], rm.Window), (example["repetitions"][0], rm.Repetition),
                (example["repetitions"][0]["measures"], rm.RepetitionMeasures),
                (example["measures"], rm.Measures),
                *[(r, rm.RegionMeasures) for r in example["measures"]["regions"].values()]]
    for part, model in declared:
        assert set(part) <= set(model.model_fields), (model.__name__, set(part) - set(model.model_fields))
    key, aid, _ = scored
    with web_stack.client(key) as http:
        served = http.get(f"/v1/assessments/{aid}").json()["items"][0]["result"]
    assert served["expression"] == example["expression"] == "smile"
    diff = differences(example, served)
    assert diff == [], diff
    # and the checker finds a difference when there is one
    assert differences({**example, "timings": {"total": 1.0}}, served)
    assert differences({**example, "score": "0"}, served)
