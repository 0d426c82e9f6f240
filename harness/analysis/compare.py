"""Comparisons between configurations: paired differences on the shared prompts, seed-level tests
with Holm correction, and Bradley–Terry ratings anchored at π_SFT."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from harness.core import stats
from harness.analysis.collect import Block
from harness.analysis.options import Options
from harness.analysis.summary import PAIRED, GroupStats

PROMPT_COLUMN = {"gold_reward": "gold_reward", "win_rate": "win"}


def version_differences(block: Block, run_rows) -> list[str]:
    """Packages whose version differs between these runs (empty when they agree)."""
    vs = [block.runs.versions.iloc[i] for i in run_rows]
    keys = sorted({k for v in vs for k in v})
    return [k for k in keys if len({v.get(k) for v in vs}) > 1]


def pair_list(block: Block, gs: GroupStats, opts: Options) -> list[tuple[int, int]]:
    """(a, b) pairs to test, b the comparator (earlier in display order). All pairs when there are at
    most ``opts.max_all_pairs`` configurations with results; otherwise each against π_SFT and against
    the best configuration of each paired metric."""
    t = gs.table
    live = [int(g) for g in t.index if t.n_seeds[g] > 0]
    if len(live) <= opts.max_all_pairs:
        return [(a, b) for k, a in enumerate(live) for b in live[:k]]
    anchors = []
    ref = block.reference_group
    if ref is not None and ref in live:
        anchors.append(ref)
    for m in PAIRED:
        best = t.loc[live, m].idxmax()
        if best == best and int(best) not in anchors:
            anchors.append(int(best))
    pairs = []
    for b in anchors:
        for a in live:
            if a != b and (a, b) not in pairs and (b, a) not in pairs:
                pairs.append((max(a, b), min(a, b)))
    return pairs


def compare_pairs(block: Block, gs: GroupStats, opts: Options) -> pd.DataFrame:
    """One row per (metric, pair): the paired difference a - b on the shared prompts (hierarchical
    bootstrap over seeds, then prompts; runs paired by seed), its bootstrap p-value, the probability
    of improvement and Welch / Mann–Whitney tests on the per-seed values; Holm-adjusted per metric."""
    t = gs.table
    groups = block.groups
    seeds = gs.seeds
    pairs = pair_list(block, gs, opts)
    if not pairs:
        return pd.DataFrame()
    ok = seeds[seeds.status == "ok"]
    # per-group lists once (a pandas lookup per pair and metric adds up over hundreds of pairs)
    ok_seeds, ok_runs = groups.ok_seeds.to_dict(), groups.ok_runs.to_dict()
    run_lists, labels = groups.runs.to_dict(), groups.label.to_dict()
    # provenance per group: its runs' library-version sets
    vj = block.runs.versions_json.to_numpy()
    vsets = {int(g): set(vj[r] for r in run_lists[g]) for g in groups.index}
    differ = {}
    for a, b in pairs:
        if len(vsets[a] | vsets[b]) > 1:
            differ[(a, b)] = ", ".join(version_differences(block, run_lists[a] + run_lists[b]))
    # pairs whose runs do not pair up seed for seed: their paired differences get their own
    # hierarchical bootstrap; all of them (both metrics) with the same number of paired seeds share
    # the resample draws, so they run as one call per seed count
    direct = {}  # pair index -> (run rows of a, run rows of b, pairing text)
    for p, (a, b) in enumerate(pairs):
        sa, sb = ok_seeds[a], ok_seeds[b]
        ra, rb = ok_runs[a], ok_runs[b]
        if sa == sb:
            continue
        common = sorted(set(sa) & set(sb))
        if common:
            direct[p] = ([ra[sa.index(s)] for s in common], [rb[sb.index(s)] for s in common],
                         f"common seeds ({len(common)})")
        else:  # no seed in common: pair by seed order (the mean difference is still unbiased)
            k = min(len(ra), len(rb))
            direct[p] = (ra[:k], rb[:k], "seed order")
    direct_boot = {}  # (metric, pair index) -> replicates
    by_size = {}
    for p, (ia, ib, _) in direct.items():
        by_size.setdefault(len(ia), []).append(p)
    for S, ps in by_size.items():
        keys = [(metric, p) for metric in PAIRED for p in ps]
        ds = [block.per_prompt[PROMPT_COLUMN[m]][direct[p][0]] - block.per_prompt[PROMPT_COLUMN[m]][direct[p][1]]
              for m, p in keys]
        reps = stats.hierarchical_bootstrap_replicates_many([d[None] for d in ds], opts.n_resamples, opts.seed,
                                                            shared_items=True)
        for key, rep in zip(keys, reps):
            direct_boot[key] = rep[:, 0]
    rows = []
    for metric in PAIRED:
        col = PROMPT_COLUMN[metric]
        values = {int(g): v[metric].to_numpy(dtype=float) for g, v in ok.groupby("group")}
        mean = t[metric].to_dict()
        where = {}  # group -> column in its n_seeds bucket of replicates
        for S, (gids, _) in gs.reps[metric].items():
            for k, g in enumerate(gids):
                where[int(g)] = k
        n = len(pairs)
        diff = np.full(n, np.nan)
        lo, hi, pv = diff.copy(), diff.copy(), diff.copy()
        pairing, n_pair = [""] * n, np.zeros(n, dtype=int)
        fast = {}  # n_seeds -> pair indices whose runs pair up seed for seed
        for p, (a, b) in enumerate(pairs):
            if p not in direct:
                sa = ok_seeds[a]
                fast.setdefault(len(sa), []).append(p)
                pairing[p], n_pair[p] = "same seeds", len(sa)
                diff[p] = mean[a] - mean[b]
                continue
            ia, ib, pairing[p] = direct[p]
            boot = direct_boot[(metric, p)]
            lo[p], hi[p] = stats.percentile_ci(boot, opts.alpha)
            pv[p] = stats.bootstrap_p_value(boot)
            diff[p] = float(np.nanmean(block.per_prompt[col][ia] - block.per_prompt[col][ib]))
            n_pair[p] = len(ia)
        for S, idx in fast.items():
            rep = gs.reps[metric][S][1]
            ca = [where[pairs[p][0]] for p in idx]
            cb = [where[pairs[p][1]] for p in idx]
            for c0 in range(0, len(idx), 256):  # bounded memory: [n_resamples, 256] at a time
                sl = slice(c0, c0 + 256)
                boot = rep[:, ca[sl]] - rep[:, cb[sl]]
                ii = idx[sl]
                lo[ii], hi[ii] = stats.percentile_ci(boot, opts.alpha)
                pv[ii] = stats.bootstrap_p_value(boot)
        # seed-level statistics, batched by (n_a, n_b)
        poi = {k: np.full(n, np.nan) for k in ("p", "low", "high")}
        cs = {k: np.full(n, np.nan) for k in ("welch_t", "welch_p", "mwu_u", "mwu_p", "mwu_min_p")}
        n_a = np.array([len(values.get(a, ())) for a, _ in pairs])
        n_b = np.array([len(values.get(b, ())) for _, b in pairs])
        for na, nb in set(zip(n_a, n_b)):
            idx = np.flatnonzero((n_a == na) & (n_b == nb))
            if na == 0 or nb == 0:
                continue
            X = np.stack([values[pairs[p][0]] for p in idx])
            Y = np.stack([values[pairs[p][1]] for p in idx])
            r = stats.probability_of_improvement_many(X, Y, n_resamples=opts.n_resamples, seed=opts.seed,
                                                      alpha=opts.alpha)
            for k in poi:
                poi[k][idx] = r[k]
            r = stats.compare_seeds_many(X, Y)
            for k in cs:
                cs[k][idx] = r[k]
        rows.append(pd.DataFrame({
            "metric": metric, "a": [a for a, _ in pairs], "b": [b for _, b in pairs],
            "a_label": [labels[a] for a, _ in pairs], "b_label": [labels[b] for _, b in pairs],
            "diff": diff, "ci_low": lo, "ci_high": hi, "p_boot": pv, "pairing": pairing, "n_paired_seeds": n_pair,
            "n_prompts": len(block.prompts), "poi": poi["p"], "poi_low": poi["low"], "poi_high": poi["high"],
            **cs, "n_a": n_a, "n_b": n_b, "versions_differ": [differ.get(pq, "") for pq in pairs]}))
    out = pd.concat(rows, ignore_index=True)
    for c in ("p_boot", "welch_p", "mwu_p"):
        out[f"{c}_holm"] = np.nan
        for metric, g in out.groupby("metric"):
            out.loc[g.index, f"{c}_holm"] = stats.holm(g[c].to_numpy())
    out["significant"] = out.p_boot_holm < opts.alpha
    return out


def bt_players(block: Block, gs: GroupStats, opts: Options) -> list[int]:
    t = gs.table
    live = [int(g) for g in t.index if t.n_seeds[g] > 0]
    if len(live) <= opts.max_bt_players:
        return live
    ref = block.reference_group
    keep = [ref] if ref in live else []
    for g in t.loc[live].sort_values("gold_reward", ascending=False).index:
        if len(keep) >= opts.max_bt_players:
            break
        if int(g) not in keep:
            keep.append(int(g))
    return sorted(keep)


def bradley_terry_ratings(block: Block, gs: GroupStats, opts: Options) -> pd.DataFrame:
    """Bradley–Terry MLE over the configurations: on every shared prompt, each pair of configurations
    plays one battle whose outcome is the share of (seed of a, seed of b) comparisons that a wins on
    gold reward (ties ½). Anchored at π_SFT (Elo 1000); the bootstrap resamples prompts."""
    players = bt_players(block, gs, opts)
    cols = ["group", "label", "algorithm", "strength", "strength_low", "strength_high", "elo", "elo_low", "elo_high",
            "p_beats_anchor", "anchor"]
    if len(players) < 2:
        return pd.DataFrame(columns=cols)
    groups = block.groups
    R = block.per_prompt["gold_reward"]
    ii, jj, ss, cl = [], [], [], []
    for pa, a in enumerate(players):
        Ra = R[groups.ok_runs[a]]  # [S_a, I]
        for pb in range(pa):
            Rb = R[groups.ok_runs[players[pb]]]
            w = stats.win_scores(*np.broadcast_arrays(Ra[:, None, :], Rb[None, :, :]))  # [S_a, S_b, I]
            cnt = (~np.isnan(w)).sum(axis=(0, 1))
            with np.errstate(invalid="ignore", divide="ignore"):
                s = np.nansum(w, axis=(0, 1)) / cnt
            keep = cnt > 0
            ii.append(np.full(keep.sum(), pa))
            jj.append(np.full(keep.sum(), pb))
            ss.append(s[keep])
            cl.append(np.flatnonzero(keep))
    ref = block.reference_group
    anchor = players.index(ref) if ref in players else 0
    bt = stats.bradley_terry(np.concatenate(ii), np.concatenate(jj), np.concatenate(ss), len(players), anchor=anchor,
                             n_resamples=opts.n_resamples, seed=opts.seed, cluster=np.concatenate(cl),
                             alpha=opts.alpha)
    out = pd.DataFrame({"group": players, "label": [groups.label[g] for g in players],
                        "algorithm": [groups.algorithm[g] for g in players],
                        "strength": bt["strength"], "strength_low": bt["strength_low"],
                        "strength_high": bt["strength_high"], "elo": bt["elo"], "elo_low": bt["elo_low"],
                        "elo_high": bt["elo_high"]})
    out["p_beats_anchor"] = 1.0 / (1.0 + np.exp(-out.strength))
    out["anchor"] = groups.label[players[anchor]]
    return out


def provenance(block: Block) -> dict:
    """What differs between the runs of a block that should not: library versions, judge, evaluation
    settings, shared artifacts (π_SFT, baseline samples, pairs), sampler."""
    runs = block.runs
    out = {"versions": version_differences(block, range(len(runs)))}
    for key, col in (("judge", "judge_json"), ("evaluation", "eval_json"), ("artifacts", "artifacts_json"),
                     ("sampler", "sampler")):
        vals = runs[col].dropna().unique().tolist()
        out[key] = [json.loads(v) if isinstance(v, str) and v[:1] in "{[" else v for v in vals] if len(vals) > 1 else []
    return out
