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

A loss that is not a mean over independent examples computes its batch statistic over the global
batch itself: :func:`gather_batch` (the global batch a share came from) and :func:`all_sum` (sums and
counts over the processes). KTO's reference point is the one such statistic (``algorithms/kto.py``).

TRL-backed algorithms hand the launch to TRL: :func:`join` before a trainer is configured (accelerate
then finds the process group initialised and uses it, instead of initialising its own on the
launcher's store), :func:`per_device` splits the global batch (the hyperparameter) over the processes,
and :func:`agree_on_weights` checks after training that every process holds the same policy. Steps
one process does alone while the others wait on a lock (a cached reward model's training) run under
:func:`single_process`, which hides the launch from accelerate.

Nothing here is active in a single process: :func:`active` is false unless the launcher set
``WORLD_SIZE`` > 1, and the hooks in :mod:`harness.training.loop` are then no-ops. The process group
is initialised from the launcher's environment (``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``,
``WORLD_SIZE``): gloo on CPU, NCCL when the run computes on a GPU (one per process).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
from typing import Callable

import numpy as np

# the variables through which a launcher (torchrun, accelerate launch, an MPI run) tells a process that
# it is one of several; hidden by single_process()
LAUNCH_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
                    "ROLE_RANK", "ROLE_WORLD_SIZE", "PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE",
                    "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_RANK")
_hidden: dict[str, str] | None = None  # the launch variables while single_process() hides them


def _launch(name: str, default: str) -> str:
    if _hidden is not None:
        return _hidden.get(name, default)
    return os.environ.get(name, default)


def world_size() -> int:
    try:
        return max(1, int(_launch("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def rank() -> int:
    try:
        return int(_launch("RANK", "0"))
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

        from harness.training import device

        on_gpu = device.current().device_type == "cuda" and torch.cuda.is_available()
        backend = "nccl" if on_gpu and os.environ.get("ACCELERATE_USE_CPU") != "1" else "gloo"
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


def _comm_device():
    """Where collectives take their tensors: the current GPU under NCCL, the CPU under gloo."""
    import torch
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gather_batch(part) -> tuple[np.ndarray, int]:
    """(the global batch, where this process's share starts in it): every process's share of the
    step's global batch, in rank order, which is the global batch itself (:func:`share` cuts it into
    contiguous pieces in rank order). One process: ``(part, 0)``."""
    part = np.asarray(part)
    if not active():
        return part, 0
    init()
    import torch
    import torch.distributed as dist

    dev = _comm_device()
    n = torch.tensor([len(part)], dtype=torch.int64, device=dev)
    sizes = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(sizes, n)
    sizes = [int(x) for x in sizes]
    buf = torch.full((max(1, max(sizes)),), -1, dtype=torch.int64, device=dev)
    buf[:len(part)] = torch.as_tensor(part.astype(np.int64), device=dev)
    parts = [torch.empty_like(buf) for _ in range(world_size())]
    dist.all_gather(parts, buf)
    whole = np.concatenate([p[:k].cpu().numpy() for p, k in zip(parts, sizes)]).astype(part.dtype, copy=False)
    return whole, sum(sizes[:rank()])


def all_sum(values) -> list[float]:
    """Each number summed over the processes (float64; one collective for the lot). One process: as given."""
    values = [float(v) for v in values]
    if not active():
        return values
    init()
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return t.tolist()


# --------------------------------------------------------------------- TRL trainers under a launcher
def join() -> None:
    """Before a TRL trainer (accelerate) is configured under a launcher: join the process group here,
    so accelerate's ``PartialState`` finds it initialised and uses it (accelerate 1.15 initialises a
    group only when none exists) rather than opening one of its own on the launcher's store, whose keys
    an earlier run of the same launch already used. Also fixes ``OMP_NUM_THREADS`` to the threads this
    process computes with, which accelerate would otherwise reset on a multi-CPU launch. No-op alone."""
    if not active():
        return
    init()
    import torch

    os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))


def per_device(global_batch: int, what: str = "batch") -> int:
    """The per-process share of a global batch (the hyperparameter) under a launcher; the preflight
    (:func:`check_plan`) has refused a global batch that does not split evenly."""
    w = world_size()
    if int(global_batch) % w:
        raise ValueError(f"the global {what} of {global_batch} does not split evenly over {w} processes")
    return int(global_batch) // w


@contextlib.contextmanager
def single_process():
    """Run a library step in this process alone while the launch goes on around it: the launch
    variables (:data:`LAUNCH_VARIABLES`) are hidden from the environment, so accelerate (through a
    TRL trainer) sees one process and opens no process group. For suite artifacts one process builds
    while the others wait on the artifact's lock (the cached reward model): joining the launch's group
    there would wait forever for processes that are waiting for the artifact. :func:`rank` and
    :func:`world_size` keep telling the truth meanwhile. No-op alone."""
    global _hidden
    if not active() or _hidden is not None:
        yield
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        raise RuntimeError("single_process(): this process already joined the launch's process group; "
                           "build what one process builds alone before joining it")
    saved = {k: os.environ[k] for k in LAUNCH_VARIABLES if k in os.environ}
    _hidden = saved
    for k in saved:
        del os.environ[k]
    try:
        yield
    finally:
        os.environ.update(saved)
        _hidden = None


def weights_digest(model) -> str:
    """SHA-256 of a model's floating-point parameters and buffers (names, shapes and bytes, in name order)."""
    import torch

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        if not t.is_floating_point():
            continue
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def agree_on_weights(model) -> str:
    """After data-parallel training: every process's weights digest, checked equal (a process whose
    policy drifted from the others' would evaluate another model); the digest. Each process says its
    own on stderr. Alone: just the digest."""
    digest = weights_digest(model)
    if not active():
        return digest
    from harness.core.progress import say

    say(f"  rank {rank()} of {world_size()}: policy weights sha256 {digest}")
    init()
    import torch
    import torch.distributed as dist

    mine = torch.tensor(list(bytes.fromhex(digest)), dtype=torch.uint8, device=_comm_device())
    every = [torch.empty_like(mine) for _ in range(world_size())]
    dist.all_gather(every, mine)
    digests = [bytes(t.cpu().tolist()).hex() for t in every]
    if len(set(digests)) != 1:
        raise RuntimeError("data-parallel processes ended with different policy weights: "
                           + ", ".join(f"rank {r} {d[:12]}" for r, d in enumerate(digests)))
    return digest


def data_parallel_record(digest: str, per_device_batch: int, global_batch: int, unit: str) -> dict:
    """What a data-parallel run records in ``metrics.json`` (``extra.data_parallel``)."""
    return {"world_size": world_size(), "per_device_batch": int(per_device_batch), "global_batch": int(global_batch),
            "batch_unit": unit, "weights_sha256": digest}


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


# algorithms whose loss is not a mean over independent examples of the batch (a statistic of the whole
# batch enters every example's loss): micro-batches would change their update (refused by the plan,
# harness.execution.plan.check_micro_batches), and data parallelism is exact only where the algorithm
# computes the statistic over the global batch itself (GLOBAL_BATCH_STATISTIC)
BATCH_COUPLED = {"kto": "its reference point (KL estimate) is a statistic of the whole batch"}
# ... those that do: KTO all-reduces the sum and count of its reference point's terms (algorithms/kto.py)
GLOBAL_BATCH_STATISTIC = {"kto"}


def check_plan(runs) -> None:
    """Under a launcher, every planned algorithm must train data-parallel exactly, and a TRL-backed one
    must split its global batch evenly over the processes (preflight, one line each)."""
    if not active():
        return
    from harness import registry
    from harness.core.errors import UserError

    for run in runs:
        cls = registry.get(run.algorithm).cls
        check = getattr(cls, "check_launch", None)
        if "trl" in getattr(cls, "patched_libraries", ()) and check is None:
            raise UserError("--algorithms", run.algorithm, "TRL-backed without a data-parallel batch split "
                            "(check_launch); run it without accelerate launch / torchrun")
        if run.algorithm in BATCH_COUPLED and run.algorithm not in GLOBAL_BATCH_STATISTIC:
            raise UserError("--algorithms", run.algorithm, f"not data-parallel: {BATCH_COUPLED[run.algorithm]}")
        problem = check(run.config, world_size()) if check is not None else None
        if problem:
            field, text = problem
            raise UserError("--set", f"{run.algorithm}.{field}", text)
