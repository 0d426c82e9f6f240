"""SimPO (Meng, Xia & Chen 2024): a reference-free margin on length-normalised log-likelihoods.

L = −log σ(β/|y_w|·log π(y_w|x) − β/|y_l|·log π(y_l|x) − γ); implicit reward r̂ = β/|y|·log π(y|x).
TRL's equivalent is CPOTrainer with loss_type="simpo" and cpo_alpha=0 (its default cpo_alpha adds an
NLL term on y_w).
"""
from __future__ import annotations

from dataclasses import dataclass

from harness.core.config import hp
from harness.registry import register
from harness.training.hparams import OptimConfig
from harness.training.pairwise import PairwiseAlgorithm


@dataclass
class SimPOConfig(OptimConfig):
    beta: float = hp(2.0, "reward scale β on the per-token mean log-likelihood", gt=0)
    gamma: float = hp(0.5, "target reward margin γ (nats·β)", ge=0)
    lr: float = hp(1e-4, "peak learning rate (AdamW)", gt=0)


def simpo_loss(chosen_mean, rejected_mean, beta: float, gamma: float):
    """Per-pair SimPO losses from per-token mean log-probabilities [B]."""
    import torch.nn.functional as F

    return -F.logsigmoid(beta * chosen_mean - beta * rejected_mean - gamma)


@register("simpo", "SimPO: reference-free, length-normalised margin loss with target margin γ", SimPOConfig)
class SimPO(PairwiseAlgorithm):
    def loss(self, lp):
        return simpo_loss(lp.chosen_mean, lp.rejected_mean, self.config.beta, self.config.gamma)

    def reward(self, lp):
        return self.config.beta * lp.chosen_mean, self.config.beta * lp.rejected_mean
