"""Given the reference-layout weight fixtures (a trajectory encoder, an RGB encoder, fusion + head), when
`--init` loads several of them, then strict loading covers whole parts and says per part what is loaded and
what is random, a file missing `rgb_transform.weight` but holding its bias is refused, `--init-partial` lists
every tensor it drops, and the files' sha256 are recorded."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from model.config import get_config
from model.keymap import load_reference_state_dict
from model.manifest import sha256_file
from model.network import TrampFormer
from tests.conftest import FIXTURES
from training.train import InitError, load_init

TRAJ, RGB, HEAD = (FIXTURES / f for f in ("trajectory_encoder_tp128.safetensors", "rgb_encoder.safetensors",
                                          "fusion_head.safetensors"))


@pytest.fixture(scope="module")
def paper():
    if not TRAJ.exists():
        pytest.fail(f"reference fixtures missing at {FIXTURES}")
    return get_config("paper", expression="smile")


def test_strict_init_from_two_files_reports_parts_and_hashes(paper):
    logs = []
    state, rep = load_init(paper, [str(TRAJ), str(HEAD)], log=logs.append)
    assert rep["mode"] == "strict" and [f["sha256"] for f in rep["files"]] == [sha256_file(TRAJ),
                                                                              sha256_file(HEAD)]
    own = TrampFormer(paper).state_dict()
    parts = rep["parts"]
    assert parts["traj."]["random"] == 0 and parts["fusion."]["random"] == 0 and parts["head."]["random"] == 0
    assert parts["rgb."]["loaded"] == 0 and parts["rgb."]["random"] == sum(k.startswith("rgb.") for k in own)
    assert set(state) == {k for k in own if not k.startswith("rgb.")}
    assert any("(all random)" in m and "rgb." in m for m in logs)
    model = TrampFormer(paper)
    model.load_state_dict(state, strict=False)
    ref = load_reference_state_dict(TrampFormer(paper), str(TRAJ))
    assert ref["parts"] == ["traj."]


def test_rgb_transform_bias_without_its_weight_fails_strict_import(paper, tmp_path):
    from safetensors.torch import load_file

    sd = load_file(str(RGB))
    assert "state.rgb_transform.weight" in sd
    del sd["state.rgb_transform.weight"]
    broken = tmp_path / "rgb_no_transform_weight.safetensors"
    save_file(sd, str(broken))
    with pytest.raises(ValueError, match="rgb.clip_proj.weight"):
        load_reference_state_dict(TrampFormer(paper), str(broken))
    with pytest.raises(InitError, match="missing 1"):
        load_init(paper, [str(broken)], log=lambda *_: None)
    # without either rgb_transform tensor (a bare Former-DFER file) the encoder loads, clip_proj random
    del sd["state.rgb_transform.bias"]
    bare = tmp_path / "rgb_bare.safetensors"
    save_file(sd, str(bare))
    state, rep = load_init(paper, [str(bare)], log=lambda *_: None)
    assert set(rep["parts"]["rgb."]["random_tensors"]) == {"rgb.clip_proj.weight", "rgb.clip_proj.bias"}


def test_init_files_that_set_the_same_tensor_are_refused(paper):
    with pytest.raises(InitError, match="another --init file"):
        load_init(paper, [str(HEAD), str(HEAD)], log=lambda *_: None)


def test_strict_init_refuses_a_config_it_does_not_fit_and_partial_lists_every_drop():
    compact = get_config("compact", expression="smile")
    with pytest.raises(InitError, match="does not fit the compact config strictly"):
        load_init(compact, [str(HEAD)], log=lambda *_: None)
    logs = []
    state, rep = load_init(compact, [str(HEAD)], partial=True, log=logs.append)
    own = TrampFormer(compact).state_dict()
    from safetensors.torch import load_file

    n_ref = sum(k.startswith("state.") for k in load_file(str(HEAD)))
    assert len(state) + len(rep["dropped"]) == n_ref
    assert all(own[k].shape == v.shape for k, v in state.items())
    for d in rep["dropped"]:
        assert d["model_shape"] is None or d["model_shape"] != d["reference_shape"]
        assert any(d["tensor"] in m for m in logs)
    assert rep["files"][0]["dropped"] == len(rep["dropped"]) > 0
    assert rep["parts"]["head."]["loaded"] + rep["parts"]["head."]["random"] == sum(k.startswith("head.")
                                                                                     for k in own)
    assert torch.is_tensor(next(iter(state.values())))
