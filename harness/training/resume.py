"""Mid-run checkpoints for native trainers, so a killed run resumes from its last saved step.

A checkpoint lives in ``<results>/<suite>/.checkpoints/<run-id>/``, outside the run's staging
folder (which a restart clears): model and optimizer tensors as safetensors, everything else as
JSON (scheduler, step, trajectory, recorded facts, the training log so far) — no pickle. It is
written under a temporary name and swapped in, so a kill while saving leaves the previous one. The
resumed run is bit-identical to an uninterrupted one: data order is precomputed from the seed and
fine-tuning runs without dropout, so no RNG state needs saving.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

STATE, META, LOG = "state.safetensors", "meta.json", "train_log.jsonl"


def _training_state(model, opt, sched) -> tuple[dict, dict]:
    """(tensors, JSON meta) of model, optimizer and scheduler."""
    # clone: tied weights (GPT-2's lm_head = wte) share storage, which safetensors refuses
    tensors = {f"model.{k}": v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    opt_state = opt.state_dict()
    for pid, state in opt_state["state"].items():
        for name, t in state.items():
            tensors[f"opt.{pid}.{name}"] = t.detach().cpu().clone().contiguous()
    sched_state = {k: v for k, v in sched.state_dict().items() if k != "lr_lambdas"}
    return tensors, {"param_groups": opt_state["param_groups"], "sched": sched_state}


def _restore_training_state(tensors: dict, meta: dict, model, opt, sched) -> None:
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    sched.load_state_dict({**sched.state_dict(), **meta["sched"]})


def write_state(directory: Path, tensors: dict, meta: dict, files: dict[str, Path] | None = None) -> None:
    """Write a checkpoint folder atomically: tensors (safetensors), meta (JSON), extra files copied in."""
    from safetensors.torch import save_file

    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(tensors, str(tmp / STATE))
    (tmp / META).write_text(json.dumps(meta, default=float))
    for name, src in (files or {}).items():
        shutil.copyfile(src, tmp / name)
    old = directory.with_name(directory.name + ".old")
    if directory.exists():
        os.rename(directory, old)
    os.rename(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)


def read_state(directory: Path) -> tuple[Path, dict, dict] | None:
    """(folder, tensors, meta) of the checkpoint in ``directory``, or None when there is none."""
    directory = Path(directory)
    if not (directory / META).is_file():
        old = directory.with_name(directory.name + ".old")  # killed between the two renames of write_state()
        if not (old / META).is_file():
            return None
        directory = old
    from safetensors.torch import load_file

    return directory, load_file(str(directory / STATE)), json.loads((directory / META).read_text())


def save(directory: Path, step: int, model, opt, sched, ctx) -> None:
    tensors, meta = _training_state(model, opt, sched)
    ctx.flush_log()
    write_state(directory, tensors, {"step": step, **meta, "trajectory": ctx.trajectory, "extra": ctx.extra},
                {LOG: ctx.run_dir / LOG})


def load(directory: Path, model, opt, sched, ctx) -> int:
    """Restore a checkpoint into model, optimizer, scheduler and context; returns its step (0: none)."""
    found = read_state(directory)
    if found is None:
        return 0
    directory, tensors, meta = found
    _restore_training_state(tensors, meta, model, opt, sched)
    ctx.restore(meta["trajectory"], meta["extra"], (directory / LOG).read_text())
    return int(meta["step"])


def save_pretraining(directory: Path, step: int, model, opt, sched, rng, log: list[dict]) -> None:
    """π_SFT pre-training: model, optimizer, scheduler, the batch sampler's and torch's RNG state, the log."""
    import torch

    tensors, meta = _training_state(model, opt, sched)
    tensors["rng.torch"] = torch.get_rng_state()
    write_state(directory, tensors, {"step": step, **meta, "numpy_rng": rng.bit_generator.state, "log": log})


def load_pretraining(directory: Path, model, opt, sched, rng) -> tuple[int, list[dict]]:
    """Restore :func:`save_pretraining`'s state; (step, log so far), (0, []) when there is none."""
    import torch

    found = read_state(directory)
    if found is None:
        return 0, []
    _, tensors, meta = found
    _restore_training_state(tensors, meta, model, opt, sched)
    torch.set_rng_state(tensors["rng.torch"])
    rng.bit_generator.state = meta["numpy_rng"]
    return int(meta["step"]), list(meta["log"])


def clear(directory: Path) -> None:
    directory = Path(directory)
    for d in (directory, directory.with_name(directory.name + ".tmp"), directory.with_name(directory.name + ".old")):
        shutil.rmtree(d, ignore_errors=True)
