"""The curl and Python examples in the docs run against the real service and get what they promise.

Given the real service (web_stack: API + worker) and a scored assessment, when every ```bash block that
calls curl and every ```python block of README.md, docs/api.md and docs/users.md runs (the server URL and
key substituted into FEQA_API / FEQA_API_KEY, the placeholder id replaced by the real one), then every curl
answer is a success and every Python example exits 0; the problem JSON example is exactly what the server
answers for that upload, and the item example uses only declared fields. The docs name one API-key
variable throughout.
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
