"""Reward–KL frontier: every evaluation of every run (checkpoints and final), the Pareto set per
algorithm, the best reward within fixed KL budgets and the normalised area under the frontier, with
bootstrap CIs over seeds."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness.core import stats
from harness.analysis.collect import REFERENCE, Block
from harness.analysis.options import Options
from harness.analysis.summary import GroupStats

FRONTIER_METRICS = ("gold_reward", "win_rate")
NICE = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)


@dataclass
class Frontier:
    points: pd.DataFrame  # every evaluation, with on_front_<metric> flags (per algorithm)
    table: pd.DataFrame  # per algorithm and metric: reward at the budgets and the area, with CIs
    budgets: list[float]
    kl_max: float
    floors: dict[str, float]  # reward_floor of the area per metric (π_SFT's level)


def _ceil2(x: float) -> float:
    """Round up to two significant digits (11.3 -> 12, 0.734 -> 0.74)."""
    if not x > 0:
        return x
    e = math.floor(math.log10(x)) - 1
    return math.ceil(round(x / 10 ** e, 9)) * 10 ** e


def choose_budgets(final_kl: np.ndarray, kl_max: float, max_n: int = 5) -> list[float]:
    kl = final_kl[np.isfinite(final_kl) & (final_kl > 0)]
    lo = float(kl.min()) if kl.size else 0.0
    c = [b for b in NICE if lo <= b <= kl_max]
    if len(c) > max_n:
        c = [c[i] for i in np.unique(np.round(np.linspace(0, len(c) - 1, max_n)).astype(int))]
    return c or [kl_max]


def frontier_analysis(block: Block, gs: GroupStats, opts: Options) -> Frontier:
    pts = block.points.copy()
    groups = block.groups
    pts["algorithm"] = pts.group.map(groups.algorithm)
    pts["label"] = pts.group.map(groups.label)
    pts["seed"] = block.runs.seed.to_numpy()[pts.run.to_numpy(dtype=int)] if len(pts) else []
    pts["run_id"] = block.runs.run_id.to_numpy()[pts.run.to_numpy(dtype=int)] if len(pts) else []
    t = gs.table
    ref = block.reference_group
    floors = {"gold_reward": float(t.gold_reward[ref]) if ref is not None else float(np.nanmin(pts.gold_reward)),
              "win_rate": 0.5}
    for m in FRONTIER_METRICS:
        pts[f"on_front_{m}"] = False
        for algo, g in pts.groupby("algorithm"):
            pts.loc[g.index, f"on_front_{m}"] = stats.pareto_front(g.kl.to_numpy(), g[m].to_numpy())
    final = pts[pts.final & (pts.algorithm != REFERENCE)]
    within = final.kl[final.kl <= opts.kl_bound].to_numpy(dtype=float)
    if opts.kl_max:
        kl_max = float(opts.kl_max)
    else:
        kl_max = _ceil2(float(within.max())) if within.size and within.max() > 0 else 1.0
    budgets = list(opts.kl_budgets) if opts.kl_budgets else choose_budgets(final.kl.to_numpy(dtype=float), kl_max)
    rows = []
    for algo, g in pts[pts.algorithm != REFERENCE].groupby("algorithm", sort=False):
        for m in FRONTIER_METRICS:
            ok = g[m].notna() & g.kl.notna()
            if not ok.any():
                continue
            fb = stats.frontier_bootstrap(g.kl[ok], g[m][ok], g.seed[ok], budgets, kl_max, floors[m],
                                          n_resamples=opts.n_resamples, seed=opts.seed, alpha=opts.alpha)
            row = {"algorithm": algo, "metric": m, "n_points": int(ok.sum()), "n_seeds": int(g.seed[ok].nunique()),
                   "n_pareto": int(g[f"on_front_{m}"].sum()), "area": fb["area"], "area_ci_low": fb["area_low"],
                   "area_ci_high": fb["area_high"], "kl_max": kl_max, "floor": floors[m]}
            for k, b in enumerate(budgets):
                row[f"at_{b:g}"] = fb["reward_at_kl"][k]
                row[f"at_{b:g}_ci_low"] = fb["reward_at_kl_low"][k]
                row[f"at_{b:g}_ci_high"] = fb["reward_at_kl_high"][k]
            rows.append(row)
    return Frontier(pts, pd.DataFrame(rows), budgets, kl_max, floors)
