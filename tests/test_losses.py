"""DPO, cDPO and IPO losses against an independent, element-by-element computation."""
import math

import numpy as np
import pytest
import torch

from algorithms.dpo import preference_loss


def _reference_losses(pc, pr, rc, rr, beta, eps, ipo):
    out = []
    for a, b, c, d in zip(pc, pr, rc, rr):
        h = (a - c) - (b - d)
        if ipo:
            out.append((h - 1 / (2 * beta)) ** 2)
        else:
            sig = lambda z: 1 / (1 + math.exp(-z))
            out.append(-(1 - eps) * math.log(sig(beta * h)) - eps * math.log(sig(-beta * h)))
    return np.array(out)


@pytest.mark.parametrize("beta,eps,ipo", [(0.1, 0.0, False), (0.5, 0.0, False), (0.1, 0.2, False),
                                          (2.0, 0.45, False), (0.1, 0.0, True), (1.0, 0.0, True)])
def test_losses_match_straightforward_formulas(beta, eps, ipo):
    rng = np.random.default_rng(0)
    logps = [rng.normal(-40, 8, 64) for _ in range(4)]
    losses, cr, rr = preference_loss(*[torch.tensor(x, dtype=torch.float64) for x in logps], beta, eps, ipo)
    np.testing.assert_allclose(losses.numpy(), _reference_losses(*logps, beta, eps, ipo), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(cr.numpy(), beta * (logps[0] - logps[2]), rtol=1e-12)
    np.testing.assert_allclose(rr.numpy(), beta * (logps[1] - logps[3]), rtol=1e-12)


def test_dpo_loss_is_log2_at_the_reference_and_cdpo_margin_saturates():
    z = torch.zeros(3, dtype=torch.float64)
    losses, _, _ = preference_loss(z, z, z, z, beta=0.1)
    np.testing.assert_allclose(losses.numpy(), math.log(2))
    # cDPO's per-pair optimum is σ(βh) = 1 − ε: the gradient in h vanishes there (bounded margin)
    beta, eps = 0.5, 0.1
    h_star = math.log((1 - eps) / eps) / beta
    h = torch.tensor([h_star], dtype=torch.float64, requires_grad=True)
    loss, _, _ = preference_loss(h, torch.zeros(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64),
                                 torch.zeros(1, dtype=torch.float64), beta, eps)
    loss.sum().backward()
    assert abs(h.grad.item()) < 1e-12


def test_dpo_gradient_weight_is_sigma_of_reward_gap():
    # ∂L/∂h = −β σ(r̂_l − r̂_w) (DPO paper, §4): large when the implicit reward ranks the pair wrongly
    beta = 0.3
    h = torch.tensor([-2.0, 0.0, 3.0], dtype=torch.float64, requires_grad=True)
    z = torch.zeros(3, dtype=torch.float64)
    loss, _, _ = preference_loss(h, z, z, z, beta)
    loss.sum().backward()
    np.testing.assert_allclose(h.grad.numpy(), -beta * torch.sigmoid(-beta * h.detach()).numpy(), rtol=1e-12)
