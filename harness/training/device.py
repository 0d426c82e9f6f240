"""Where and in what precision a run computes: the resource settings of one process.

``--device auto|cpu|cuda|cuda:N`` and ``--micro-batch-size`` are resources, not hyperparameters: they
never enter a run's identity. The suite's ``precision: auto|fp32|bf16`` says how the policy computes
(auto: bf16 on a GPU that supports it, fp32 on a CPU). bf16 means bf16 *autocast* over fp32 master
weights: optimizer state and weights stay fp32, matrix products run in bf16. Log-probabilities and KL
are always taken from logits upcast to fp32 (:mod:`harness.training.logprobs`).

Everything is resolved and checked once in the preflight (:func:`resolve`, one-line errors before any
compute), travels to each worker process in its job, and is installed there with :func:`configure`;
training, reference log-probabilities, sampling, scoring, KL and the reward-model judge then read it
through :func:`current`, :func:`place` and :func:`autocast`.
"""
from __future__ import annotations

import contextlib
import re
from dataclasses import asdict, dataclass

from harness.core.errors import UserError

DEVICE_RE = re.compile(r"auto|cpu|cuda|cuda:\d{1,3}")
PRECISIONS = ("auto", "fp32", "bf16")
MAX_MICRO_BATCH = 1 << 16


@dataclass(frozen=True)
class Resources:
    """The resolved resource settings of a run (what ``metrics.json`` records as ``resources``)."""
    device: str = "cpu"              # torch device string: cpu, cuda:0, ...
    precision: str = "fp32"          # fp32 | bf16 (resolved: never auto)
    micro_batch_size: int | None = None  # sequences (pairs) per forward/backward; None: the whole batch
    gradient_checkpointing: bool = False
    gpu_name: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def device_type(self) -> str:
        return self.device.split(":")[0]

    @property
    def dtype(self):
        import torch

        return torch.bfloat16 if self.precision == "bf16" else torch.float32


_CURRENT = Resources()


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic in hardware (AVX512-BF16 or AMX); without it torch emulates
    bf16 on CPU, slower than fp32, so the harness refuses it there."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read(1 << 20)
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve(device: str = "auto", precision: str = "auto", micro_batch_size: int | None = None,
            gradient_checkpointing: bool = False, precision_where: str = "precision") -> Resources:
    """Resolve ``auto`` and check that the machine has what is asked; one-line errors (exit 2)."""
    device = (device or "auto").strip()
    if not DEVICE_RE.fullmatch(device):
        raise UserError("--device", device, "expected auto, cpu, cuda or cuda:N")
    if precision not in PRECISIONS:
        raise UserError(precision_where, precision, f"expected one of {', '.join(PRECISIONS)}")
    if micro_batch_size is not None and not 1 <= micro_batch_size <= MAX_MICRO_BATCH:
        raise UserError("--micro-batch-size", str(micro_batch_size), f"must be in 1..{MAX_MICRO_BATCH}")
    import torch

    cuda = torch.cuda.is_available()
    if device == "auto":
        device = "cuda:0" if cuda else "cpu"
    elif device.startswith("cuda"):
        if not cuda:
            raise UserError("--device", device, "CUDA is not available on this machine (torch "
                            f"{torch.__version__}, built {'with' if torch.version.cuda else 'without'} CUDA); "
                            "use --device cpu or auto")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise UserError("--device", device, f"this machine has {torch.cuda.device_count()} CUDA device(s)")
        device = f"cuda:{index}"
    gpu = torch.cuda.get_device_name(device) if device.startswith("cuda") else None
    if device.startswith("cuda"):
        bf16_ok = torch.cuda.is_bf16_supported()
    else:
        bf16_ok = cpu_has_native_bf16()
    if precision == "auto":
        precision = "bf16" if device.startswith("cuda") and bf16_ok else "fp32"
    elif precision == "bf16" and not bf16_ok:
        raise UserError(precision_where, "bf16", f"{gpu or 'this CPU'} has no native bf16 arithmetic; use fp32 or auto")
    return Resources(device, precision, micro_batch_size, bool(gradient_checkpointing), gpu)


def configure(resources: Resources | dict | None) -> Resources:
    """Install the resource settings of this process (a worker does it once, before its job)."""
    global _CURRENT
    if isinstance(resources, dict):
        resources = Resources(**resources)
    _CURRENT = resources or Resources()
    return _CURRENT


def current() -> Resources:
    return _CURRENT


def device():
    import torch

    return torch.device(_CURRENT.device)


def place(model):
    """``model`` on the run's device (fp32 weights: bf16 is autocast, see the module docstring)."""
    return model.to(device())


def autocast():
    """The precision context of a forward pass: bf16 autocast on the run's device, or nothing."""
    if _CURRENT.precision != "bf16":
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_type=_CURRENT.device_type, dtype=torch.bfloat16)


def micro_batches(indices, size: int | None):
    """``indices`` cut into consecutive chunks of at most ``size`` (one chunk when ``size`` is None)."""
    n = len(indices)
    if not size or size >= n:
        return [indices]
    return [indices[i:i + size] for i in range(0, n, size)]


def description(r: Resources | None = None) -> str:
    r = r or _CURRENT
    where = f"{r.device} ({r.gpu_name})" if r.gpu_name else r.device
    return f"{where}, {r.precision}"


def trainer_args() -> dict:
    """``transformers.TrainingArguments`` settings of the run's resources, for the TRL adapters: the
    device (``use_cpu``; a ``cuda:N`` becomes the current CUDA device, which accelerate uses), bf16
    autocast, gradient checkpointing."""
    r = _CURRENT
    if r.device_type == "cuda":
        import torch

        torch.cuda.set_device(torch.device(r.device))
    return dict(use_cpu=r.device_type == "cpu", bf16=r.precision == "bf16", fp16=False,
                gradient_checkpointing=r.gradient_checkpointing)
