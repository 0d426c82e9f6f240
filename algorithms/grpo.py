"""GRPO (Shao et al. 2024): group-normalised advantages over k samples per prompt, clipped ratio, and
an explicit per-token k3 KL term to π_ref in the loss, through TRL's ``GRPOTrainer`` (behind
:mod:`harness.adapters.trl_online`). TRL's default β = 0 drops the KL term and the reference model
altogether; here β is explicit and defaults to 0.05. Reward: the learned reward model (shared with
``ppo``) or the gold judge (``reward=gold``). Shared code: :mod:`algorithms.rloo`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from harness.core.config import hp
from harness.registry import Algorithm, register

from harness.training.hparams import LoraFields
from harness.training.reward_model import RewardModelFields

from algorithms.rloo import OnlineFields, check_online_launch, run_online


@dataclass
class GRPOFields(OnlineFields):
    loss_type: Literal["grpo", "dapo", "dr_grpo", "bnpo"] = hp(
        "dapo", "token-loss aggregation (TRL's loss_type; grpo = the paper's per-sequence mean)")
    scale_rewards: Literal["group", "batch", "none"] = hp("group", "divide advantages by the reward std of the "
                                                                    "group, the batch, or not at all")


@dataclass
class GRPOConfig(LoraFields, RewardModelFields, GRPOFields):
    pass


@register("grpo", "GRPO: k samples per prompt, group-normalised advantages, explicit per-token KL to π_ref "
                  "(TRL GRPOTrainer); learned reward model or gold reward", GRPOConfig)
class GRPO(Algorithm):
    patched_libraries = ("trl",)
    check_launch = staticmethod(check_online_launch)  # data parallel under a launcher

    def variant(self) -> str:
        return "grpo-gt" if self.config.reward == "gold" else "grpo"

    def train(self, ctx):
        return run_online(self, ctx, "grpo", {"loss_type": self.config.loss_type,
                                              "scale_rewards": self.config.scale_rewards})
