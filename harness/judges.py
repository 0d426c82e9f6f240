"""Judges score completions. Gold reward functions return one scalar per (prompt, completion);
a win rate under such a judge is the comparison of two scalars (ties ½, metrics.md §3.1)."""
from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

from harness.suite import JudgeSpec


class RewardJudge(Protocol):
    identity: dict

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray: ...


class VaderJudge:
    """VADER compound sentiment in [-1, 1] (Hutto & Gilbert 2014): a real lexicon-and-rules scorer
    that ships with its package, so the gold reward needs no download."""

    def __init__(self, target: str = "completion"):
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self._sia = SentimentIntensityAnalyzer()
        self.target = target
        import vaderSentiment

        self.identity = {"kind": "vader", "target": target,
                         "version": getattr(vaderSentiment, "__version__", "3.3.2")}

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        texts = completions if self.target == "completion" else [p + c for p, c in zip(prompts, completions)]
        return np.array([self._sia.polarity_scores(t)["compound"] for t in texts], dtype=np.float64)


def make_judge(spec: JudgeSpec) -> RewardJudge:
    if spec.kind == "vader":
        return VaderJudge(spec.target)
    raise ValueError(spec.kind)  # unreachable: the suite schema only admits known kinds
