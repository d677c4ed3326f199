"""Balanced MSE, batch Monte-Carlo variant (Ren et al., CVPR 2022), with the argument order fixed.

logits[i, j] = -(pred_i - target_j)^2 / (2 sigma^2); loss = CE(logits, arange(B)) * (2 sigma^2), the factor
detached. The reference TraMP-Former called it as (target, pred), never optimised sigma and only ran on CUDA
(defect 3); here `pred` comes first, sigma is a parameter (give it its own optimiser group, e.g. lr 1e-2)
or a fixed value, and everything stays on the inputs' device.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def bmc_loss(pred: torch.Tensor, target: torch.Tensor, noise_var: torch.Tensor | float) -> torch.Tensor:
    pred, target = pred.reshape(-1, 1), target.reshape(-1, 1).to(pred.dtype)
    logits = -0.5 * (pred - target.T).pow(2) / noise_var                 # (B, B)
    labels = torch.arange(pred.shape[0], device=pred.device)
    scale = 2 * noise_var
    if isinstance(scale, torch.Tensor):
        scale = scale.detach()
    return F.cross_entropy(logits, labels) * scale


class BMCLoss(nn.Module):
    """`BMCLoss(init_sigma=1.0, learnable=True)(pred, target)`; sigma is `noise_sigma` (a Parameter when learnable)."""

    def __init__(self, init_sigma: float = 1.0, learnable: bool = True) -> None:
        super().__init__()
        sigma = torch.tensor(float(init_sigma))
        if learnable:
            self.noise_sigma = nn.Parameter(sigma)
        else:
            self.register_buffer("noise_sigma", sigma)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return bmc_loss(pred, target, self.noise_sigma ** 2)
