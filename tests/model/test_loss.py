"""Given the BalancedMSE fixture, when BMCLoss runs with (pred, target), then loss and gradients match."""
from __future__ import annotations

import json

import pytest
import torch

from model.loss import BMCLoss, bmc_loss
from tests.conftest import FIXTURES


@pytest.fixture(scope="module")
def bmc():
    path = FIXTURES / "bmc_loss.json"
    if not path.exists():
        pytest.skip(f"reference fixtures not found at {FIXTURES} (set FEQA_SHARED); CI always has them")
    return json.loads(path.read_text())


def _run(fx: dict, sigma: float, swapped: bool = False):
    pred = torch.tensor(fx["pred"], dtype=torch.float32).reshape(8, 1).requires_grad_(True)
    target = torch.tensor(fx["target"], dtype=torch.float32).reshape(8, 1)
    crit = BMCLoss(init_sigma=sigma, learnable=True)
    loss = crit(target, pred) if swapped else crit(pred, target)
    g_pred, g_sigma = torch.autograd.grad(loss, [pred, crit.noise_sigma])
    return loss.item(), g_pred.reshape(-1), g_sigma.item()


@pytest.mark.parametrize("sigma", [1.0, 0.7])
def test_bmc_matches_balancedmse_order(bmc, sigma):
    ref = bmc["balancedmse_order"][f"sigma={sigma}"]
    loss, g_pred, g_sigma = _run(bmc, sigma)
    assert loss == pytest.approx(ref["loss"], abs=1e-6)
    assert torch.allclose(g_pred, torch.tensor(ref["grad_pred"]), atol=1e-6)
    assert g_sigma == pytest.approx(ref["grad_noise_sigma"], abs=1e-6)


@pytest.mark.parametrize("sigma", [1.0, 0.7])
def test_swapped_order_is_the_reference_defect(bmc, sigma):
    """The reference's (target, pred) call gives different numbers: the order matters."""
    ref = bmc["trampformer_swapped_order"][f"sigma={sigma}"]
    loss, g_pred, _ = _run(bmc, sigma, swapped=True)
    assert loss == pytest.approx(ref["loss"], abs=1e-6)
    assert torch.allclose(g_pred, torch.tensor(ref["grad_pred"]), atol=1e-6)
    assert abs(loss - bmc["balancedmse_order"][f"sigma={sigma}"]["loss"]) > 1e-2


def test_fixed_sigma_has_no_parameter_and_accepts_flat_inputs():
    crit = BMCLoss(init_sigma=1.0, learnable=False)
    assert list(crit.parameters()) == []
    pred, target = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([0.0, 1.0, 2.5])
    manual = torch.nn.functional.cross_entropy(-0.5 * (pred[:, None] - target[None]) ** 2,
                                               torch.arange(3)) * 2
    assert crit(pred, target).item() == pytest.approx(manual.item(), abs=1e-6)
    assert bmc_loss(pred, target, 1.0).item() == pytest.approx(manual.item(), abs=1e-6)


def test_learnable_sigma_moves_under_sgd():
    crit = BMCLoss(init_sigma=1.0)
    opt = torch.optim.SGD(crit.parameters(), lr=0.1)
    pred, target = torch.randn(16, generator=torch.Generator().manual_seed(0)), torch.arange(16.0) / 4
    crit(pred, target).backward()
    opt.step()
    assert crit.noise_sigma.item() != 1.0
