"""The sampler interface: prompts in; n completions per prompt, token ids and text out; seeded.

Every engine has the same semantics: ancestral sampling at the given temperature with no top-k or
top-p truncation, stopping at EOS or the chat template's end-of-turn token
(:func:`harness.suites.prompting.stop_token_ids`; kept as the last completion token) or at ``max_new_tokens``
(then ``finished`` is False: the sample was truncated). Log-probabilities are never taken from a
sampler: scoring is :mod:`harness.training.logprobs`' job.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np


@dataclass
class GenerationSettings:
    max_new_tokens: int
    temperature: float = 1.0
    batch_size: int = 64


@dataclass
class PolicyHandle:
    """A policy as samplers see it: an in-memory model, a folder on disk, or both."""
    tokenizer: Any
    model: Any = None
    path: Path | None = None
    adapter_path: Path | None = None    # a PEFT adapter folder on top of ``path`` (LoRA-trained policies)


@dataclass
class Completions:
    """N = n_prompts × n rows, prompt-major: row k is sample k % n of prompt k // n."""
    prompt_index: np.ndarray            # [N] int
    sample_index: np.ndarray            # [N] int
    token_ids: list[list[int]]          # completion ids, EOS included when finished
    texts: list[str]                    # decoded completion, special tokens removed
    finished: np.ndarray                # [N] bool: ended with EOS within max_new_tokens
    engine: str = ""
    info: dict = field(default_factory=dict)

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(t) for t in self.token_ids])


class Sampler(Protocol):
    name: str

    def sample(self, policy: PolicyHandle, prompt_ids: Sequence[Sequence[int]], n: int,
               settings: GenerationSettings, seed: int, desc: str = "sampling") -> Completions: ...


def finish_completions(raw: list[list[int]], eos_id: int | Sequence[int], max_new_tokens: int, tokenizer, n: int,
                       engine: str) -> Completions:
    """Cut each raw continuation after its first stop token (``eos_id``: EOS, or every stop id:
    :func:`harness.suites.prompting.stop_token_ids`) and build :class:`Completions` (shared by engines)."""
    stops = {int(eos_id)} if isinstance(eos_id, int) else {int(i) for i in eos_id}
    ids, finished = [], []
    for r in raw:
        r = list(r)[:max_new_tokens]
        cut = next((k for k, t in enumerate(r) if t in stops), None)
        if cut is not None:
            r = r[: cut + 1]
            finished.append(True)
        else:
            finished.append(False)
        ids.append(r)
    texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
    N = len(ids)
    return Completions(prompt_index=np.arange(N) // n, sample_index=np.arange(N) % n, token_ids=ids,
                       texts=texts, finished=np.array(finished, dtype=bool), engine=engine)
