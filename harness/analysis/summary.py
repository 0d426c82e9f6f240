"""Per-configuration statistics over seeds: mean, std, IQM, hierarchical CIs, failure rates and the
length-controlled win rate. Every seed is kept (``seeds`` holds one row per run)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness.core import stats
from harness.analysis.collect import REFERENCE, Block
from harness.analysis.options import Options

# per-prompt array -> metric name in the tables
METRICS = {"gold_reward": "gold_reward", "win": "win_rate", "kl": "kl", "length": "length"}
PAIRED = ("gold_reward", "win_rate")  # metrics whose bootstrap replicates are kept for paired comparisons


@dataclass
class GroupStats:
    table: pd.DataFrame  # one row per group (index = group id)
    seeds: pd.DataFrame  # one row per run: every seed, with its failure flags
    # metric -> n_seeds -> (group ids, replicates [n_resamples, n_groups]); same draws within a bucket
    reps: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]]
    lc_method: str


def failure_flags(block: Block, kl_bound: float) -> pd.DataFrame:
    """Per run: diverged, failed, KL above the bound, gold reward below π_SFT's (same seed; the mean
    over π_SFT runs when that seed has none), and any of them."""
    runs = block.runs
    ok = runs.status == "ok"
    ref = runs[(runs.algorithm == REFERENCE) & ok]
    by_seed = ref.groupby("seed").gold_reward.mean()
    ref_mean = float(ref.gold_reward.mean()) if len(ref) else np.nan
    comparator = runs.seed.map(by_seed).astype(float).fillna(ref_mean)
    comparator[runs.algorithm == REFERENCE] = np.nan
    out = pd.DataFrame({
        "diverged": runs.status == "diverged",
        "failed": ~ok & (runs.status != "diverged"),
        "kl_above_bound": ok & (runs.kl > kl_bound),
        "below_reference": ok & (runs.gold_reward < comparator),
        "reference_gold_reward": comparator,
    })
    out["any_failure"] = out[["diverged", "failed", "kl_above_bound", "below_reference"]].any(axis=1)
    return out


def _seed_values(block: Block) -> dict[str, np.ndarray]:
    """Per run, the metric over its prompts (mean of the per-prompt means; NaN without samples)."""
    out = {}
    for col, name in METRICS.items():
        a = block.per_prompt[col]
        cnt = (~np.isnan(a)).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[name] = np.where(cnt > 0, np.nansum(a, axis=1) / np.maximum(cnt, 1), np.nan)
    return out


def lc_stats(block: Block, opts: Options) -> dict | None:
    """Length-controlled win rate of every group over all samples of its runs (seeds, then prompts):
    ``stats.length_controlled_win_rate_many`` with one row per sample; None without samples."""
    smp, runs = block.samples, block.runs
    if not smp["run"].size:
        return None
    run = smp["run"].astype(np.intp)
    pos = pd.Index(block.groups.index).get_indexer(runs.group.to_numpy()[run])
    return stats.length_controlled_win_rate_many(smp["win"], smp["dlen"], pos, runs.seed.to_numpy()[run],
                                                 smp["prompt"], n_resamples=opts.n_resamples, alpha=opts.alpha,
                                                 seed=opts.seed, method=opts.lc_method, raw_ci=False)


def group_stats(block: Block, opts: Options, lc=None) -> GroupStats:
    """Per-group statistics. ``lc``: the result of :func:`lc_stats`, or a callable returning it (e.g. a
    computation running in another process, collected once the bootstraps here are done); None
    computes it here."""
    runs, groups = block.runs, block.groups
    flags = failure_flags(block, opts.kl_bound)
    values = _seed_values(block)
    seeds = pd.DataFrame({
        "group": runs.group, "label": runs.group.map(groups.label), "algorithm": runs.algorithm,
        "variant": runs.variant, "hyperparameters": runs.group.map(groups.hp_label), "seed": runs.seed,
        "run_id": runs.run_id, "status": runs.status, "failure_step": runs.failure_step,
        "failure_reason": runs.failure_reason, **values,
        "truncation_rate": runs.truncation_rate, "distinct_2": runs.distinct_2, **flags})
    seeds = seeds.sort_values(["group", "seed"], kind="stable")

    G = len(groups)
    table = pd.DataFrame(index=groups.index)
    for c in ("algorithm", "variant", "label", "hp_label", "hp_json"):
        table[c] = groups[c]
    table["n_runs"] = groups.n_runs
    table["n_seeds"] = groups.n_ok
    table["seeds"] = groups.seeds.map(lambda s: ",".join(map(str, s)))
    agg = flags.groupby(runs.group).sum(numeric_only=True)
    for c, name in (("diverged", "n_diverged"), ("failed", "n_failed"), ("kl_above_bound", "n_kl_above_bound"),
                    ("below_reference", "n_below_reference"), ("any_failure", "n_failures")):
        table[name] = agg[c].reindex(table.index).fillna(0).astype(int)
    table["failure_rate"] = table.n_failures / table.n_runs
    lo, hi = stats.binomial_ci(table.n_failures.to_numpy(), table.n_runs.to_numpy(), alpha=opts.alpha)
    table["failure_ci_low"], table["failure_ci_high"] = lo, hi

    # mean, std, IQM over seeds (ok runs only), padded to the largest seed count
    S_max = max(1, int(groups.n_ok.max()))
    reps: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]] = {m: {} for m in PAIRED}
    ok_runs = [list(r) for r in groups.ok_runs]
    n_ok = groups.n_ok.to_numpy()
    for col, name in METRICS.items():
        v = np.full((G, S_max), np.nan)
        for pos, runs_ok in enumerate(ok_runs):
            v[pos, :len(runs_ok)] = values[name][runs_ok]
        st = stats.seed_stats(v)
        table[name] = st["mean"]
        table[f"{name}_std"] = st["std"]
        table[f"{name}_iqm"] = st["iqm"]
        table[f"{name}_ci_low"] = np.nan
        table[f"{name}_ci_high"] = np.nan
    # hierarchical bootstrap (seeds, then the shared prompts), one call per seed count for all four
    # metrics: they share the resample draws (same seed and shape), made once
    for S in sorted(set(int(x) for x in n_ok if x > 0)):
        sel = np.flatnonzero(n_ok == S)
        gids = groups.index[sel].to_numpy()
        rows = np.array([ok_runs[k] for k in sel])  # [C, S] run rows
        Xs = [block.per_prompt[col][rows] for col in METRICS]  # each [C, S, I]
        all_rep = stats.hierarchical_bootstrap_replicates_many(Xs, opts.n_resamples, opts.seed, shared_items=True)
        for name, rep in zip(METRICS.values(), all_rep):
            lo, hi = stats.percentile_ci(rep, opts.alpha)
            table.loc[gids, f"{name}_ci_low"] = lo
            table.loc[gids, f"{name}_ci_high"] = hi
            if name in reps:
                reps[name][S] = (gids, rep)
    table["truncation_rate"] = seeds.groupby("group").truncation_rate.mean().reindex(table.index)
    table["distinct_2"] = seeds.groupby("group").distinct_2.mean().reindex(table.index)
    okr = runs[runs.status == "ok"]
    table["kl_per_token"] = okr.groupby("group").kl_per_token.mean().reindex(table.index)
    # what the KL column holds: exact unless some run of the group reports an estimate (docs/metrics.md §3.5)
    weakest = ("estimate", "bound", "analytic", "exact")  # a group's KL is as weak as its weakest run's
    kinds = okr.groupby("group").kl_kind.agg(lambda s: next((k for k in weakest if (s == k).any()), "estimate"))
    table["kl_kind"] = kinds.reindex(table.index).fillna("exact")
    table["kl_temperature"] = okr.groupby("group").kl_temperature.mean().reindex(table.index)
    if "win_baseline" in runs:  # constant within a block (the baseline artifact is part of its key)
        table["win_baseline"] = runs.groupby("group").win_baseline.first().reindex(table.index)
    table["judge_unresolved"] = okr.groupby("group").judge_unresolved.sum().reindex(table.index)
    for c in ("kl_k1", "kl_k3", "kl_upper_bound", "rm_valid_accuracy"):
        table[c] = okr.groupby("group")[c].mean().reindex(table.index)

    # length-controlled win rate over all samples of the group's runs (seeds, then prompts)
    lc_method = "none"
    for c in ("lc_win_rate", "lc_ci_low", "lc_ci_high", "lc_phi"):
        table[c] = np.nan
    lc = lc() if callable(lc) else lc if lc is not None else lc_stats(block, opts)
    if lc is not None:
        n = len(lc["lc_win_rate"])
        idx = table.index[:n]
        table.loc[idx, "lc_win_rate"] = lc["lc_win_rate"]
        table.loc[idx, "lc_ci_low"] = lc["low"]
        table.loc[idx, "lc_ci_high"] = lc["high"]
        table.loc[idx, "lc_phi"] = lc["phi"]
        lc_method = lc["method"]

    # provenance: a configuration whose own runs come from different library versions
    vj = runs.groupby("group").versions_json.nunique()
    table["mixed_versions"] = (vj.reindex(table.index) > 1).to_numpy()
    return GroupStats(table, seeds.reset_index(drop=True), reps, lc_method)
