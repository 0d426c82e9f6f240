"""Hyperparameter sensitivity per algorithm: range, best minus median, share of the grid within ε of
the best, and the expected best score as a function of the tuning budget."""
from __future__ import annotations

import numpy as np
import pandas as pd

from harness.core import stats
from harness.analysis.collect import REFERENCE, Block
from harness.analysis.options import Options
from harness.analysis.summary import GroupStats

SENSITIVITY_METRICS = ("win_rate", "gold_reward", "lc_win_rate")


def swept_algorithms(block: Block, gs: GroupStats) -> list[str]:
    """Algorithms with at least two configurations that have results."""
    t = gs.table[gs.table.n_seeds > 0]
    counts = t[t.algorithm != REFERENCE].groupby("algorithm").size()
    return [a for a in counts.index if counts[a] >= 2]


def sensitivity_tables(block: Block, gs: GroupStats, opts: Options) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(indices: one row per algorithm and metric; expected_max: one row per algorithm, metric and
    budget n = 1..N configurations drawn at random, without replacement)."""
    rows, em_rows = [], []
    t = gs.table
    for algo in swept_algorithms(block, gs):
        g = t[(t.algorithm == algo) & (t.n_seeds > 0)]
        for m in SENSITIVITY_METRICS:
            v = g[m].to_numpy(dtype=float)
            if np.isnan(v).all():
                continue
            idx = stats.sensitivity_indices(v, eps=opts.eps)
            best = g[m].idxmax()
            em = stats.expected_max(v)
            rows.append({"algorithm": algo, "metric": m, "n_configs": idx["n"],
                         "n_configs_without_results": int((t.algorithm == algo).sum() - len(g)),
                         "varying": ", ".join(block.hp_keys.get(algo, [])), "best": g.label[best],
                         "best_value": float(g[m][best]), "median": float(np.nanmedian(v)),
                         "range": idx["range"], "best_minus_median": idx["best_minus_median"],
                         "frac_within_eps": idx["frac_within_eps"], "eps": opts.eps, "cv": idx["cv"]})
            for n, e in enumerate(em, 1):
                em_rows.append({"algorithm": algo, "metric": m, "budget": n, "expected_max": float(e)})
    return pd.DataFrame(rows), pd.DataFrame(em_rows)
