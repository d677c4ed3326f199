"""Every task has its words in one place (model.tasks): a title and instructions for each expression the
contract knows, a title and description for each protocol."""
from __future__ import annotations

from model import contract, tasks


def test_every_expression_and_protocol_has_its_words():
    assert set(tasks.TASKS) == set(contract.EXPRESSIONS)
    assert set(tasks.PROTOCOL_INFO) == set(contract.PROTOCOLS)
    for e in contract.EXPRESSIONS:
        t = tasks.task(e)
        assert t.title and t.instructions.endswith(".") and t.instructions[0].isupper(), e
    shown = tasks.protocols()
    assert {k: [t["expression"] for t in p["tasks"]] for k, p in shown.items()} == \
        {k: list(v) for k, v in contract.PROTOCOLS.items()}
    assert shown["toronto"]["tasks"][0] == {"expression": "blow", **vars(tasks.TASKS["blow"])}
    assert tasks.task("not_a_task").title == "Not a task"
