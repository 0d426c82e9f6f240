"""Hyperparameter dataclasses shared by native trainers (no heavy imports: the registry lists them)."""
from __future__ import annotations

from dataclasses import dataclass

from harness.core.config import hp


@dataclass
class OptimConfig:
    """Optimisation hyperparameters every native trainer shares (subclassed per algorithm)."""
    lr: float = hp(1e-4, "peak learning rate (AdamW)", gt=0)
    batch_size: int = hp(32, "preference pairs (or sequences) per optimizer step", ge=1)
    epochs: float = hp(1.0, "passes over the training data", gt=0)
    warmup_steps: int = hp(10, "linear warm-up steps", ge=0)
    weight_decay: float = hp(0.0, "AdamW weight decay", ge=0)
    max_grad_norm: float = hp(10.0, "gradient clipping norm", gt=0)
    divergence_grad_norm: float = hp(1e6, "a pre-clip gradient norm above this ends the run as diverged", gt=0)
