"""Hyperparameter dataclasses shared by native trainers (no heavy imports: the registry lists them)."""
from __future__ import annotations

from dataclasses import dataclass

from harness.core.config import hp

LORA_KEYS = ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules")
RM_LORA_KEYS = tuple(f"rm_{k}" for k in LORA_KEYS)  # the learned reward model's (harness.training.reward_model)


@dataclass
class LoraFields:
    """The policy's LoRA settings, in every trained algorithm's config (native trainers through
    :class:`OptimConfig`; TRL-backed ones add this class to theirs).

    The ``lora_*`` fields come from the suite's (and preset's) ``lora:`` block unless ``--set`` overrides
    them per algorithm; ``lora_r: 0`` is full fine-tuning. They are part of the run identity only when
    LoRA is on (``lora_r > 0``), so full fine-tuning run ids do not depend on them."""
    lora_r: int = hp(0, "LoRA rank (0: full fine-tuning); default from the suite's lora: block", ge=0, le=4096)
    lora_alpha: float = hp(16.0, "LoRA scaling alpha (the update is scaled by alpha / r)", gt=0)
    lora_dropout: float = hp(0.0, "dropout on the LoRA branch", ge=0, lt=1)
    lora_target_modules: str = hp("all-linear", "modules LoRA adapts: all-linear, or comma-separated module names "
                                                "(e.g. q_proj,v_proj)")


@dataclass
class _OptimFields:
    lr: float = hp(1e-4, "peak learning rate (AdamW)", gt=0)
    batch_size: int = hp(32, "preference pairs (or sequences) per optimizer step", ge=1)
    epochs: float = hp(1.0, "passes over the training data", gt=0)
    warmup_steps: int = hp(10, "linear warm-up steps", ge=0)
    weight_decay: float = hp(0.0, "AdamW weight decay", ge=0)
    max_grad_norm: float = hp(10.0, "gradient clipping norm", gt=0)
    divergence_grad_norm: float = hp(1e6, "a pre-clip gradient norm above this ends the run as diverged", gt=0)


@dataclass
class OptimConfig(LoraFields, _OptimFields):
    """Optimisation hyperparameters every native trainer shares (subclassed per algorithm), then the
    policy's LoRA settings (:class:`LoraFields`)."""


def lora_settings(config) -> dict | None:
    """The LoRA settings of an algorithm config, or None for full fine-tuning (or no LoRA fields)."""
    r = getattr(config, "lora_r", 0) or 0
    if r <= 0:
        return None
    return {"r": int(r), "alpha": float(config.lora_alpha), "dropout": float(config.lora_dropout),
            "target_modules": str(config.lora_target_modules)}


def identity_hyperparameters(values: dict) -> dict:
    """Hyperparameters as they enter a run's identity and tables: the ``lora_*`` (``rm_lora_*``) fields
    only when the policy's (the reward model's) LoRA is on."""
    out = dict(values)
    for prefix, keys in (("", LORA_KEYS), ("rm_", RM_LORA_KEYS)):
        if not (out.get(f"{prefix}lora_r") or 0) > 0:
            for k in keys:
                out.pop(k, None)
    return out
