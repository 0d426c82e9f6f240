"""Samplers: one interface (:class:`harness.evaluation.sampling.base.Sampler`), one module per engine.

``hf`` is Hugging Face ``generate``; ``vllm`` is vLLM (optional: ``requirements-vllm.txt``; during a
``prefbench run`` one engine serves the whole sweep from a process of its own:
:mod:`harness.evaluation.sampling.server`); ``auto`` picks vLLM when it is installed and the job (a
sweep: every evaluation it plans) is large enough to repay the engine's start-up
(:data:`AUTO_VLLM_MIN_TOKENS`), else ``hf``.
"""
from __future__ import annotations

from harness.core.errors import UserError

BACKENDS = ("hf", "vllm", "auto")
DEFAULT_SAMPLER = "hf"  # the one default: `prefbench run --sampler`, plans and artifacts all use it

# ``auto`` uses vLLM from this many tokens to generate (prompts × samples per prompt × max_new_tokens).
# Measured with benchmarks/bench_sampling.py (2 shared CPU cores, the suite's 1.07M GPT-2, fp32, 48 new
# tokens): vLLM's start-up (engine + first call; import excluded as torch/transformers are loaded anyway)
# costs 14-24 s in-process and 35-49 s multiprocess, the time HF generate needs for ~12k-45k and
# ~24k-61k tokens. Below ~50k tokens the start-up cannot be repaid; above it vLLM wins wherever its
# steady state is faster than HF (GPU; larger models). On CPU with a 1M-parameter model the two
# engines sample at about the same speed (0.6-1.6x), so there `auto` changes little either way.
# The engine starts once per sweep, so a sweep's job is all its evaluations: the sentiment smoke
# comparison (2 runs + the reference row, 128 prompts × 1 × 48 = 6k tokens each) stays on HF; a sweep
# with 9 such evaluations or more (a run's checkpoint evaluations count) takes vLLM.
AUTO_VLLM_MIN_TOKENS = 50_000


def vllm_available() -> bool:
    from harness.evaluation.sampling.vllm import available

    return available()


def resolve_auto(job_tokens: int | None) -> str:
    """The engine ``auto`` stands for: vLLM when installed and ``job_tokens`` >= the threshold."""
    if job_tokens is not None and job_tokens >= AUTO_VLLM_MIN_TOKENS and vllm_available():
        return "vllm"
    return "hf"


def get_sampler(name: str, where: str = "--sampler", job_tokens: int | None = None):
    """A sampler by name. ``job_tokens`` (prompts × samples per prompt × max_new_tokens, summed over
    the evaluations one engine will serve) is only used by ``auto``; without it ``auto`` means ``hf``."""
    if name == "auto":
        name = resolve_auto(job_tokens)
    if name == "hf":
        from harness.evaluation.sampling.hf import HFSampler

        return HFSampler()
    if name == "vllm":
        if not vllm_available():
            raise UserError(where, name, "vLLM is not installed; install the extra: "
                            "pip install -r requirements-vllm.txt (CPU) or pip install vllm (GPU)")
        from harness.evaluation.sampling.vllm import VLLMSampler

        return VLLMSampler()
    raise UserError(where, name, f"unknown sampler; allowed: {', '.join(BACKENDS)}")
