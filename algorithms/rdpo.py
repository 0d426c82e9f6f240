"""Robust DPO (Chowdhury, Kini & Natarajan 2024): DPO made unbiased under label noise of rate ε.

L = [(1−ε)·ℓ(h) − ε·ℓ(−h)] / (1 − 2ε) with ℓ(h) = −log σ(βh), h the DPO log-ratio margin. Unlike
cDPO (−(1−ε)·log σ(βh) − ε·log σ(−βh), which bounds the margin), it is an unbiased estimate of the
clean-label loss, and its gradient weight [(1−ε)σ(−βh) + εσ(βh)]/(1−2ε) never turns negative.
TRL: DPOTrainer loss_type="robust".
"""
from __future__ import annotations

from dataclasses import dataclass

from harness.core.config import hp
from harness.registry import register
from harness.training.hparams import OptimConfig
from harness.training.pairwise import PairwiseAlgorithm


@dataclass
class RDPOConfig(OptimConfig):
    beta: float = hp(0.1, "KL-regularisation strength β", gt=0)
    epsilon: float = hp(0.1, "assumed label-flip rate ε", ge=0, lt=0.5)


def rdpo_loss(h, beta: float, epsilon: float):
    """Per-pair robust DPO losses from the log-ratio margins h [B]."""
    import torch.nn.functional as F

    return (-(1 - epsilon) * F.logsigmoid(beta * h) + epsilon * F.logsigmoid(-beta * h)) / (1 - 2 * epsilon)


@register("rdpo", "Robust DPO (Chowdhury et al. 2024): unbiased DPO loss under label-flip rate ε", RDPOConfig)
class RDPO(PairwiseAlgorithm):
    def loss(self, lp):
        return rdpo_loss(lp.chosen_ratio - lp.rejected_ratio, self.config.beta, self.config.epsilon)

    def reward(self, lp):
        return self.config.beta * lp.chosen_ratio, self.config.beta * lp.rejected_ratio
