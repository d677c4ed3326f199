"""One definition per shared constant: the copies that once drifted now read the one in model/.

Given the constants of model.contract and model.scales, then the layers that use them agree with them:
the network's token count, the channel sets, the scorer's checks, the web form's protocols and tasks.
"""
from __future__ import annotations

from model import config, contract, scorer, tasks, trajectory
from model.scales import MDS_UPDRS
from service.api.routes import web


def test_slots_and_channels_have_one_definition():
    assert trajectory.V == contract.N_SLOTS == contract.N_REGIONS * contract.SLOTS_PER_REGION == 63
    assert scorer.N_SLOTS is contract.N_SLOTS and scorer.FULL_CHANNELS is contract.FULL_CHANNELS
    assert config.CHANNEL_SETS[5] == contract.FULL_CHANNELS == contract.PreprocessContract().channels
    assert config.CHANNEL_SETS[2] + config.CHANNEL_SETS[3] == contract.FULL_CHANNELS


def test_the_web_form_lists_the_contracts_protocols_in_their_order():
    shown = web._protocols_for_template()
    assert {k: [t["expression"] for t in p["tasks"]] for k, p in shown.items()} == \
        {k: list(v) for k, v in contract.PROTOCOLS.items()}
    assert set(tasks.PROTOCOL_INFO) == set(contract.PROTOCOLS) and set(tasks.TASKS) == set(contract.EXPRESSIONS)


def test_no_copy_of_the_severity_words_outside_model_scales():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    words = '"slight", 2: "mild"'   # how a copy of MDS_UPDRS.meanings would be written
    assert MDS_UPDRS.meanings[1] == "slight"
    copies = [str(p.relative_to(root)) for pkg in ("worker", "service", "training")
              for p in (root / pkg).rglob("*.py") if words in p.read_text()]
    assert copies == []
