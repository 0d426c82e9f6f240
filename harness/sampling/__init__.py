"""Samplers: one interface (:class:`harness.sampling.base.Sampler`), one module per engine.

``hf`` is Hugging Face ``generate``; ``vllm`` is vLLM (optional: ``requirements-vllm.txt``); ``auto``
picks vLLM when it is installed and the job is large enough to repay the engine's start-up
(:data:`AUTO_VLLM_MIN_TOKENS`), else ``hf``.
"""
from __future__ import annotations

from harness.errors import UserError

BACKENDS = ("hf", "vllm", "auto")

# ``auto`` uses vLLM from this many tokens to generate (prompts × samples per prompt × max_new_tokens).
# Measured with benchmarks/bench_sampling.py on 2 CPU cores (1.07M GPT-2): starting the in-process
# engine (import + LLM() + first generate) costs ~10-25 s, about what HF generate needs for ~10k-50k
# tokens at batch 256, while vLLM samples ~1.5-2x faster once started. Above ~50k tokens vLLM wins
# even with its start-up counted; the sentiment smoke evaluation (128 prompts × 1 × 48) stays on HF.
AUTO_VLLM_MIN_TOKENS = 50_000


def vllm_available() -> bool:
    from harness.sampling.vllm import available

    return available()


def resolve_auto(job_tokens: int | None) -> str:
    """The engine ``auto`` stands for: vLLM when installed and ``job_tokens`` >= the threshold."""
    if job_tokens is not None and job_tokens >= AUTO_VLLM_MIN_TOKENS and vllm_available():
        return "vllm"
    return "hf"


def get_sampler(name: str, where: str = "--sampler", job_tokens: int | None = None):
    """A sampler by name. ``job_tokens`` (prompts × samples per prompt × max_new_tokens of the
    largest sampling job) is only used by ``auto``; without it ``auto`` means ``hf``."""
    if name == "auto":
        name = resolve_auto(job_tokens)
    if name == "hf":
        from harness.sampling.hf import HFSampler

        return HFSampler()
    if name == "vllm":
        if not vllm_available():
            raise UserError(where, name, "vLLM is not installed; install the extra: "
                            "pip install -r requirements-vllm.txt (CPU) or pip install vllm (GPU)")
        from harness.sampling.vllm import VLLMSampler

        return VLLMSampler()
    raise UserError(where, name, f"unknown sampler; allowed: {', '.join(BACKENDS)}")
