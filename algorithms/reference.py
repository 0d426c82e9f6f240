"""π_SFT itself, untrained: the reference row every comparison carries (its KL to π_ref is 0)."""
from __future__ import annotations

from dataclasses import dataclass

from harness.registry import Algorithm, register


@dataclass
class ReferenceConfig:
    pass


@register("reference", "π_SFT = π_ref unchanged; the reference row (added to every run)", ReferenceConfig)
class Reference(Algorithm):
    def train(self, ctx):
        return ctx.init_policy()
