"""Seed derivation: every random stream gets its own seed from (base seed, purpose).

Streams never share a seed by accident (π_SFT baseline samples vs a run's samples, data order vs
sampling), and a seed does not depend on Python's per-process string hashing.
"""
from __future__ import annotations

import hashlib


def derive(base: int, purpose: str) -> int:
    """A 31-bit seed for ``purpose`` derived from ``base`` (stable across processes and machines)."""
    digest = hashlib.sha256(f"{int(base)}/{purpose}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def seed_globals(seed: int) -> None:
    """Seed the process-global generators (Python's ``random``, numpy's legacy global RNG, torch's
    default generator). Part of every worker's preamble (:mod:`harness.execution.runner`): a use of a
    global generator that no code seeded gives the same draws in every process, whatever ran before."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
