"""Judges: one interface, three kinds (``JudgeSpec.kind``).

- **Scalar judges** return one score per (prompt, completion): ``.score(prompts, completions) -> ndarray``.
  ``vader`` (the gold reward of the embedded suites) and ``reward_model`` (any HF sequence-classification
  model with one output, :mod:`harness.evaluation.judges.reward_model`). A win rate under a scalar judge compares
  two scores (ties ½, docs/metrics.md §2.2).
- **Pairwise judges** compare two completions of the same prompt:
  ``.compare(prompts, completions_a, completions_b) -> PairwiseResult``. ``llm_pairwise``
  (:mod:`harness.evaluation.judges.llm`): an LLM behind any OpenAI-compatible chat endpoint, asked in both
  orders, with inconsistent verdicts and unresolved pairs (no verdict after bounded retries) counted and
  scored as ties.

Every judge has ``.identity`` (a dict stored with every score and win rate). :func:`pairwise_win_scores`
is the one entry point for win rates under either shape of judge, against any reference: π_SFT
samples, the dataset's chosen responses, or another run's samples (:func:`completions_from_run`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from harness.suites.spec import JudgeSpec


class RewardJudge(Protocol):
    identity: dict

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray: ...


class VaderJudge:
    """VADER compound sentiment in [-1, 1] (Hutto & Gilbert 2014): a real lexicon-and-rules scorer
    that ships with its package, so the gold reward needs no download."""

    def __init__(self, target: str = "completion"):
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self._sia = SentimentIntensityAnalyzer()
        self.target = target
        import vaderSentiment

        self.identity = {"kind": "vader", "target": target,
                         "version": getattr(vaderSentiment, "__version__", "3.3.2")}

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        texts = completions if self.target == "completion" else [p + c for p, c in zip(prompts, completions)]
        return np.array([self._sia.polarity_scores(t)["compound"] for t in texts], dtype=np.float64)


def is_pairwise(judge) -> bool:
    return hasattr(judge, "compare") and not hasattr(judge, "score")


def make_judge(spec: JudgeSpec, cache_root: Path | None = None):
    """The judge a suite's ``judge:`` section describes. ``cache_root``: where the LLM judge keeps its
    verdict cache when the spec names no ``cache_dir`` (the runner passes its artifact cache)."""
    from harness.core.errors import UserError

    if spec.kind == "vader":
        return VaderJudge(spec.target)
    if spec.kind == "reward_model":
        if not spec.model:
            raise UserError("judge", "model", "kind reward_model needs a model (hub id or local path)")
        from harness.evaluation.judges.reward_model import RewardModelJudge

        return RewardModelJudge(spec.model, target=spec.target, trust_remote_code=spec.trust_remote_code,
                                batch_size=spec.batch_size, max_length=spec.max_length,
                                label=getattr(spec, "label", None))
    if spec.kind == "llm_pairwise":
        for field in ("model", "base_url"):
            if not getattr(spec, field):
                raise UserError("judge", field, f"kind llm_pairwise needs {field}")
        from harness.evaluation.judges.llm import PairwiseLLMJudge, default_cache_dir

        return PairwiseLLMJudge(spec.model, spec.base_url, prompt_version=spec.prompt_version,
                                temperature=spec.temperature, max_tokens=spec.max_tokens,
                                api_key_env=spec.api_key_env, timeout_s=spec.timeout_s,
                                max_retries=spec.max_retries, revision=spec.revision,
                                cache_dir=spec.cache_dir or default_cache_dir(cache_root))
    raise ValueError(spec.kind)  # unreachable: the suite schema only admits known kinds


def pairwise_win_scores(judge, prompts: Sequence[str], policy_completions: Sequence[str],
                        reference_completions: Sequence[str]) -> tuple[np.ndarray, dict]:
    """Per-item win score of the policy against a reference completion of the same prompt (1 win,
    ½ tie, 0 loss) under any judge, and a dict for metrics.json: the judge's identity, W/T/L and, for a
    pairwise judge, its order-consistency counters and ``unresolved`` (pairs without a verdict after the
    judge's retries, included in the ties; see :meth:`PairwiseResult.summary`). The reference can be
    π_SFT samples, the dataset's chosen responses or another run's completions (:func:`completions_from_run`)."""
    from harness.core import stats

    if not (len(prompts) == len(policy_completions) == len(reference_completions)):
        raise ValueError("prompts, policy and reference completions differ in length")
    if is_pairwise(judge):
        res = judge.compare(prompts, policy_completions, reference_completions)
        scores, info = res.scores, res.summary()
    else:
        a = judge.score(prompts, policy_completions)
        b = judge.score(prompts, reference_completions)
        scores, info = stats.win_scores(a, b), {}
    info = {"judge": judge.identity, "win_rate": float(np.nanmean(scores)) if len(scores) else float("nan"),
            "wins": int((scores == 1).sum()), "ties": int((scores == 0.5).sum()),
            "losses": int((scores == 0).sum()), **info}
    return scores, info


def completions_from_run(run_dir: Path, prompt_index: Sequence[int], sample_index: Sequence[int]) -> list[str]:
    """Another run's completions (its ``samples.parquet``) aligned to (prompt_index, sample_index):
    the reference side of a run-against-run win rate. Raises KeyError naming a missing row."""
    import pandas as pd

    table = pd.read_parquet(Path(run_dir) / "samples.parquet", columns=["prompt_index", "sample_index", "completion"])
    lookup = table.set_index(["prompt_index", "sample_index"]).completion
    out = []
    for p, s in zip(prompt_index, sample_index):
        key = (int(p), int(s))
        if key not in lookup.index:
            raise KeyError(f"{run_dir}: no sample {key} (prompt_index, sample_index)")
        out.append(str(lookup.loc[key]))
    return out
