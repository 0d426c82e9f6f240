"""Data-parallel training of one run over several processes (``accelerate launch`` or ``torchrun``).

Under a launcher every process runs the same training with the same seeds, so the data order (the
global batches) and the initial weights are the same everywhere. At each optimizer step each process
takes its share of the global batch (:func:`share`: a contiguous slice, ``np.array_split`` order),
computes its loss and gradients, and :func:`reduce` sums the gradients over the processes, each
weighted by its share of what the loss averages over (examples, or tokens for SFT's token mean)::

    grad = sum_r  w_r * grad_r,   w_r = weight(share_r) / weight(global batch)

which is exactly the gradient of the global batch's mean loss, so every process then clips the same
gradient and takes the same optimizer step: the weights stay identical across processes, and equal to
a single-process run on the same global batch up to floating-point summation order. Logged numbers
(loss and the step's scalar metrics) are reduced the same way. Only the main process
(:func:`is_main`) writes results.

Nothing here is active in a single process: :func:`active` is false unless the launcher set
``WORLD_SIZE`` > 1, and the hooks in :mod:`harness.training.loop` are then no-ops. The process group
is initialised from the launcher's environment (``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``,
``WORLD_SIZE``): gloo on CPU, NCCL when each process has a GPU.
"""
from __future__ import annotations

import os
from typing import Callable

import numpy as np


def world_size() -> int:
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def rank() -> int:
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def active() -> bool:
    """Several processes train this run together (a launcher set WORLD_SIZE > 1)."""
    return world_size() > 1


def is_main() -> bool:
    """The process that writes results (rank 0; the only process when not distributed)."""
    return rank() == 0


def init() -> None:
    """Join the launcher's process group (once); a no-op in a single process."""
    if not active():
        return
    import torch
    import torch.distributed as dist

    if dist.is_available() and not dist.is_initialized():
        from datetime import timedelta

        backend = "nccl" if torch.cuda.is_available() and os.environ.get("ACCELERATE_USE_CPU") != "1" else "gloo"
        # Each run trains in a fresh worker process, so a launch initialises a process group once per run,
        # on the launcher's rendezvous store. Every process counts its initialisations (all make the same
        # sequence), and the count namespaces the keys so one run's group never meets an earlier one's.
        agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"
        store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size(),
                              is_master=not agent and rank() == 0, timeout=timedelta(minutes=30))
        generation = store.add(f"prefbench/inits/{rank()}", 1)
        dist.init_process_group(backend=backend, store=dist.PrefixStore(f"prefbench/{generation}", store),
                                rank=rank(), world_size=world_size(), timeout=timedelta(minutes=30))


def share(idx: np.ndarray, weight_fn: Callable[[np.ndarray], float] | None = None) -> tuple[np.ndarray, float | None]:
    """This process's part of a global batch and its weight (None when not distributed)."""
    if not active():
        return idx, None
    init()
    count = weight_fn or len
    part = np.array_split(np.asarray(idx), world_size())[rank()]
    total = float(count(idx))
    w = float(count(part)) / total if total else 1.0 / world_size()
    return part, w


def reduce(model, loss, metrics: dict, w: float | None):
    """Sum every process's gradients and numbers weighted by their shares; (loss, metrics) of the
    global batch. Identity when ``w`` is None (one process)."""
    if w is None:
        return loss, metrics
    import torch
    import torch.distributed as dist

    params = [p for p in model.parameters() if p.requires_grad]
    grads = []
    for p in params:
        if p.grad is None:  # a process whose share touched no path through this parameter
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    flat = torch.cat([g.reshape(-1) for g in grads]) * w
    dist.all_reduce(flat)
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n
    keys = sorted(k for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
    nums = torch.tensor([float(loss.detach())] + [float(metrics[k]) for k in keys], dtype=torch.float64,
                        device=flat.device) * w
    dist.all_reduce(nums)
    out = dict(metrics)
    out.update({k: float(v) for k, v in zip(keys, nums[1:].tolist())})
    return torch.tensor(float(nums[0])), out


# ------------------------------------------------------------------ `prefbench run` under a launcher
def pin_local_device() -> None:
    """Each process of a launch computes on its own GPU (``LOCAL_RANK``), whatever the device code picks
    as "the" GPU: the worker processes it starts see that one only. A no-op in a single process."""
    if not active() or "LOCAL_RANK" not in os.environ:
        return
    local = int(os.environ["LOCAL_RANK"])
    visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    if visible:
        if local < len(visible):
            os.environ["CUDA_VISIBLE_DEVICES"] = visible[local]
    else:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(local)


def results_store_for_this_process(store):
    """The results store this process of ``prefbench run`` writes to. Under a launcher every process
    runs the same plan in the same order (so each takes part in the training of the same runs), but
    only the main one claims and commits: another process decides what is finished from the real
    store and writes its own copies of the runs into a private folder, removed when it exits."""
    if not active() or is_main():
        return store
    import atexit
    import shutil
    import tempfile

    from harness.execution.results import ResultsStore

    class FollowerStore(ResultsStore):
        follower = True

        def is_complete(self, suite: str, run_id: str) -> bool:
            return store.is_complete(suite, run_id)

    private = tempfile.mkdtemp(prefix=f"prefbench-rank{rank()}-")
    atexit.register(shutil.rmtree, private, True)
    return FollowerStore(private, store.where)


# algorithms whose training is not a mean over independent examples of the global batch
BATCH_COUPLED = {"kto": "its reference point (KL estimate) is a statistic of the whole batch"}


def check_plan(runs) -> None:
    """Under a launcher, every planned algorithm must train data-parallel exactly (preflight, one line)."""
    if not active():
        return
    from harness import registry
    from harness.core.errors import UserError

    for run in runs:
        cls = registry.get(run.algorithm).cls
        if "trl" in getattr(cls, "patched_libraries", ()):
            raise UserError("--algorithms", run.algorithm, "TRL-backed: not yet trained data-parallel under a "
                            "launcher; run it without accelerate launch / torchrun")
        if run.algorithm in BATCH_COUPLED:
            raise UserError("--algorithms", run.algorithm, f"not data-parallel: {BATCH_COUPLED[run.algorithm]}")
