"""The web form's task titles and instructions and GET /v1/models come from one definition (model.tasks).

In-process API (FastAPI TestClient), no browser: every task of every protocol the API can serve has its
title and instructions in /v1/models, and the page the form renders shows exactly those words."""
from __future__ import annotations

from markupsafe import escape

from model import contract, tasks


def test_every_served_protocol_task_has_instructions_and_the_page_shows_the_same(client, app):
    key = app.state.store.create_key("clinic-a")
    body = client.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).json()
    assert set(body["protocols"]) == set(contract.PROTOCOLS)
    page = client.get("/").text
    seen = set()
    for name, proto in body["protocols"].items():
        assert proto["title"] == tasks.PROTOCOL_INFO[name].title and proto["description"]
        assert [t["expression"] for t in proto["tasks"]] == list(contract.PROTOCOLS[name])
        assert esc(proto["title"]) in page
        for t in proto["tasks"]:
            assert t["title"] and t["instructions"], t
            assert (t["title"], t["instructions"]) == (tasks.task(t["expression"]).title,
                                                       tasks.task(t["expression"]).instructions)
            block = page[page.index(f'id="task-{t["expression"]}"'):]
            block = block[:block.index("</fieldset>")]
            assert f'. {esc(t["title"])}</legend>' in block
            assert f'>{esc(t["instructions"])}</p>' in block
            seen.add(t["expression"])
    # every expression an upload may name is in a protocol, so none lacks its words
    assert seen == set(contract.EXPRESSIONS)
    spec = client.get("/openapi.json").json()["components"]["schemas"]
    assert {"title", "instructions"} <= set(spec["TaskOut"]["properties"])


def esc(text: str) -> str:
    return str(escape(text))      # as the page's Jinja2 autoescape writes it
