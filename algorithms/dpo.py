"""Direct Preference Optimization (Rafailov et al. 2023) and its variants, on the pairwise base.

cDPO (Mitchell 2023) is DPO with label smoothing ε; IPO (Azar et al. 2023) replaces the logistic
loss with a squared one. The loss sees per-sequence summed completion log-probabilities only; the
reference log-probabilities are precomputed once per suite, and chosen and rejected go through the
policy in one batched forward (:mod:`harness.training.pairwise`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from harness.core.config import hp
from harness.registry import register
from harness.training.hparams import OptimConfig
from harness.training.pairwise import PairwiseAlgorithm


@dataclass
class DPOConfig(OptimConfig):
    beta: float = hp(0.1, "KL-regularisation strength β (IPO: τ)", gt=0)
    loss: Literal["sigmoid", "ipo"] = hp("sigmoid", "sigmoid = DPO Eq. 7 (cDPO with label_smoothing); ipo = IPO Eq. 17")
    label_smoothing: float = hp(0.0, "cDPO: assumed label-flip rate ε", ge=0, lt=0.5)
    lr: float = hp(1e-4, "peak learning rate (AdamW)", gt=0)

    def validate(self):
        if self.loss == "ipo" and self.label_smoothing > 0:
            return "label_smoothing", "must be 0 with loss=ipo (label smoothing is a DPO/cDPO option)"


def preference_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
                    reference_rejected_logps, beta: float, label_smoothing: float = 0.0, ipo: bool = False):
    """Per-pair preference losses and implicit rewards.

    All inputs are [B] tensors of log π(y|x) summed over completion tokens (nats per sequence).
    With h = (log π_θ(y_w) − log π_ref(y_w)) − (log π_θ(y_l) − log π_ref(y_l)):

    - DPO, Eq. 7:      L = −log σ(β h)
    - cDPO, Eq. 3 of Mitchell's note: L = −(1−ε) log σ(β h) − ε log σ(−β h)
    - IPO, Eq. 17:     L = (h − 1/(2β))², with τ passed as β and token-summed log-probabilities
      (as in the DPO authors' code; TRL length-normalises instead, so τ values differ).

    Returns (losses [B], chosen_rewards [B], rejected_rewards [B]); rewards are β·log π_θ/π_ref,
    detached.
    """
    import torch.nn.functional as F

    chosen_ratio = policy_chosen_logps - reference_chosen_logps
    rejected_ratio = policy_rejected_logps - reference_rejected_logps
    h = chosen_ratio - rejected_ratio
    if ipo:
        losses = (h - 1.0 / (2.0 * beta)) ** 2
    else:
        losses = -(1.0 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    return losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


@register("dpo", "Direct Preference Optimization, native loop (variants: cDPO via label_smoothing, IPO via loss=ipo)",
          DPOConfig)
class DPO(PairwiseAlgorithm):
    def variant(self) -> str:
        if self.config.loss == "ipo":
            return "ipo"
        return "cdpo" if self.config.label_smoothing > 0 else "dpo"

    def loss(self, lp):
        c = self.config
        return preference_loss(lp.chosen, lp.rejected, lp.ref_chosen, lp.ref_rejected, c.beta, c.label_smoothing,
                               ipo=c.loss == "ipo")[0]

    def reward(self, lp):
        return self.config.beta * lp.chosen_ratio, self.config.beta * lp.rejected_ratio
