"""Settings of one report (every number that shapes a result is here and is stated in report.md)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Options:
    kl_bound: float = 50.0  # failure criterion: final KL(π‖π_SFT) above this many nats per sequence
    n_resamples: int = 10000  # bootstrap resamples, every bootstrap in the report
    seed: int = 0  # seed of every bootstrap (the report is deterministic)
    alpha: float = 0.05  # 1 - confidence level; also the family-wise level of the Holm-corrected tests
    eps: float = 0.01  # sensitivity: a config is "near-best" within eps of the best (metric units)
    kl_budgets: tuple[float, ...] | None = None  # frontier: reward at these KL budgets (None: chosen from data)
    kl_max: float | None = None  # frontier: area over [0, kl_max] (None: the largest final KL within kl_bound)
    sqrt_kl: bool = True  # also draw the frontier against √KL
    max_all_pairs: int = 20  # all pairs of configurations up to this many; beyond, vs π_SFT and vs the best
    max_bt_players: int = 30  # Bradley–Terry players: π_SFT plus the best configurations up to this many
    max_plot_groups: int = 24  # strip and training-curve plots show at most this many configurations
    lc_method: str = "auto"  # length-controlled win rate bootstrap: refit | onestep | auto
    select_split: bool = False  # choose best/Pareto on one half of the prompts, report on the other
    plots: bool = True
    formats: tuple[str, ...] = ("png", "pdf")
    jobs: int | None = None  # processes for statistics and figures (None: 2, at most the CPUs; 1: this one only)
