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


def save(directory: Path, step: int, model, opt, sched, ctx) -> None:
    from safetensors.torch import save_file

    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # clone: tied weights (GPT-2's lm_head = wte) share storage, which safetensors refuses
    tensors = {f"model.{k}": v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    opt_state = opt.state_dict()
    for pid, state in opt_state["state"].items():
        for name, t in state.items():
            tensors[f"opt.{pid}.{name}"] = t.detach().clone().contiguous()
    save_file(tensors, str(tmp / STATE))
    sched_state = {k: v for k, v in sched.state_dict().items() if k != "lr_lambdas"}
    (tmp / META).write_text(json.dumps({"step": step, "param_groups": opt_state["param_groups"], "sched": sched_state,
                                        "trajectory": ctx.trajectory, "extra": ctx.extra}, default=float))
    ctx.flush_log()
    shutil.copyfile(ctx.run_dir / LOG, tmp / LOG)
    old = directory.with_name(directory.name + ".old")
    if directory.exists():
        os.rename(directory, old)
    os.rename(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)


def load(directory: Path, model, opt, sched, ctx) -> int:
    """Restore a checkpoint into model, optimizer, scheduler and context; returns its step (0: none)."""
    directory = Path(directory)
    if not (directory / META).is_file():
        old = directory.with_name(directory.name + ".old")  # killed between the two renames of save()
        if (old / META).is_file():
            directory = old
        else:
            return 0
    from safetensors.torch import load_file

    meta = json.loads((directory / META).read_text())
    tensors = load_file(str(directory / STATE))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    sched.load_state_dict({**sched.state_dict(), **meta["sched"]})
    ctx.restore(meta["trajectory"], meta["extra"], (directory / LOG).read_text())
    return int(meta["step"])


def clear(directory: Path) -> None:
    directory = Path(directory)
    for d in (directory, directory.with_name(directory.name + ".tmp"), directory.with_name(directory.name + ".old")):
        shutil.rmtree(d, ignore_errors=True)
