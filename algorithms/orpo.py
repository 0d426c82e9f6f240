"""ORPO (Hong, Lee & Thorne 2024): SFT on y_w plus an odds-ratio preference term, no reference model.

With p̄(y) = exp(mean token log π(y|x)) and log odds(y) = log p̄ − log(1 − p̄):
L = NLL(y_w) − λ·log σ(log odds(y_w) − log odds(y_l)), NLL = mean token negative log-likelihood of the
completion. Implicit reward: log odds(y). TRL's ORPOTrainer computes the same odds-ratio term; its NLL
term averages over the prompt and completion tokens of the whole batch.
"""
from __future__ import annotations

from dataclasses import dataclass

from harness.core.config import hp
from harness.registry import register
from harness.training.hparams import OptimConfig
from harness.training.pairwise import PairwiseAlgorithm


@dataclass
class ORPOConfig(OptimConfig):
    lam: float = hp(5.0, "weight λ of the odds-ratio term", ge=0)
    lr: float = hp(1e-4, "peak learning rate (AdamW)", gt=0)


def log_odds(mean_logp):
    """log(p/(1−p)) for p = exp(mean_logp) < 1, stable on both sides of p = ½."""
    import torch

    log1m = torch.where(mean_logp < -0.6931471805599453, torch.log1p(-torch.exp(mean_logp)),
                        torch.log(-torch.expm1(mean_logp)))
    return mean_logp - log1m


def orpo_loss(chosen_mean, rejected_mean, lam: float):
    """(losses, odds-ratio term log σ(Δ log odds)) per pair, from per-token mean log-probabilities."""
    import torch.nn.functional as F

    ratio = F.logsigmoid(log_odds(chosen_mean) - log_odds(rejected_mean))
    return -chosen_mean - lam * ratio, ratio


@register("orpo", "ORPO: NLL on the chosen response plus an odds-ratio preference term, no reference model",
          ORPOConfig)
class ORPO(PairwiseAlgorithm):
    def loss(self, lp):
        losses, ratio = orpo_loss(lp.chosen_mean, lp.rejected_mean, self.config.lam)
        return losses, {"nll": -lp.chosen_mean, "log_odds_ratio": ratio}

    def reward(self, lp):
        return log_odds(lp.chosen_mean), log_odds(lp.rejected_mean)
