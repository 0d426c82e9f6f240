"""SLiC-HF (Zhao et al. 2023): a calibration hinge on sequence log-likelihoods plus an NLL term.

L = max(0, δ − log π(y_w|x) + log π(y_l|x)) − λ·log π(y_w|x) (the paper's Eq. 1 with the chosen
response as the regularisation target); no reference model. Implicit reward: log π(y|x). TRL: the
hinge is CPOTrainer's loss_type="hinge" with β = 1/δ (scaled by 1/δ), its cpo_alpha NLL being a
token mean rather than this sequence sum.
"""
from __future__ import annotations

from dataclasses import dataclass

from harness.core.config import hp
from harness.registry import register
from harness.training.hparams import OptimConfig
from harness.training.pairwise import PairwiseAlgorithm


@dataclass
class SLiCConfig(OptimConfig):
    delta: float = hp(1.0, "hinge margin δ on log π(y_w) − log π(y_l), nats", gt=0)
    lam: float = hp(0.05, "weight λ of the NLL of y_w (sequence log-likelihood)", ge=0)
    lr: float = hp(1e-4, "peak learning rate (AdamW)", gt=0)


def slic_loss(chosen, rejected, delta: float, lam: float):
    """(losses, hinge term) per pair from summed log-probabilities [B]."""
    import torch

    hinge = torch.relu(delta - chosen + rejected)
    return hinge - lam * chosen, hinge


@register("slic", "SLiC-HF: calibration hinge on sequence log-likelihoods plus NLL of the chosen response",
          SLiCConfig)
class SLiC(PairwiseAlgorithm):
    def loss(self, lp):
        losses, hinge = slic_loss(lp.chosen, lp.rejected, self.config.delta, self.config.lam)
        return losses, {"hinge": hinge, "nll": -lp.chosen}

    def reward(self, lp):
        return lp.chosen, lp.rejected
