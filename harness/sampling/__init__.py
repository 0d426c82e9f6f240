"""Samplers: one interface (:class:`harness.sampling.base.Sampler`), one module per engine."""
from __future__ import annotations

from harness.errors import UserError

BACKENDS = ("hf",)


def get_sampler(name: str, where: str = "--sampler"):
    if name == "hf":
        from harness.sampling.hf import HFSampler

        return HFSampler()
    raise UserError(where, name, f"unknown sampler; allowed: {', '.join(BACKENDS)}")
