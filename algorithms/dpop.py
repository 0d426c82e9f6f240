"""DPO-Positive (Pal et al. 2024, "Smaug"): DPO with a penalty once log π(y_w) falls below π_ref's.

L = −log σ(β·[h − λ·max(0, log π_ref(y_w|x) − log π_θ(y_w|x))]), h the DPO log-ratio margin: DPO
may raise the margin by lowering both likelihoods; DPOP forbids lowering the chosen one. Implicit
reward: β·log π_θ/π_ref (as DPO). TRL 1.12 has no DPOP loss.
"""
from __future__ import annotations

from dataclasses import dataclass

from harness.core.config import hp
from harness.registry import register
from harness.training.hparams import OptimConfig
from harness.training.pairwise import PairwiseAlgorithm


@dataclass
class DPOPConfig(OptimConfig):
    beta: float = hp(0.1, "KL-regularisation strength β", gt=0)
    lam: float = hp(0.5, "penalty λ on log π_ref(y_w) − log π_θ(y_w) when positive", ge=0)


def dpop_loss(chosen_ratio, rejected_ratio, beta: float, lam: float):
    """Per-pair DPOP losses from the log-ratios log π_θ/π_ref of chosen and rejected [B]."""
    import torch
    import torch.nn.functional as F

    return -F.logsigmoid(beta * (chosen_ratio - rejected_ratio - lam * torch.relu(-chosen_ratio)))


@register("dpop", "DPO-Positive (Smaug): DPO plus a penalty when the chosen likelihood drops below π_ref's",
          DPOPConfig)
class DPOP(PairwiseAlgorithm):
    def loss(self, lp):
        return dpop_loss(lp.chosen_ratio, lp.rejected_ratio, self.config.beta, self.config.lam)

    def reward(self, lp):
        return self.config.beta * lp.chosen_ratio, self.config.beta * lp.rejected_ratio
