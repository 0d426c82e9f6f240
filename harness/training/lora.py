"""PEFT LoRA for every native trainer, through :meth:`TrainContext.init_policy`.

With LoRA on (``lora_r > 0``), the policy handed to an algorithm is π_SFT wrapped in a PEFT
``LoraModel``: base weights frozen, only the adapters train, so optimizer state and gradients are
those of the adapters. Pairwise methods score π_ref from the suite's cached reference log-probs; a
method that needs π_ref live gets it as the same weights with the adapters switched off
(:func:`reference_view`): one copy of the weights in memory.

After training the runner saves the adapter (``adapter/`` in the run folder, PEFT format, which vLLM
serves directly) and evaluates a merged copy, a plain model, so evaluation runs unchanged.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

from harness.core.errors import UserError


def linear_module_names(model) -> set[str]:
    """Last-component names of the model's linear layers (what ``target_modules`` may name)."""
    import torch
    from transformers.pytorch_utils import Conv1D

    return {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, (torch.nn.Linear, Conv1D))}


def target_modules(spec: str):
    spec = spec.strip()
    if spec == "all-linear":
        return "all-linear"
    return [t.strip() for t in spec.split(",") if t.strip()]


def check_targets(model, spec: str, where: str) -> None:
    """LoRA target modules the model lacks: one line, before any training."""
    targets = target_modules(spec)
    if targets == "all-linear":
        return
    if not targets:
        raise UserError(where, spec, "no module named")
    have = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in targets if t not in have]
    if missing:
        linear = ", ".join(sorted(linear_module_names(model))) or "none"
        raise UserError(where, ",".join(missing), f"{type(model).__name__} has no such module; its linear layers: "
                        f"{linear} (or all-linear)")


def lora_config(model, settings: dict, where: str = "lora.target_modules"):
    """The PEFT ``LoraConfig`` of ``settings`` for ``model`` (its target modules checked): what
    :func:`apply_lora` applies, and what TRL's trainers take as ``peft_config``."""
    from peft import LoraConfig

    check_targets(model, settings["target_modules"], where)
    # GPT-2's attention and MLP projections are Conv1D (weights stored transposed): PEFT must know
    fan_in_fan_out = type(model).__name__.startswith("GPT2")
    return LoraConfig(r=settings["r"], lora_alpha=settings["alpha"], lora_dropout=settings["dropout"],
                      target_modules=target_modules(settings["target_modules"]), bias="none", task_type="CAUSAL_LM",
                      fan_in_fan_out=fan_in_fan_out)


def apply_lora(model, settings: dict, where: str = "lora.target_modules"):
    """``model`` wrapped in a PEFT LoRA model (base frozen, adapters trainable, initialised as PEFT does:
    B = 0, so the wrapped model starts as π_SFT exactly)."""
    from peft import get_peft_model

    cfg = lora_config(model, settings, where)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fan_in_fan_out notes
        return get_peft_model(model, cfg)


def is_peft(model) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "merge_and_unload")


def reference_view(model):
    """A context in which ``model`` (a PEFT model) computes π_ref: its adapters disabled."""
    if is_peft(model):
        return model.disable_adapter()
    return contextlib.nullcontext()


def merged_copy(model):
    """A plain model with the adapters folded into the weights (a copy: ``model`` is untouched)."""
    import copy

    merged = copy.deepcopy(model).merge_and_unload()
    for p in merged.parameters():
        p.requires_grad_(False)
    return merged


def save_adapter(model, folder: Path) -> Path:
    folder = Path(folder)
    model.save_pretrained(str(folder), safe_serialization=True)
    return folder


def finish(model, run_dir: Path):
    """After training: a PEFT policy's adapter is saved to ``run_dir/adapter`` and a merged copy is
    returned for evaluation (it carries ``prefbench_adapter``, the adapter folder, so a sampler that serves
    adapters, vLLM, can use it); any other model is returned as is."""
    if not is_peft(model):
        return model
    folder = save_adapter(model, Path(run_dir) / "adapter")
    merged = merged_copy(model)
    merged.prefbench_adapter = folder
    return merged


def trainable_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total
