"""Evaluation, the same code for every algorithm.

For a policy: sample completions for the held-out prompts (temperature T from the suite, 1.0 by
default, no top-k/top-p), judge them, pair them with π_SFT's baseline samples on the same prompts
for the win rate, and score them under π and π_ref, both at T, for KL(π_T‖π_ref,T) on the policy's
own samples (KL(π‖π_ref) at T = 1; docs/metrics.md §1.3).

Every KL is recorded with what it is: ``kl_temperature`` (T) and ``kl_kind``: "exact" for the
per-step sum of :mod:`harness.evaluation.kl`; for a policy that reports its KL itself, "analytic" (a
closed form that is exact under stated conditions, e.g. best-of-n without ties), "bound" (the closed
form where those conditions fail: the true KL is at most this) or "estimate" (docs/metrics.md §3.5).
"""
from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from harness.core import faults, stats
from harness.evaluation.judges import is_pairwise, pairwise_win_scores
from harness.evaluation.kl import sequence_kl
from harness.evaluation.sampling.base import GenerationSettings, PolicyHandle

if TYPE_CHECKING:  # the artifacts are execution's; evaluation only reads them
    from harness.execution.artifacts import SuiteArtifacts


KL_KINDS = ("exact", "analytic", "bound", "estimate")  # metrics["kl_kind"]


def distinct_n(token_lists: list[list[int]], n: int) -> float:
    """Unique n-grams / total n-grams over all completions (low = repetitive, degenerate text)."""
    grams = Counter()
    for t in token_lists:
        grams.update(tuple(t[i:i + n]) for i in range(len(t) - n + 1))
    total = sum(grams.values())
    return len(grams) / total if total else float("nan")


def evaluate_policy(model, art: SuiteArtifacts, seed: int, sampler=None, n_resamples: int = 10000,
                    desc: str = "evaluating") -> tuple[pd.DataFrame, dict]:
    """(per-sample table, metrics). ``seed`` seeds the policy's sampling (never the baseline's)."""
    ev = art.suite.evaluation
    sampler = sampler or art.sampler
    prompts, prompt_ids = art.eval_prompts, art.eval_prompt_ids
    settings = GenerationSettings(ev.max_new_tokens, ev.temperature, ev.batch_size)
    # A policy that is not a plain causal LM (e.g. best-of-n reranking) samples and measures its KL
    # itself through these two hooks; everything after sampling stays the same for every algorithm.
    if hasattr(model, "sample_for_evaluation"):
        comp = model.sample_for_evaluation(art, prompt_ids, ev.samples_per_prompt, settings, seed)
    else:
        # a LoRA-trained policy (merged for scoring) also names its adapter on π_SFT's folder: an engine
        # that serves adapters (vLLM) samples base + adapter without writing a merged copy
        adapter = getattr(model, "prefbench_adapter", None)
        handle = PolicyHandle(art.tokenizer, model, art.reference_dir if adapter else None, adapter_path=adapter)
        comp = sampler.sample(handle, prompt_ids, ev.samples_per_prompt, settings, seed=seed,
                              desc=f"{desc}: sampling")
    faults.point("eval:sampled")
    row_prompts = [prompts[i] for i in comp.prompt_index]
    pairwise = is_pairwise(art.judge)
    rewards = np.full(len(comp.texts), np.nan) if pairwise else art.judge.score(row_prompts, comp.texts)
    rows = [prompt_ids[i] for i in comp.prompt_index]
    if hasattr(model, "sequence_kl"):  # the policy measures its KL itself and says what kind it is
        kl = model.sequence_kl(art, rows, comp)
        kl_kind = getattr(model, "kl_kind", "estimate")
        if kl_kind not in KL_KINDS:
            raise ValueError(f"kl_kind must be one of {KL_KINDS}, got {kl_kind!r}")
    else:
        kl = sequence_kl(model, art.reference_model, rows, comp.token_ids, art.tokenizer.pad_token_id,
                         ev.batch_size, art.suite.policy.max_length, temperature=ev.temperature)
        kl_kind = "exact"
    base = art.baseline.set_index(["prompt_index", "sample_index"]).loc[
        list(zip(comp.prompt_index.tolist(), comp.sample_index.tolist()))]
    if pairwise:  # e.g. an LLM judge: both orders, inconsistent or unparseable verdicts count as ties
        win, judge_info = pairwise_win_scores(art.judge, row_prompts, comp.texts, base.completion.tolist())
    else:
        win = stats.win_scores(rewards, base.gold_reward.to_numpy())
        judge_info = {"judge": art.judge.identity}
    samples = pd.DataFrame({
        "prompt_index": comp.prompt_index, "sample_index": comp.sample_index,
        "prompt": [prompts[i] for i in comp.prompt_index], "completion": comp.texts,
        "completion_ids": comp.token_ids, "length": comp.lengths, "finished": comp.finished,
        "gold_reward": rewards, "baseline_reward": base.gold_reward.to_numpy(),
        "baseline_length": base.length.to_numpy(), "win": win, **kl})
    metrics = summarize(samples, n_resamples=n_resamples, seed=seed, engine=comp.engine)
    metrics["judge"] = judge_info
    # pairs a pairwise judge could not decide (scored ½): shown beside the win rate (docs/metrics.md §2.3)
    metrics["judge_unresolved"] = int(judge_info.get("unresolved", 0))
    metrics.update(getattr(model, "evaluation_metrics", lambda: {})())
    # what the kl column is: KL(π_T‖π_ref,T) at the sampling temperature, exact or an estimate
    metrics["kl_kind"], metrics["kl_temperature"] = kl_kind, float(ev.temperature)
    return samples, metrics


def per_prompt(samples: pd.DataFrame, column: str) -> np.ndarray:
    """Average over samples within a prompt: prompts, not samples, are the independent units."""
    return samples.groupby("prompt_index", sort=True)[column].mean().to_numpy()


def summarize(samples: pd.DataFrame, n_resamples: int = 10000, seed: int = 0, engine: str = "") -> dict:
    win_p = per_prompt(samples, "win")
    lo, hi = stats.bootstrap_ci(win_p, n_resamples=n_resamples, seed=seed)
    reward_p = per_prompt(samples, "gold_reward")
    length = float(samples.length.mean())
    w = samples.win.to_numpy()
    return {
        "n_prompts": int(len(win_p)), "n_samples": int(len(samples)),
        "gold_reward": float(reward_p.mean()),
        "gold_reward_sem": float(reward_p.std(ddof=1) / np.sqrt(len(reward_p))) if len(reward_p) > 1 else float("nan"),
        "baseline_reward": float(samples.baseline_reward.mean()),
        "win_rate": float(win_p.mean()), "win_rate_ci_low": float(lo), "win_rate_ci_high": float(hi),
        "wins": int((w == 1).sum()), "ties": int((w == 0.5).sum()), "losses": int((w == 0).sum()),
        "kl": float(samples.kl.mean()), "kl_k1": float(samples.kl_k1.mean()), "kl_k3": float(samples.kl_k3.mean()),
        "kl_per_token": float(samples.kl.sum() / max(1, samples.length.sum())),
        "length": length, "baseline_length": float(samples.baseline_length.mean()),
        "truncation_rate": float(1.0 - samples.finished.mean()),
        "distinct_2": distinct_n([list(t) for t in samples.completion_ids], 2),
        "sampler": engine,
    }
