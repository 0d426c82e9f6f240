"""GPO (Tang et al. 2024, "Generalized Preference Optimization"): offline preference losses f(β·h)
for convex f of the DPO margin h = log π_θ/π_ref(y_w) − log π_θ/π_ref(y_l). DPO is f = logistic."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from harness.core.config import hp
from harness.registry import register
from harness.training.hparams import OptimConfig
from harness.training.pairwise import PairwiseAlgorithm


@dataclass
class GPOConfig(OptimConfig):
    beta: float = hp(0.1, "KL-regularisation strength β", gt=0)
    f: Literal["exponential", "truncated_quadratic", "savage"] = hp("exponential", "convex function f of β·h")


@register("gpo", "GPO (Tang et al. 2024): convex loss f(β·h) of the DPO margin", GPOConfig)
class GPO(PairwiseAlgorithm):
    def loss(self, lp):
        import torch

        z = self.config.beta * (lp.chosen_ratio - lp.rejected_ratio)
        if self.config.f == "exponential":
            return torch.exp(-z)
        if self.config.f == "truncated_quadratic":
            return torch.relu(1 - z) ** 2
        return torch.sigmoid(-z) ** 2  # savage: 1 / (1 + e^z)^2

    def reward(self, lp):
        return self.config.beta * lp.chosen_ratio, self.config.beta * lp.rejected_ratio
