"""Statistics for comparing alignment algorithms (DPO, PPO, ...) in prefbench.

Everything here is plain numpy/scipy and vectorised over bootstrap resamples:
a bootstrap draws its resample indices in memory-bounded chunks and evaluates
the statistic for a whole chunk at once (gather, bincount or one matrix
product), never in a Python loop over resamples. All randomness goes through
``np.random.default_rng(seed)`` so results are bit-for-bit reproducible.

Conventions
-----------
* "items" are prompts (or battles), "seeds" are independent training runs of
  one configuration, "configs" are hyperparameter settings.
* NaN marks a missing value and is dropped (or gets zero weight); every
  function says which.
* Confidence intervals are two-sided percentile intervals at level 1 - alpha
  (numpy's default "linear" quantile interpolation).

Definitions and pitfalls: docs/metrics.md — win rate §2.2, seeds and IQM §5,
length control §6, probability of improvement §7.3, tests §7.4, Holm §7.5,
Bradley-Terry §7.6, failure rates §8, sensitivity and expected max §9,
frontier §10.
"""
from __future__ import annotations

import math
import time
import warnings

import numpy as np
from scipy import sparse, special, stats

__all__ = [
    "win_scores",
    "iqm",
    "bootstrap_ci",
    "hierarchical_bootstrap",
    "hierarchical_bootstrap_many",
    "hierarchical_bootstrap_replicates",
    "hierarchical_bootstrap_replicates_many",
    "percentile_ci",
    "bootstrap_p_value",
    "seed_stats",
    "seed_summary",
    "binomial_ci",
    "paired_bootstrap_diff",
    "probability_of_improvement",
    "compare_seeds",
    "probability_of_improvement_many",
    "compare_seeds_many",
    "holm",
    "length_controlled_win_rate",
    "length_controlled_win_rate_many",
    "bradley_terry",
    "sensitivity_indices",
    "expected_max",
    "expected_max_with_replacement",
    "pareto_front",
    "frontier_envelope",
    "reward_at_kl",
    "frontier_area",
    "frontier_bootstrap",
]

# Largest number of float64 elements one temporary array may hold (32 MiB).
# Bootstraps draw their resamples in chunks sized against this budget.
_CHUNK_ELEMS = 1 << 22

# Up to this many configs the hierarchical bootstrap gathers resampled cells
# directly; above it, one matrix product per chunk serves all configs.
_GATHER_MAX_CONFIGS = 4

ELO_SCALE = 400.0 / math.log(10.0)  # Elo points per nat of BT strength
ELO_BASE = 1000.0  # Elo rating of the anchor player


# ---------------------------------------------------------------------------
# internal helpers
# ---------------------------------------------------------------------------

def _chunks(n_resamples, per_resample):
    """Yield (start, size) blocks of resamples holding <= _CHUNK_ELEMS elements.

    The chunking depends only on (n_resamples, per_resample), so two routines
    that ask for the same per-resample size consume the random stream
    identically (this is what makes the 1-seed hierarchical bootstrap equal the
    plain item bootstrap number for number).
    """
    size = max(1, _CHUNK_ELEMS // max(1, int(per_resample)))
    for start in range(0, int(n_resamples), size):
        yield start, min(size, int(n_resamples) - start)


def _counts(idx, n):
    """Multiplicities of resample indices.

    idx: int [R, m] with values in [0, n) -> float [R, n], row r counting how
    often each unit was drawn in resample r. One bincount, no loop.
    """
    r = idx.shape[0]
    flat = (idx + (np.arange(r) * n)[:, None]).ravel()
    return np.bincount(flat, minlength=r * n).reshape(r, n).astype(np.float64)


def _percentile_interval(boot, alpha):
    """Percentile interval of bootstrap replicates along axis 0 (NaNs ignored).

    Columns without NaN go through one batched ``np.quantile``; only the
    columns holding a NaN take ``np.nanquantile`` (which loops over columns in
    Python), and an all-NaN column gives NaN. Per column this is the same
    order statistics and the same interpolation as ``np.nanquantile`` on the
    whole array, so the numbers are identical, bit for bit.
    """
    q = [alpha / 2.0, 1.0 - alpha / 2.0]
    if boot.ndim == 1:
        if not np.isnan(boot).any():
            lo, hi = np.quantile(boot, q)
        elif np.isnan(boot).all():
            lo = hi = np.float64(np.nan)
        else:
            lo, hi = np.nanquantile(boot, q)
        return lo, hi
    nan_col = np.isnan(boot).any(axis=0)
    if not nan_col.any():
        lo, hi = np.quantile(boot, q, axis=0)
        return lo, hi
    lo = np.full(boot.shape[1:], np.nan)
    hi = np.full(boot.shape[1:], np.nan)
    clean = ~nan_col
    if clean.any():
        lo[clean], hi[clean] = np.quantile(boot[:, clean], q, axis=0)
    some = nan_col & ~np.isnan(boot).all(axis=0)
    for k in zip(*np.nonzero(some)):
        lo[k], hi[k] = np.nanquantile(boot[(slice(None),) + k], q)
    return lo, hi


def _scalar(x):
    """0-d arrays -> Python float, everything else unchanged."""
    x = np.asarray(x)
    return float(x) if x.ndim == 0 else x


def _check_alpha(alpha):
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def _iqm_sorted_rows(xs, valid):
    """Interquartile mean along the last axis of already-sorted data.

    xs: [..., n] sorted ascending with NaN last; valid: [...] number of non-NaN
    entries per row. Uses trim_mean's cut (lowercut = floor(0.25 * m)) so rows
    with different numbers of valid values are trimmed correctly, via a
    cumulative sum so the whole batch is handled in one pass.
    """
    n = xs.shape[-1]
    cs = np.concatenate(
        [np.zeros(xs.shape[:-1] + (1,)), np.cumsum(np.where(np.isnan(xs), 0.0, xs), axis=-1)],
        axis=-1,
    )
    lo = (valid // 4).astype(np.intp)  # == int(0.25 * m) for integer m
    hi = (valid - lo).astype(np.intp)
    top = np.take_along_axis(cs, np.minimum(hi, n)[..., None], axis=-1)[..., 0]
    bot = np.take_along_axis(cs, lo[..., None], axis=-1)[..., 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(valid > 0, (top - bot) / (hi - lo), np.nan)


# ---------------------------------------------------------------------------
# 1. win scores, IQM
# ---------------------------------------------------------------------------

def win_scores(a, b):
    """Per-item win score of system A against system B under a gold reward.

    a, b: float arrays of the same (any) shape: gold reward r*(x, y_A) and
    r*(x, y_B) on the same items. Returns float array of that shape with
    1 where a > b, 0.5 where a == b (a tie counts half, AlpacaEval / MT-Bench
    ``win_rate_adjusted`` convention) and 0 where a < b; NaN where either
    input is NaN (missing judgement). ``win_scores(a, b).mean()`` is the
    head-to-head win rate.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        # no broadcasting: a silent outer comparison would be a wrong win rate
        raise ValueError(f"shape mismatch {a.shape} vs {b.shape}")
    s = np.where(a > b, 1.0, np.where(a < b, 0.0, 0.5))
    return np.where(np.isnan(a) | np.isnan(b), np.nan, s)


def iqm(x):
    """Interquartile mean: mean of the middle 50% of all values.

    x: array of any shape; all values are pooled (rliable ``aggregate_iqm``,
    i.e. ``scipy.stats.trim_mean(x, 0.25, axis=None)``: floor(0.25 * m) values
    are cut from each end). NaNs are dropped first. Returns a float (NaN if no
    values).
    """
    v = np.asarray(x, dtype=np.float64).ravel()
    v = np.sort(v[~np.isnan(v)])
    m = v.size
    if m == 0:
        return float("nan")
    lo = int(0.25 * m)
    return float(v[lo:m - lo].mean())


# ---------------------------------------------------------------------------
# 2. item bootstrap
# ---------------------------------------------------------------------------

def bootstrap_ci(x, n_resamples=10000, alpha=0.05, seed=0, statistic="mean"):
    """Percentile bootstrap CI over items (axis 0).

    x: [n_items] or [n_items, ...]: rows are the resampling units (prompts);
      trailing axes are independent columns (e.g. several metrics or
      simulated datasets) that share the resample indices.
    statistic: "mean" or "iqm" (interquartile mean over items, per column).
    Returns (low, high): floats for 1-D x, arrays of shape x.shape[1:] else.

    NaN = missing: for 1-D x the NaN items are dropped before resampling; for
    N-D x each column's statistic is computed over its non-NaN resampled rows.
    The percentile interval is known to undercover slightly with few items
    (n < ~30); prefer BCa/studentised intervals or more items there.
    """
    _check_alpha(alpha)
    if statistic not in ("mean", "iqm"):
        raise ValueError(f"statistic must be 'mean' or 'iqm', got {statistic!r}")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 0:
        raise ValueError("x must have at least one axis (items)")
    if x.ndim == 1:
        x = x[~np.isnan(x)]
    n = x.shape[0]
    tail = x.shape[1:]
    if n == 0:
        nan = np.full(tail, np.nan)
        return _scalar(nan), _scalar(nan)
    nan_mask = np.isnan(x)
    has_nan = bool(nan_mask.any())
    rng = np.random.default_rng(seed)
    boot = np.empty((int(n_resamples),) + tail)
    per = n * int(np.prod(tail, dtype=np.int64))
    for start, size in _chunks(n_resamples, per):
        idx = rng.integers(0, n, size=(size, n))
        xb = x[idx]  # [size, n, *tail]
        if statistic == "mean":
            if has_nan:
                cnt = (~nan_mask)[idx].sum(axis=1)
                with np.errstate(invalid="ignore", divide="ignore"):
                    boot[start:start + size] = np.where(nan_mask[idx], 0.0, xb).sum(axis=1) / cnt
            else:
                boot[start:start + size] = xb.mean(axis=1)
        else:
            xb = np.moveaxis(xb, 1, -1)  # items last for the row-wise IQM
            valid = (~np.isnan(xb)).sum(axis=-1)
            boot[start:start + size] = _iqm_sorted_rows(np.sort(xb, axis=-1), valid)
    lo, hi = _percentile_interval(boot, alpha)
    return _scalar(lo), _scalar(hi)


# ---------------------------------------------------------------------------
# 3. hierarchical (seeds -> items) bootstrap
# ---------------------------------------------------------------------------

def _hier_boot(X, n_resamples, seed, shared_items):
    """Bootstrap replicates of the grand mean for a stack of configs.

    X: [n_configs, n_seeds, n_items] with NaN = missing. Returns
    [n_resamples, n_configs]. See ``_hier_boot_many``.
    """
    return _hier_boot_many([X], n_resamples, seed, shared_items)[0]


# rows of resamples per block in the gather branch: the gathered [rows, seeds,
# items] cells and their flat indices stay in cache
_GATHER_ROWS = 256


def _hier_boot_many(Xs, n_resamples, seed, shared_items):
    """Bootstrap replicates of the grand mean for several stacks of configs.

    Xs: list of [n_configs_k, n_seeds, n_items] arrays (NaN = missing), all
    with the same (n_seeds, n_items). Returns a list of [n_resamples,
    n_configs_k] arrays; element k equals ``_hier_boot_many([Xs[k]], ...)[0]``
    bit for bit: every stack is resampled with the same draws (they depend
    only on the seed and (n_seeds, n_items)), which are made once per chunk.

    Per resample: draw n_seeds seed slots with replacement; for each slot draw
    n_items item indices with replacement (nested), or one item draw shared by
    all slots (shared_items=True, crossed seeds x prompts design). The grand
    mean is sum(weights * value) / sum(weights * present) over all resampled
    cells, i.e. the mean over every non-missing resampled score.

    The resample indices are drawn once and reused for every config (common
    random numbers): each config's replicates are an ordinary hierarchical
    bootstrap, and the chunking of the random stream depends only on
    (n_seeds, n_items), so config c gives the same numbers as a call on X[c]
    alone. For more than a few configs the weighted sums come out of BLAS
    matrix products of item multiplicities [slots, items] with the scores
    [items, configs], so the cost per config is a few flops per resampled cell.
    """
    S, I = Xs[0].shape[1:]
    if any(X.shape[1:] != (S, I) for X in Xs):
        raise ValueError("every stack needs the same (n_seeds, n_items)")
    prep = []
    for X in Xs:
        C = X.shape[0]
        present = ~np.isnan(X)
        has_nan = not bool(present.all())
        Xz = np.where(present, X, 0.0)
        # For a handful of configs a direct gather of the resampled cells is
        # cheaper than building multiplicity matrices for the matrix product.
        d = dict(C=C, has_nan=has_nan, gather=C <= _GATHER_MAX_CONFIGS, out=np.empty((int(n_resamples), C)))
        if d["gather"]:
            d["flat"] = [Xz[c].ravel() for c in range(C)]
            d["pflat"] = [present[c].ravel() for c in range(C)] if has_nan else None
        elif shared_items:
            d["V"] = Xz.reshape(C * S, I).T.copy()  # [I, C*S]
            d["P"] = present.reshape(C * S, I).T.astype(np.float64) if has_nan else None
        else:
            d["V3"] = np.ascontiguousarray(Xz.transpose(1, 2, 0))  # [S, I, C]: seed s's scores, items x configs
            d["P3"] = np.ascontiguousarray(present.transpose(1, 2, 0)).astype(np.float64) if has_nan else None
        prep.append(d)
    any_gather = any(d["gather"] for d in prep)
    any_product = not all(d["gather"] for d in prep)
    rng = np.random.default_rng(seed)
    per = I if shared_items else S * I
    for start, b in _chunks(n_resamples, per):
        # With one seed the seed draw is trivially all zeros: skip the RNG so
        # the item stream matches bootstrap_ci exactly.
        sidx = rng.integers(0, S, size=(b, S)) if S > 1 else np.zeros((b, 1), np.intp)
        # one item draw per chunk, read by both branches (same draws, so results agree)
        iidx = rng.integers(0, I, size=(b, I) if shared_items else (b * S, I))
        if any_gather:
            _gather_means(prep, sidx, iidx, shared_items, S, I, start, b)
        if not any_product:
            continue
        if shared_items:
            W = _counts(iidx, I)  # [b, I]
            mult = _counts(sidx, S)  # [b, S]: how often each seed was drawn
        else:
            W = _counts(iidx, I)  # [b*S, I], row = (resample, slot)
            slot_seed = sidx.ravel()
            # Group the slots by the seed they drew, so each slot's item
            # weights multiply only that seed's scores: one product per seed,
            # [slots drawing s, items] @ [items, configs].
            rows = [np.flatnonzero(slot_seed == s) for s in range(S)]
            Ws = [W[r] for r in rows]
        cb = max(1, _CHUNK_ELEMS // (b * S))  # configs per block
        for d in prep:
            if d["gather"]:
                continue
            C, has_nan, out = d["C"], d["has_nan"], d["out"]
            if shared_items:
                V, P = d["V"], d["P"]
                for c0 in range(0, C, cb):
                    cols = slice(c0 * S, min(C, c0 + cb) * S)
                    num = np.einsum("bcs,bs->bc", (W @ V[:, cols]).reshape(b, -1, S), mult)
                    if has_nan:
                        den = np.einsum("bcs,bs->bc", (W @ P[:, cols]).reshape(b, -1, S), mult)
                    else:
                        den = float(S * I)
                    with np.errstate(invalid="ignore", divide="ignore"):
                        out[start:start + b, c0:c0 + cb] = num / den
            else:
                V3, P3 = d["V3"], d["P3"]
                for c0 in range(0, C, cb):
                    c1 = min(C, c0 + cb)
                    num = np.empty((b * S, c1 - c0))
                    den = np.empty((b * S, c1 - c0)) if has_nan else None
                    for s in range(S):
                        num[rows[s]] = Ws[s] @ V3[s, :, c0:c1]
                        if has_nan:
                            den[rows[s]] = Ws[s] @ P3[s, :, c0:c1]
                    num = num.reshape(b, S, -1).sum(axis=1)
                    den = den.reshape(b, S, -1).sum(axis=1) if has_nan else float(S * I)
                    with np.errstate(invalid="ignore", divide="ignore"):
                        out[start:start + b, c0:c1] = num / den
    return [d["out"] for d in prep]


def _gather_means(prep, sidx, iidx, shared_items, S, I, start, b):
    """The gather branch of ``_hier_boot_many`` for one chunk of resamples.

    The cell (seed slot, item) of resample r is read from the flat [S*I]
    scores at sidx * I + item; the flat indices are made once per block of
    rows and serve every gathered config. Each resample's mean is the sum
    over its [S, I] gathered cells (numpy's pairwise sum over the contiguous
    row), as in a direct fancy-indexed gather.
    """
    iidx = iidx if shared_items else iidx.reshape(b, S, I)
    for r0 in range(0, b, _GATHER_ROWS):
        r1 = min(b, r0 + _GATHER_ROWS)
        base = sidx[r0:r1, :, None] * I
        lin = base + (iidx[r0:r1, None, :] if shared_items else iidx[r0:r1])  # [rows, S, I]
        for d in prep:
            if not d["gather"]:
                continue
            out = d["out"]
            num = np.stack([np.take(f, lin).sum(axis=(1, 2)) for f in d["flat"]], axis=1)
            if d["has_nan"]:
                den = np.stack([np.take(p, lin).sum(axis=(1, 2)) for p in d["pflat"]], axis=1)
            else:
                den = float(S * I)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[start + r0:start + r1] = num / den


def _grand_mean(X):
    """Mean of all non-NaN values along the last two axes (NaN if none)."""
    present = ~np.isnan(X)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(present, X, 0.0).sum(axis=(-2, -1)) / present.sum(axis=(-2, -1))


def hierarchical_bootstrap_many(scores, n_resamples=10000, alpha=0.05, seed=0, shared_items=False):
    """Hierarchical bootstrap CI of the grand mean for many configs at once.

    scores: [n_configs, n_seeds, n_items] (e.g. per-prompt win scores of every
      seed of every hyperparameter config; same prompts everywhere; NaN =
      missing cell).
    shared_items: see ``hierarchical_bootstrap``.
    Returns dict(point, low, high), each [n_configs].

    Config c gets exactly what ``hierarchical_bootstrap(scores[c])`` would give
    (same seed -> same numbers), except that a seed row that is entirely NaN is
    kept here as a seed slot that contributes no items (the single-config
    function drops such rows). Cost is one matrix product per chunk of
    resamples: 333 configs x 3 seeds x 500 prompts x 10,000 resamples runs in a
    few seconds.
    """
    _check_alpha(alpha)
    X = np.asarray(scores, dtype=np.float64)
    if X.ndim != 3:
        raise ValueError(f"scores must be [n_configs, n_seeds, n_items], got shape {X.shape}")
    if min(X.shape) == 0:
        nan = np.full(X.shape[0], np.nan)
        return dict(point=nan, low=nan.copy(), high=nan.copy())
    boot = _hier_boot(X, n_resamples, seed, shared_items)
    lo, hi = _percentile_interval(boot, alpha)
    return dict(point=_grand_mean(X), low=lo, high=hi)


def hierarchical_bootstrap(scores, n_resamples=10000, alpha=0.05, seed=0, shared_items=False):
    """Two-level (seeds -> items) percentile bootstrap CI of the grand mean.

    scores: [n_seeds, n_items]: score of seed s on item i (the same items,
      e.g. prompts, for every seed); NaN = missing. A 1-D input is one seed.
    Each resample draws n_seeds seeds with replacement, then for each drawn
    seed n_items items with replacement (items within seed); the statistic is
    the mean over all non-missing resampled scores (grand mean). With one seed
    this is the ordinary item bootstrap: same seed, same resamples, and the
    numbers of ``bootstrap_ci`` up to floating-point rounding.

    shared_items: False (default) = nested resampling as described above.
      Pitfall: when the same prompts are scored in every seed, prompt
      difficulty is shared across seeds (crossed design) and the nested scheme
      counts that variance only 1/n_seeds times, so its CI is too narrow when
      prompt effects dominate. True = one item resample per replicate shared
      by all drawn seeds, which keeps the prompt effect's full variance (and is
      slightly conservative for the seed x prompt noise).
    Returns dict(point, low, high, n_seeds, n_items); seeds with no
    non-missing score are dropped.

    With few seeds (3-5) resampling seeds is coarse (only C(2S-1, S) distinct
    seed multisets) and the seed-level variance is underestimated by a factor
    (S-1)/S; report n_seeds next to the interval.
    """
    X = np.asarray(scores, dtype=np.float64)
    if X.ndim == 1:
        X = X[None, :]
    if X.ndim != 2:
        raise ValueError(f"scores must be [n_seeds, n_items], got shape {X.shape}")
    X = X[~np.isnan(X).all(axis=1)] if X.shape[1] else X[:0]
    res = hierarchical_bootstrap_many(X[None], n_resamples, alpha, seed, shared_items)
    return dict(point=float(res["point"][0]), low=float(res["low"][0]), high=float(res["high"][0]),
                n_seeds=int(X.shape[0]), n_items=int(X.shape[1]))


def hierarchical_bootstrap_replicates(scores, n_resamples=10000, seed=0, shared_items=False):
    """The bootstrap replicates behind ``hierarchical_bootstrap_many``.

    scores: [n_configs, n_seeds, n_items] (NaN = missing cell).
    Returns [n_resamples, n_configs]: replicate r of config c is the grand
    mean of config c under resample r. The draws depend only on (seed,
    n_seeds, n_items), so two calls with the same seed and shape use the same
    resamples (common random numbers). That makes paired comparisons free:
    for two configs whose seed rows are paired (row k of A and row k of B ran
    with the same seed) and that have no missing cells, ``rep[:, a] -
    rep[:, b]`` is exactly the hierarchical bootstrap of the per-cell
    differences A - B, i.e. what ``paired_bootstrap_diff`` computes on 2-D
    input with the same seed.
    """
    X = np.asarray(scores, dtype=np.float64)
    if X.ndim != 3:
        raise ValueError(f"scores must be [n_configs, n_seeds, n_items], got shape {X.shape}")
    if min(X.shape) == 0:
        return np.full((int(n_resamples), X.shape[0]), np.nan)
    return _hier_boot(X, n_resamples, seed, shared_items)


def hierarchical_bootstrap_replicates_many(scores, n_resamples=10000, seed=0, shared_items=False):
    """``hierarchical_bootstrap_replicates`` for several score stacks under the same resamples.

    scores: list of [n_configs_k, n_seeds, n_items] arrays (e.g. one per
    metric, or one per paired difference) with the same (n_seeds, n_items).
    Returns a list whose element k is exactly
    ``hierarchical_bootstrap_replicates(scores[k], n_resamples, seed,
    shared_items)``; the resample draws, which depend only on the seed and the
    shape, are made once for all of them.
    """
    Xs = [np.asarray(x, dtype=np.float64) for x in scores]
    for X in Xs:
        if X.ndim != 3:
            raise ValueError(f"scores must be [n_configs, n_seeds, n_items], got shape {X.shape}")
    live = [k for k, X in enumerate(Xs) if min(X.shape) > 0]
    out = [np.full((int(n_resamples), X.shape[0]), np.nan) for X in Xs]
    if live:
        for k, rep in zip(live, _hier_boot_many([Xs[k] for k in live], n_resamples, seed, shared_items)):
            out[k] = rep
    return out


def percentile_ci(boot, alpha=0.05):
    """Two-sided percentile interval of bootstrap replicates along axis 0.

    boot: [n_resamples, ...]; NaN replicates are ignored. Returns (low, high)
    of shape boot.shape[1:] (floats for 1-D input).
    """
    _check_alpha(alpha)
    lo, hi = _percentile_interval(np.asarray(boot, dtype=np.float64), alpha)
    return _scalar(lo), _scalar(hi)


def bootstrap_p_value(boot, null=0.0):
    """Two-sided percentile-bootstrap p-value of H0: statistic = null.

    boot: [n_resamples, ...] replicates of the statistic (e.g. a paired
    difference); NaN replicates are ignored. p = min(1, 2 min(F, 1 - F'))
    with F = (#{rep <= null} + 1) / (B + 1) and F' = 1 - (#{rep >= null} + 1)
    / (B + 1): the smallest alpha at which the percentile interval of level
    1 - alpha excludes ``null`` (CI inversion), with the +1 correction so that
    p is never 0 (its floor is 2 / (B + 1)). Returns a float or an array of
    shape boot.shape[1:] (NaN where no replicate is finite).
    """
    b = np.asarray(boot, dtype=np.float64)
    ok = ~np.isnan(b)
    n = ok.sum(axis=0)
    le = (ok & (b <= null)).sum(axis=0)
    ge = (ok & (b >= null)).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.minimum(1.0, 2.0 * np.minimum(le + 1.0, ge + 1.0) / (n + 1.0))
    return _scalar(np.where(n > 0, p, np.nan))


def seed_stats(values):
    """Mean, std (ddof=1) and IQM over seeds, for many configs at once.

    values: [n_configs, n_seeds] per-seed metric (NaN = no value: a config
    with fewer seeds pads with NaN). Returns dict(n, mean, std, iqm) of arrays
    [n_configs]; std is NaN with fewer than 2 values, everything NaN with none.
    The IQM is ``iqm`` row by row (scipy ``trim_mean(x, 0.25)``).
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2:
        raise ValueError(f"values must be [n_configs, n_seeds], got shape {v.shape}")
    ok = ~np.isnan(v)
    n = ok.sum(axis=1)
    vz = np.where(ok, v, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, vz.sum(axis=1) / n, np.nan)
        ss = (np.where(ok, v - mean[:, None], 0.0) ** 2).sum(axis=1)
        std = np.where(n > 1, np.sqrt(ss / (n - 1)), np.nan)
    q = _iqm_sorted_rows(np.sort(v, axis=1), n) if v.shape[1] else np.full(v.shape[0], np.nan)
    return dict(n=n, mean=mean, std=std, iqm=q)


# ---------------------------------------------------------------------------
# 4./5. seed summaries
# ---------------------------------------------------------------------------

def seed_summary(values, n_resamples=10000, seed=0, alpha=0.05):
    """Summary of one metric across seeds (runs) of one configuration.

    values: [n_seeds] final metric per seed (NaN = missing run, dropped; count
      failed runs separately with ``binomial_ci`` rather than as NaN).
    Returns dict(n, mean, std (ddof=1, NaN if n < 2), iqm, ci_low, ci_high,
    t_low, t_high): ci_* is the percentile bootstrap CI of the mean over seeds
    (NaN if n < 2: a zero-width interval from one run would be false
    precision); t_* is the Student-t interval mean +- t_{1-alpha/2, n-1} s/sqrt(n),
    reported because with 3-5 seeds the bootstrap interval is too narrow (it
    cannot exceed the observed range; the t interval at n = 3 is +-2.5 s).
    """
    _check_alpha(alpha)
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[~np.isnan(v)]
    n = int(v.size)
    nan = float("nan")
    if n == 0:
        return dict(n=0, mean=nan, std=nan, iqm=nan, ci_low=nan, ci_high=nan, t_low=nan, t_high=nan)
    mean = float(v.mean())
    if n < 2:
        return dict(n=n, mean=mean, std=nan, iqm=iqm(v), ci_low=nan, ci_high=nan, t_low=nan, t_high=nan)
    std = float(v.std(ddof=1))
    lo, hi = bootstrap_ci(v, n_resamples=n_resamples, alpha=alpha, seed=seed)
    half = stats.t.ppf(1.0 - alpha / 2.0, n - 1) * std / math.sqrt(n)
    return dict(n=n, mean=mean, std=std, iqm=iqm(v), ci_low=lo, ci_high=hi,
                t_low=float(mean - half), t_high=float(mean + half))


def binomial_ci(k, n, alpha=0.05, method="exact"):
    """Confidence interval for a binomial proportion k/n (e.g. failed runs).

    k, n: ints or integer arrays (broadcast). method: "exact" (Clopper-Pearson,
    via beta quantiles) or "wilson" (Wilson score, no continuity correction).
    Returns (low, high), floats or arrays; equal to
    ``scipy.stats.binomtest(k, n).proportion_ci(1 - alpha, method)``; NaN where
    n == 0. Example: 0 failures in 5 runs -> exact upper bound 0.52 (Wilson
    0.43): a clean record over 5 seeds is weak evidence of stability.
    """
    _check_alpha(alpha)
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    k, n = np.broadcast_arrays(k, n)
    if np.any(k < 0) or np.any(k > n) or np.any(k != np.round(k)) or np.any(n != np.round(n)):
        raise ValueError("need integers 0 <= k <= n")
    ok = n > 0
    ns = np.where(ok, n, 1.0)
    ks = np.where(ok, k, 0.0)
    if method == "exact":
        with np.errstate(invalid="ignore", divide="ignore"):
            # Clopper-Pearson limits are beta quantiles; guard the k=0 / k=n
            # edges whose beta parameters would be 0.
            lo = np.where(ks == 0, 0.0,
                          special.betaincinv(np.maximum(ks, 1), ns - ks + 1, alpha / 2.0))
            hi = np.where(ks == ns, 1.0,
                          special.betaincinv(ks + 1, np.maximum(ns - ks, 1), 1.0 - alpha / 2.0))
    elif method == "wilson":
        z = special.ndtri(1.0 - alpha / 2.0)
        p = ks / ns
        denom = 2.0 * (ns + z * z)
        center = (2.0 * ns * p + z * z) / denom
        delta = z / denom * np.sqrt(4.0 * ns * p * (1.0 - p) + z * z)
        lo = np.where(ks == 0, 0.0, center - delta)
        hi = np.where(ks == ns, 1.0, center + delta)
    else:
        raise ValueError(f"method must be 'exact' or 'wilson', got {method!r}")
    lo = np.where(ok, lo, np.nan)
    hi = np.where(ok, hi, np.nan)
    return _scalar(lo), _scalar(hi)


# ---------------------------------------------------------------------------
# 7. paired differences
# ---------------------------------------------------------------------------

def paired_bootstrap_diff(a, b, n_resamples=10000, alpha=0.05, seed=0, shared_items=False):
    """Paired bootstrap CI of mean(a) - mean(b) on the same items.

    a, b: [n_items] per-item scores of two systems on the same prompts, or
      [n_seeds, n_items] for several seeds (row k of a paired with row k of b,
      e.g. same data order / sampling seed; if seeds are unrelated the
      pairing is arbitrary but the mean difference and its variance are still
      estimated without bias). NaN = missing; a pair with either side missing
      is dropped.
    Works on the per-item differences d = a - b, which removes prompt
    difficulty from the comparison. 1-D: item bootstrap of mean(d); 2-D:
    ``hierarchical_bootstrap(d)`` (seeds, then items; shared_items as there).
    Returns dict(diff, low, high).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired inputs need equal shapes, got {a.shape} vs {b.shape}")
    d = a - b  # NaN if either side is missing
    if d.ndim == 1:
        d = d[~np.isnan(d)]
        lo, hi = bootstrap_ci(d, n_resamples=n_resamples, alpha=alpha, seed=seed)
        return dict(diff=float(d.mean()) if d.size else float("nan"), low=lo, high=hi)
    if d.ndim == 2:
        r = hierarchical_bootstrap(d, n_resamples=n_resamples, alpha=alpha, seed=seed,
                                   shared_items=shared_items)
        return dict(diff=r["point"], low=r["low"], high=r["high"])
    raise ValueError(f"inputs must be 1-D or 2-D, got {d.ndim}-D")


# ---------------------------------------------------------------------------
# 8./9./10. seed-level comparisons and multiplicity
# ---------------------------------------------------------------------------

def probability_of_improvement(x, y, n_resamples=2000, seed=0, alpha=0.05):
    """P(X > Y): probability that a run of algorithm X beats a run of Y.

    x: [n_x] per-seed scores of X, y: [n_y] of Y (NaN dropped).
    p = U / (n_x n_y), the Mann-Whitney U of x vs y with ties counted 1/2
    (rliable ``probability_of_improvement`` for one task). The CI resamples x
    and y independently (rliable's independent bootstrap); a CI excluding 0.5
    indicates a difference. Returns dict(p, low, high).

    Vectorised through the pairwise comparison matrix G[i, j] in {0, .5, 1}:
    for resample counts cx, cy the resampled U is cx @ G @ cy.
    """
    _check_alpha(alpha)
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    x = x[~np.isnan(x)]
    y = y[~np.isnan(y)]
    nx, ny = x.size, y.size
    if nx == 0 or ny == 0:
        return dict(p=float("nan"), low=float("nan"), high=float("nan"))
    G = (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])
    rng = np.random.default_rng(seed)
    boot = np.empty(int(n_resamples))
    for start, b in _chunks(n_resamples, nx + ny):
        cx = _counts(rng.integers(0, nx, size=(b, nx)), nx)
        cy = _counts(rng.integers(0, ny, size=(b, ny)), ny)
        boot[start:start + b] = np.einsum("bi,ij,bj->b", cx, G, cy) / (nx * ny)
    lo, hi = _percentile_interval(boot, alpha)
    return dict(p=float(G.mean()), low=float(lo), high=float(hi))


def compare_seeds(x, y):
    """Two-sample tests on per-seed scores of two algorithms.

    x: [n_x], y: [n_y] (NaN dropped). Returns dict(welch_t, welch_p, mwu_u,
    mwu_p, mwu_min_p, n_x, n_y, ties):
      welch_*: Welch's unequal-variance t-test (scipy ttest_ind, equal_var=False);
        NaN if a group has < 2 values or both have zero variance.
      mwu_u, mwu_p: Mann-Whitney U of x and its exact two-sided p-value (scipy,
        method="exact"; not corrected for ties, so ``ties`` flags them).
      mwu_min_p: smallest p the exact two-sided MWU can produce at these
        sizes, min(1, 2 / C(n_x + n_y, n_x)): 0.1 for 3 vs 3 (p < 0.05 is
        impossible), 2/252 = 0.0079 for 5 vs 5. A "non-significant" MWU with
        mwu_min_p >= alpha says nothing.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    x = x[~np.isnan(x)]
    y = y[~np.isnan(y)]
    nx, ny = int(x.size), int(y.size)
    nan = float("nan")
    out = dict(welch_t=nan, welch_p=nan, mwu_u=nan, mwu_p=nan, mwu_min_p=nan, n_x=nx, n_y=ny,
               ties=bool(np.intersect1d(x, y).size or np.unique(x).size < nx or np.unique(y).size < ny))
    with warnings.catch_warnings():
        # zero-variance groups make scipy warn and return NaN, which we keep
        warnings.simplefilter("ignore", RuntimeWarning)
        if nx >= 2 and ny >= 2:
            r = stats.ttest_ind(x, y, equal_var=False)
            out["welch_t"], out["welch_p"] = float(r.statistic), float(r.pvalue)
        if nx >= 1 and ny >= 1:
            r = stats.mannwhitneyu(x, y, alternative="two-sided", method="exact")
            out["mwu_u"], out["mwu_p"] = float(r.statistic), float(r.pvalue)
            out["mwu_min_p"] = min(1.0, 2.0 / math.comb(nx + ny, nx))
    return out


def _pair_rows(x, y):
    """Checked [n_pairs, n_x], [n_pairs, n_y] float arrays for the ``*_many`` seed comparisons."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError("x and y must be [n_pairs, n_x] and [n_pairs, n_y]")
    if np.isnan(x).any() or np.isnan(y).any():
        raise ValueError("NaN scores: group pairs by their non-missing sizes")
    return x, y


def probability_of_improvement_many(x, y, n_resamples=2000, seed=0, alpha=0.05):
    """``probability_of_improvement`` for many pairs with the same seed counts.

    x: [n_pairs, n_x], y: [n_pairs, n_y] per-seed scores (no NaN: group
    pairs by their sizes). Row k gives exactly ``probability_of_improvement(
    x[k], y[k], n_resamples, seed, alpha)``: the same resample draws and
    chunking, shared by all rows (common random numbers). The resampled U of
    every pair is one matrix product of the draws' outer counts with the
    stacked comparison matrices. Returns dict(p, low, high) of arrays [n_pairs].
    """
    _check_alpha(alpha)
    x, y = _pair_rows(x, y)
    P, nx = x.shape
    ny = y.shape[1]
    if P == 0 or nx == 0 or ny == 0:
        nan = np.full(P, np.nan)
        return dict(p=nan, low=nan.copy(), high=nan.copy())
    G = (x[:, :, None] > y[:, None, :]) + 0.5 * (x[:, :, None] == y[:, None, :])  # [P, nx, ny]
    Gf = G.reshape(P, nx * ny).T  # [nx*ny, P]
    rng = np.random.default_rng(seed)
    boot = np.empty((int(n_resamples), P))
    for start, b in _chunks(n_resamples, nx + ny):
        cx = _counts(rng.integers(0, nx, size=(b, nx)), nx)
        cy = _counts(rng.integers(0, ny, size=(b, ny)), ny)
        out = boot[start:start + b]  # the product lands in place (rows of a C-ordered array)
        np.matmul((cx[:, :, None] * cy[:, None, :]).reshape(b, nx * ny), Gf, out=out)
        out /= nx * ny
    lo, hi = _percentile_interval(boot, alpha)
    return dict(p=G.mean(axis=(1, 2)), low=lo, high=hi)


def compare_seeds_many(x, y):
    """``compare_seeds`` for many pairs with the same seed counts.

    x: [n_pairs, n_x], y: [n_pairs, n_y] (no NaN). Returns dict of arrays
    [n_pairs] with the keys of ``compare_seeds`` (n_x, n_y are ints); scipy's
    tests run along axis 1, so row k equals ``compare_seeds(x[k], y[k])``.
    """
    x, y = _pair_rows(x, y)
    P, nx = x.shape
    ny = y.shape[1]
    nan = np.full(P, np.nan)
    both = np.concatenate([x, y], axis=1)
    srt = np.sort(both, axis=1)
    ties = (srt[:, 1:] == srt[:, :-1]).any(axis=1) if both.shape[1] > 1 else np.zeros(P, bool)
    out = dict(welch_t=nan.copy(), welch_p=nan.copy(), mwu_u=nan.copy(), mwu_p=nan.copy(),
               mwu_min_p=nan.copy(), n_x=int(nx), n_y=int(ny), ties=ties)
    if P == 0:
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if nx >= 2 and ny >= 2:
            r = stats.ttest_ind(x, y, axis=1, equal_var=False)
            out["welch_t"], out["welch_p"] = np.asarray(r.statistic, float), np.asarray(r.pvalue, float)
        if nx >= 1 and ny >= 1:
            r = stats.mannwhitneyu(x, y, axis=1, alternative="two-sided", method="exact")
            out["mwu_u"], out["mwu_p"] = np.asarray(r.statistic, float), np.asarray(r.pvalue, float)
            out["mwu_min_p"] = np.full(P, min(1.0, 2.0 / math.comb(nx + ny, nx)))
    return out


def holm(pvalues):
    """Holm-Bonferroni step-down adjusted p-values.

    pvalues: array of any shape; NaN entries pass through and do not count
    towards the number of tests m. With the non-NaN p sorted ascending,
    p_adj_(k) = max_{j <= k} min(1, (m - j + 1) p_(j)) (monotone, capped at 1).
    Reject H_(k) at family-wise level alpha iff p_adj_(k) <= alpha. Returns
    an array of the input's shape (a float for a scalar).
    """
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    pv = p[ok]
    m = pv.size
    if m:
        order = np.argsort(pv, kind="stable")
        scaled = pv[order] * (m - np.arange(m))
        adj = np.empty(m)
        adj[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
        out[ok] = adj
    return _scalar(out)


# ---------------------------------------------------------------------------
# 11. length-controlled win rate
# ---------------------------------------------------------------------------

def _fit_lc_glm(s, z, w, l2, max_iter=100, tol=1e-10, max_step=5.0, theta0=0.0, phi0=0.0):
    """Batched penalised logistic fit P(win_i) = sigmoid(theta + phi z_i).

    s: [n] soft labels in [0, 1]; z: [n] length feature; w: [B, n] item
    weights (bootstrap multiplicities; ones for the point fit). Minimises
    sum_i w_i BCE(s_i, sigmoid(theta + phi z_i)) + l2/2 (theta^2 + phi^2) for
    all B weightings at once by Newton-Raphson with a closed-form 2x2 solve.
    Steps are clipped to max_step (the objective is convex, so a damped
    Newton step cannot overshoot into divergence). theta0, phi0: starting
    point (scalars or [B]; a warm start from the full-sample fit makes
    bootstrap refits converge in a few steps). Returns theta, phi [B].
    """
    n = w.shape[1]
    return _fit_lc_glm_rows(np.broadcast_to(s, (w.shape[0], n)), np.broadcast_to(z, (w.shape[0], n)), w, l2,
                            max_iter, tol, max_step, theta0, phi0)


def _fit_lc_glm_rows(s, z, w, l2, max_iter=100, tol=1e-10, max_step=5.0, theta0=0.0, phi0=0.0):
    """``_fit_lc_glm`` for B different datasets at once: s, z, w are [B, n]
    (row b: its labels, length features and weights; zero weight pads rows
    of different lengths). Returns theta, phi [B]."""
    B = s.shape[0]
    theta = np.zeros(B) + theta0
    phi = np.zeros(B) + phi0
    z2 = z * z
    for _ in range(max_iter):
        p = special.expit(theta[:, None] + phi[:, None] * z)
        r = w * (p - s)
        g0 = r.sum(axis=1) + l2 * theta
        g1 = (r * z).sum(axis=1) + l2 * phi
        h = w * p * (1.0 - p)
        h00 = h.sum(axis=1) + l2
        h01 = (h * z).sum(axis=1)
        h11 = (h * z2).sum(axis=1) + l2
        det = h00 * h11 - h01 * h01
        d0 = (h11 * g0 - h01 * g1) / det
        d1 = (h00 * g1 - h01 * g0) / det
        scale = np.minimum(1.0, max_step / np.maximum(np.maximum(np.abs(d0), np.abs(d1)), 1e-300))
        theta -= scale * d0
        phi -= scale * d1
        if np.max(np.abs(scale * d0)) < tol and np.max(np.abs(scale * d1)) < tol:
            break
    return theta, phi


def length_controlled_win_rate(scores, delta_len, n_resamples=1000, seed=0, alpha=0.05, l2=1e-3):
    """Length-controlled win rate (AlpacaEval 2.0 "length_controlled_minimal").

    scores: [n_items] win score of the model vs the baseline in [0, 1]
      (1 win, 0.5 tie, 0 loss, or soft judge probabilities).
    delta_len: [n_items] length(model output) - length(baseline output).
    Fits the logistic GLM P(win_i) = sigmoid(theta + phi * tanh(dlen_i / sd))
    with sd = std(delta_len, ddof=1) by maximum likelihood on the soft labels
    (binary cross-entropy with fractional targets, which is how a tie enters
    as half a win and half a loss). The LC win rate is the prediction with
    the length term set to zero, sigmoid(theta): the win rate the model would
    have against an equally long baseline. The CI bootstraps items and refits
    the GLM in every resample (AlpacaEval's own LC standard error ignores the
    fit uncertainty); all refits run as one batched Newton-Raphson. sd is kept
    at its full-sample value (a fixed design constant).

    l2: ridge penalty l2/2 (theta^2 + phi^2) on the summed log-likelihood.
      It only matters when the data are (quasi-)separable (e.g. all wins, or
      the model wins exactly when it is longer), where the MLE is infinite;
      it then keeps the fit finite (theta ~ log(n / l2)). For n >= 50 and
      non-separable data it moves sigmoid(theta) by < 1e-4.
    Returns dict(lc_win_rate, low, high, raw_win_rate, raw_low, raw_high, phi, n).
    NaN pairs are dropped.
    """
    _check_alpha(alpha)
    s = np.asarray(scores, dtype=np.float64).ravel()
    d = np.asarray(delta_len, dtype=np.float64).ravel()
    if s.shape != d.shape:
        raise ValueError("scores and delta_len need the same length")
    ok = ~(np.isnan(s) | np.isnan(d))
    s, d = s[ok], d[ok]
    n = s.size
    nan = float("nan")
    if n == 0:
        return dict(lc_win_rate=nan, low=nan, high=nan, raw_win_rate=nan, raw_low=nan,
                    raw_high=nan, phi=nan, n=0)
    if np.any((s < 0) | (s > 1)):
        raise ValueError("scores must lie in [0, 1]")
    sd = d.std(ddof=1) if n > 1 else 0.0
    # equal lengths everywhere: the length term is identically 0 (phi -> 0 by the ridge)
    z = np.tanh(d / sd) if sd > 0 else np.zeros(n)
    theta, phi = _fit_lc_glm(s, z, np.ones((1, n)), l2)
    rng = np.random.default_rng(seed)
    boot = np.empty((int(n_resamples), 2))
    # [b, n] weights plus ~6 temporaries of that size per Newton iteration
    for start, b in _chunks(n_resamples, 8 * n):
        w = _counts(rng.integers(0, n, size=(b, n)), n)
        th, _ = _fit_lc_glm(s, z, w, l2)
        boot[start:start + b, 0] = special.expit(th)
        boot[start:start + b, 1] = (w @ s) / n
    lo, hi = _percentile_interval(boot, alpha)
    return dict(lc_win_rate=float(special.expit(theta[0])), low=float(lo[0]), high=float(hi[0]),
                raw_win_rate=float(s.mean()), raw_low=float(lo[1]), raw_high=float(hi[1]),
                phi=float(phi[0]), n=int(n))


def length_controlled_win_rate_many(scores, delta_len, config, seed_id, item_id, n_resamples=10000,
                                    alpha=0.05, seed=0, l2=1e-3, method="auto", refit_budget=2e7, raw_ci=True):
    """Length-controlled win rates of many systems, with a seeds-then-items bootstrap.

    One judgement per row n: scores[n] in [0, 1] (win score against the
    baseline), delta_len[n] = length - baseline length, config[n] in
    [0, n_configs) (the system), seed_id[n] (its training seed: any labels)
    and item_id[n] (the prompt: labels shared by every seed and config, as in
    a crossed seeds x prompts design; several rows may share a (seed, item)
    cell, e.g. several samples per prompt).

    Per config, the GLM of ``length_controlled_win_rate`` (AlpacaEval
    "length_controlled_minimal": sigmoid(theta + phi tanh(dlen / sd)), sd the
    config's std(delta_len, ddof=1), kept fixed) is fitted by maximum
    likelihood on all its rows, and LC = sigmoid(theta). The CI resamples like
    ``hierarchical_bootstrap(..., shared_items=True)``: the config's seeds with
    replacement (multiplicities m_s), and the items with replacement once per
    replicate for all drawn seeds (multiplicities W_i); row n gets weight
    m[seed_n] W[item_n] and the GLM is refitted. Configs with the same number
    of seeds share the draws (common random numbers).

    method: "refit": every replicate is refitted to convergence by batched
      Newton-Raphson, warm-started at the full-sample fit. "onestep": one
      Newton step from the full-sample fit with each replicate's exact
      gradient and Hessian (the one-step bootstrap): these are sums of
      per-(seed, item) sufficient statistics weighted by m_s W_i, so all
      replicates of all configs come out of one matrix product per chunk; its
      difference from the refit is O(1/n) against a CI width of O(1/sqrt(n)).
      "auto" refits when n_resamples * n_rows <= refit_budget, else one step.
    raw_ci: also bootstrap the plain win rate (raw_low, raw_high; NaN when
      False, which makes "onestep" about 30% cheaper).
    Returns dict of arrays [n_configs]: lc_win_rate, low, high,
    raw_win_rate, raw_low, raw_high (the plain mean under the same
    resamples), phi, n, n_seeds; and method (the one used). NaN rows are
    dropped; a config without rows gets NaN.

    With one seed, one row per item and method="refit", this gives the
    numbers of ``length_controlled_win_rate`` with the same seed up to the
    Newton tolerance (same draws, same chunking).
    """
    _check_alpha(alpha)
    s = np.asarray(scores, dtype=np.float64).ravel()
    d = np.asarray(delta_len, dtype=np.float64).ravel()
    cfg = np.asarray(config).ravel().astype(np.intp)
    sid = np.asarray(seed_id).ravel()
    iid = np.asarray(item_id).ravel()
    if not (s.size == d.size == cfg.size == sid.size == iid.size):
        raise ValueError("scores, delta_len, config, seed_id and item_id need the same length")
    if method not in ("auto", "refit", "onestep"):
        raise ValueError(f"method must be 'auto', 'refit' or 'onestep', got {method!r}")
    if np.any(cfg < 0):
        raise ValueError("config ids must be >= 0")
    C = int(cfg.max()) + 1 if cfg.size else 0
    ok = ~(np.isnan(s) | np.isnan(d))
    s, d, cfg, sid, iid = s[ok], d[ok], cfg[ok], sid[ok], iid[ok]
    if np.any((s < 0) | (s > 1)):
        raise ValueError("scores must lie in [0, 1]")
    if method == "auto":
        method = "refit" if float(n_resamples) * s.size <= refit_budget else "onestep"
    out = {k: np.full(C, np.nan) for k in ("lc_win_rate", "low", "high", "raw_win_rate", "raw_low",
                                             "raw_high", "phi")}
    out["n"] = np.bincount(cfg, minlength=C)
    out["n_seeds"] = np.zeros(C, dtype=np.int64)
    out["method"] = method
    if C == 0 or s.size == 0:
        return out
    _, item = np.unique(iid, return_inverse=True)
    I = int(item.max()) + 1
    # rows of config c: order[bounds[c]:bounds[c + 1]]
    order = np.argsort(cfg, kind="stable")
    bounds = np.r_[0, np.cumsum(out["n"])]
    rows = [order[bounds[c]:bounds[c + 1]] for c in range(C)]
    theta = np.full(C, np.nan)
    phi = np.full(C, np.nan)
    z = np.zeros(s.size)
    slot = np.zeros(s.size, dtype=np.intp)  # seed slot of a row within its config (sorted seed order)
    live = [c for c in range(C) if rows[c].size]
    n_max = max(rows[c].size for c in live)
    Sm, Zm, Wm = np.zeros((len(live), n_max)), np.zeros((len(live), n_max)), np.zeros((len(live), n_max))
    for k, c in enumerate(live):
        r = rows[c]
        _, slot[r] = np.unique(sid[r], return_inverse=True)
        out["n_seeds"][c] = int(slot[r].max()) + 1
        sd = d[r].std(ddof=1) if r.size > 1 else 0.0
        # equal lengths everywhere: the length term is identically 0 (phi -> 0 by the ridge)
        z[r] = np.tanh(d[r] / sd) if sd > 0 else 0.0
        Sm[k, :r.size], Zm[k, :r.size], Wm[k, :r.size] = s[r], z[r], 1.0
    # all full-sample fits at once (zero weights pad the shorter configs)
    th, ph = _fit_lc_glm_rows(Sm, Zm, Wm, l2)
    theta[live], phi[live] = th, ph
    out["lc_win_rate"][live] = special.expit(th)
    out["raw_win_rate"][live] = (Sm * Wm).sum(axis=1) / Wm.sum(axis=1)
    out["phi"][live] = ph
    B = int(n_resamples)
    for S in np.unique(out["n_seeds"][out["n"] > 0]):
        S = int(S)
        cs = np.flatnonzero((out["n_seeds"] == S) & (out["n"] > 0))
        K = cs.size
        boot = np.empty((B, K, 2))
        rng = np.random.default_rng(seed)
        if method == "refit":
            per = 8 * max(rows[c].size for c in cs)
            for start, b in _chunks(B, per):
                mult = _counts(rng.integers(0, S, size=(b, S)), S) if S > 1 else np.ones((b, 1))
                W = _counts(rng.integers(0, I, size=(b, I)), I)  # [b, I] item multiplicities
                for k, c in enumerate(cs):
                    r = rows[c]
                    w = mult[:, slot[r]] * W[:, item[r]]  # [b, n_c] row weights
                    th, _ = _fit_lc_glm(s[r], z[r], w, l2, theta0=theta[c], phi0=phi[c])
                    boot[start:start + b, k, 0] = special.expit(th)
                    boot[start:start + b, k, 1] = (w @ s[r]) / w.sum(axis=1) if raw_ci else np.nan
        else:
            # per (item, config, seed slot) cell sums at the full-sample fit:
            # [r, r z, h, h z, h z^2] with r = p - s, h = p (1 - p); [1, s] too for the raw CI
            rr = np.concatenate([rows[c] for c in cs])
            kk = np.repeat(np.arange(K), [rows[c].size for c in cs])
            zz, ss = z[rr], s[rr]
            p = special.expit(theta[cs][kk] + phi[cs][kk] * zz)
            res, h = p - ss, p * (1.0 - p)
            feats = (res, res * zz, h, h * zz, h * zz * zz) + ((np.ones_like(zz), ss) if raw_ci else ())
            F = len(feats)
            cell = (item[rr] * K + kk) * S + slot[rr]
            V = np.stack([np.bincount(cell, weights=f, minlength=I * K * S) for f in feats], axis=1)
            V = V.reshape(I, K * S * F)
            th0, ph0 = theta[cs][None, :], phi[cs][None, :]
            for start, b in _chunks(B, max(I, K * S * F)):
                mult = _counts(rng.integers(0, S, size=(b, S)), S) if S > 1 else np.ones((b, 1))
                W = _counts(rng.integers(0, I, size=(b, I)), I)
                U = np.einsum("bksf,bs->bkf", (W @ V).reshape(b, K, S, F), mult)
                g0, g1, h00, h01, h11 = (U[..., f] for f in range(5))
                g0 = g0 + l2 * th0
                g1 = g1 + l2 * ph0
                h00 = h00 + l2
                h11 = h11 + l2
                d0 = (h11 * g0 - h01 * g1) / (h00 * h11 - h01 * h01)
                boot[start:start + b, :, 0] = special.expit(th0 - d0)
                boot[start:start + b, :, 1] = U[..., 6] / U[..., 5] if raw_ci else np.nan
        lo, hi = _percentile_interval(boot, alpha)
        out["low"][cs], out["high"][cs] = lo[:, 0], hi[:, 0]
        out["raw_low"][cs], out["raw_high"][cs] = lo[:, 1], hi[:, 1]
    return out


# ---------------------------------------------------------------------------
# 12. Bradley-Terry
# ---------------------------------------------------------------------------

def _fit_bt(W, anchor, l2, max_iter=200, tol=1e-10, max_step=5.0, theta0=None):
    """Batched Bradley-Terry MLE.

    W: [B, P, P] with W[b, i, j] = total score of i against j (wins + 1/2 ties,
    both seatings pooled). Minimises -sum_{i,j} W_ij log sigmoid(t_i - t_j)
    + l2/2 sum_{i != anchor} t_i^2 with t_anchor = 0, by Newton-Raphson on the
    free strengths (batched linear solves). theta0: optional [P] starting
    point (bootstrap refits start at the full-sample fit and converge in a few
    steps). Returns theta [B, P].
    """
    B, P, _ = W.shape
    N = W + np.swapaxes(W, 1, 2)  # battles between i and j
    free = np.array([k for k in range(P) if k != anchor], dtype=np.intp)
    theta = np.zeros((B, P))
    if theta0 is not None:
        theta += np.nan_to_num(np.asarray(theta0, dtype=np.float64))
        theta[:, anchor] = 0.0
    eye = np.eye(P - 1)
    diag = np.arange(P)
    # [B, P, P] work arrays reused across iterations (same operations, in place: same numbers)
    p = np.empty((B, P, P))
    h = np.empty((B, P, P))
    q = np.empty((B, P, P))
    for _ in range(max_iter):
        np.subtract(theta[:, :, None], theta[:, None, :], out=p)
        special.expit(p, out=p)
        np.multiply(N, p, out=h)  # N p
        np.subtract(h, W, out=q)
        g = q.sum(axis=2) + l2 * theta
        np.subtract(1.0, p, out=q)
        h *= q  # N p (1 - p)
        hsum = h.sum(axis=2)
        H = np.negative(h, out=h)
        H[:, diag, diag] = hsum
        Hf = H[:, free[:, None], free[None, :]] + l2 * eye  # the free rows and columns, one gather
        step = np.linalg.solve(Hf, g[:, free][:, :, None])[:, :, 0]
        big = np.max(np.abs(step), axis=1, keepdims=True)
        step *= np.minimum(1.0, max_step / np.maximum(big, 1e-300))
        theta[:, free] -= step
        if np.max(np.abs(step)) < tol:
            break
    # A player without battles (e.g. dropped by a cluster resample) has no
    # estimate, and without the anchor no strength is on the anchored scale.
    played = N.sum(axis=2) > 0
    theta[~played] = np.nan
    theta[~played[:, anchor]] = np.nan
    return theta


def bradley_terry(i, j, s, n_players, anchor=0, n_resamples=1000, seed=0, cluster=None,
                  alpha=0.05, l2=1e-6):
    """Bradley-Terry strengths by maximum likelihood, with cluster bootstrap CIs.

    Battles k = 1..K: player i[k] against player j[k], outcome s[k] = score of
    i[k] (1 win, 0.5 tie, 0 loss; soft values allowed). Model
    P(i beats j) = sigmoid(theta_i - theta_j); ties count as half a win and
    half a loss (FastChat ``fit_bt``). theta is in nats (natural-log odds)
    with theta[anchor] = 0 (anchor e.g. the SFT model); the Elo-style scale is
    elo = 400/ln(10) * theta + 1000, so the anchor sits at 1000 and a 400-point
    gap is 10:1 odds. This is the order-free MLE, not online Elo.

    cluster: [K] cluster id per battle (e.g. prompt id). Battles on one prompt
      are correlated, so the bootstrap resamples whole clusters with
      replacement; None resamples single battles.
    l2: tiny ridge on the non-anchor strengths; keeps the fit finite when a
      player wins (or loses) every battle or the comparison graph is
      disconnected (those strengths are then not identified: check the CIs).
    A player with no battles gets NaN; so does every player in a bootstrap
    replicate that drew none of that player's (or the anchor's) battles, and
    such replicates are left out of that player's percentiles.
    Returns dict(strength, strength_low, strength_high, elo, elo_low, elo_high,
    n_battles, n_clusters), arrays of length n_players.

    The fit only needs the P x P score matrix, so each bootstrap replicate is
    (cluster multiplicities) @ (sparse cluster x pair score table), and all
    replicates are fitted by one batched Newton-Raphson.
    """
    _check_alpha(alpha)
    i = np.asarray(i).ravel().astype(np.intp)
    j = np.asarray(j).ravel().astype(np.intp)
    s = np.asarray(s, dtype=np.float64).ravel()
    P = int(n_players)
    K = s.size
    if not (i.size == j.size == K):
        raise ValueError("i, j and s need the same length")
    if K == 0 or P < 2:
        raise ValueError("need at least one battle and two players")
    if np.any((i < 0) | (i >= P) | (j < 0) | (j >= P)) or np.any(i == j):
        raise ValueError("player ids must be in [0, n_players) and i != j")
    if np.any(np.isnan(s)) or np.any((s < 0) | (s > 1)):
        raise ValueError("outcomes must be in [0, 1] (1 win, 0.5 tie, 0 loss)")
    if not 0 <= anchor < P:
        raise ValueError("anchor out of range")
    if cluster is None:
        unit = np.arange(K)
    else:
        cluster = np.asarray(cluster).ravel()
        if cluster.size != K:
            raise ValueError("cluster needs one id per battle")
        _, unit = np.unique(cluster, return_inverse=True)
    G = int(unit.max()) + 1
    # unit x (ordered pair) table of scores: i scores s against j, j scores 1-s against i
    rows = np.concatenate([unit, unit])
    cols = np.concatenate([i * P + j, j * P + i])
    table = sparse.csr_matrix((np.concatenate([s, 1.0 - s]), (rows, cols)), shape=(G, P * P))
    W = np.asarray(table.sum(axis=0)).reshape(1, P, P)
    theta = _fit_bt(W, anchor, l2)[0]
    rng = np.random.default_rng(seed)
    boot = np.empty((int(n_resamples), P))
    # [G, P*P]: dense (one BLAS product per chunk) unless it would be large and mostly empty
    dense = table.toarray() if G * P * P <= _CHUNK_ELEMS else None
    tableT = table.T.tocsr() if dense is None else None  # [P*P, G]
    for start, b in _chunks(n_resamples, max(G, 4 * P * P)):
        cnt = _counts(rng.integers(0, G, size=(b, G)), G)  # [b, G] cluster multiplicities
        Wb = (cnt @ dense if dense is not None else np.asarray(tableT @ cnt.T).T).reshape(b, P, P)
        boot[start:start + b] = _fit_bt(Wb, anchor, l2, theta0=theta)
    lo, hi = _percentile_interval(boot, alpha)
    if np.isfinite(theta[anchor]):
        lo[anchor] = hi[anchor] = 0.0  # fixed by construction (avoid -0.0 noise)
    return dict(strength=theta, strength_low=lo, strength_high=hi,
                elo=ELO_SCALE * theta + ELO_BASE, elo_low=ELO_SCALE * lo + ELO_BASE,
                elo_high=ELO_SCALE * hi + ELO_BASE, n_battles=int(K), n_clusters=G)


# ---------------------------------------------------------------------------
# 13. hyperparameter sensitivity
# ---------------------------------------------------------------------------

def sensitivity_indices(values, eps=0.01):
    """Robustness of one method to its hyperparameters.

    values: [n_configs] seed-averaged metric per grid point (higher = better;
      NaN configs dropped, so report failed configs separately).
    eps: absolute tolerance for "near-best".
    Returns dict(n, range = max - min, normalised_range = range / |max|,
    best_minus_median = max - median (best-vs-typical gap: small = robust to
    tuning), frac_within_eps = share of configs with value >= max - eps,
    cv = std(ddof=1) / |mean| across the grid).
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[~np.isnan(v)]
    n = int(v.size)
    nan = float("nan")
    if n == 0:
        return dict(n=0, range=nan, normalised_range=nan, best_minus_median=nan,
                    frac_within_eps=nan, cv=nan)
    vmax = float(v.max())
    rng_ = vmax - float(v.min())
    mean = float(v.mean())
    with np.errstate(invalid="ignore", divide="ignore"):
        cv = float(v.std(ddof=1) / abs(mean)) if n > 1 and mean != 0 else nan
        nrange = rng_ / abs(vmax) if vmax != 0 else nan
    return dict(n=n, range=rng_, normalised_range=nrange,
                best_minus_median=vmax - float(np.median(v)),
                frac_within_eps=float(np.mean(v >= vmax - eps)), cv=cv)


def expected_max(values, budgets=None):
    """Expected best score after n random hyperparameter trials (unbiased).

    values: [N] observed metric of the N configs of a sweep (NaN dropped).
    budgets: ints n (default 1..N). For each n <= N returns the expected
    maximum of n configs drawn *without replacement* from the N observed ones,
    E[max] = sum_i v_(i) C(i-1, n-1) / C(N, n) with v sorted ascending: an
    unbiased estimate of the expected max of n fresh trials (Tang et al. 2020,
    correcting Dodge et al. 2019). n = 1 gives the mean, n = N the max;
    NaN for n < 1 or n > N. Returns float array [len(budgets)].
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = np.sort(v[~np.isnan(v)])
    N = v.size
    nb = np.atleast_1d(np.arange(1, N + 1) if budgets is None else np.asarray(budgets)).astype(np.int64)
    i = np.arange(1, N + 1)[None, :]
    n = nb[:, None]
    valid = (n >= 1) & (n <= N)
    ns = np.where(valid, n, 1)
    # log of C(i-1, n-1) / C(N, n) via log-gamma (no overflow for large N)
    with np.errstate(invalid="ignore"):
        logw = (special.gammaln(i) - special.gammaln(ns) - special.gammaln(np.maximum(i - ns + 1, 1))
                - special.gammaln(N + 1) + special.gammaln(ns + 1) + special.gammaln(N - ns + 1))
    w = np.where(i >= ns, np.exp(logw), 0.0)
    return np.where(valid[:, 0], w @ v if N else np.nan, np.nan)


def expected_max_with_replacement(values, budgets=None):
    """Dodge et al. (2019) expected max of n trials, sampling *with* replacement.

    E[max] = sum_i v_(i) [(i/N)^n - ((i-1)/N)^n] over the sorted observed
    values. Biased (it treats the empirical distribution as the truth);
    kept for comparison with papers that report it. NaN for n < 1.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = np.sort(v[~np.isnan(v)])
    N = v.size
    nb = np.atleast_1d(np.arange(1, N + 1) if budgets is None else np.asarray(budgets)).astype(np.float64)
    if N == 0:
        return np.full(nb.shape, np.nan)
    i = np.arange(1, N + 1)[None, :]
    n = nb[:, None]
    w = (i / N) ** n - ((i - 1) / N) ** n
    return np.where(nb >= 1, w @ v, np.nan)


# ---------------------------------------------------------------------------
# 14. reward-KL frontier
# ---------------------------------------------------------------------------

def _frontier_inputs(kl, reward):
    kl = np.asarray(kl, dtype=np.float64).ravel()
    reward = np.asarray(reward, dtype=np.float64).ravel()
    if kl.shape != reward.shape:
        raise ValueError("kl and reward need the same length")
    return kl, reward


def pareto_front(kl, reward):
    """Non-dominated points in (KL, reward) space (lower KL, higher reward better).

    kl, reward: [n_points] (e.g. every checkpoint of every run of a method).
    Point p is dominated if some q has kl_q <= kl_p and reward_q >= reward_p
    with at least one strict; identical points do not dominate each other.
    Returns bool mask [n_points]; points with NaN are never on the front.
    O(n log n): sort by KL, compare with the running best reward of strictly
    lower-KL points.
    """
    kl, reward = _frontier_inputs(kl, reward)
    mask = np.zeros(kl.size, dtype=bool)
    ok = np.flatnonzero(~(np.isnan(kl) | np.isnan(reward)))
    if ok.size == 0:
        return mask
    order = ok[np.lexsort((-reward[ok], kl[ok]))]  # KL ascending, reward descending
    ks, rs = kl[order], reward[order]
    m = ks.size
    first = np.r_[True, ks[1:] != ks[:-1]]
    gstart = np.maximum.accumulate(np.where(first, np.arange(m), 0))  # start of equal-KL group
    prefmax = np.maximum.accumulate(rs)
    best_lower_kl = np.where(gstart > 0, prefmax[np.maximum(gstart - 1, 0)], -np.inf)
    mask[order] = (rs > best_lower_kl) & (rs == rs[gstart])
    return mask


def frontier_envelope(kl, reward):
    """Monotone upper step envelope f(k) = max{reward_i : kl_i <= k}.

    Returns (kl_steps, reward_steps): the distinct Pareto points sorted by KL
    (both strictly increasing). f jumps to reward_steps[m] at kl_steps[m] and
    is undefined (no point) below kl_steps[0].
    """
    kl, reward = _frontier_inputs(kl, reward)
    m = pareto_front(kl, reward)
    pts = np.unique(np.stack([kl[m], reward[m]], axis=1), axis=0)  # sorts by KL
    return pts[:, 0].copy(), pts[:, 1].copy()


def reward_at_kl(kl, reward, budgets):
    """Best reward achievable with KL <= budget, for each budget.

    kl, reward: [n_points]; budgets: scalar or [n_budgets] KL budgets (nats).
    Reads the step envelope (the best *observed* point within budget; no
    interpolation, so it is achievable). NaN where no point has KL <= budget.
    """
    ek, er = frontier_envelope(kl, reward)
    b = np.asarray(budgets, dtype=np.float64)
    if ek.size == 0:
        return _scalar(np.full(b.shape, np.nan))
    pos = np.searchsorted(ek, b, side="right") - 1  # last envelope step with KL <= budget
    return _scalar(np.where((pos >= 0) & ~np.isnan(b), er[np.clip(pos, 0, ek.size - 1)], np.nan))


def frontier_area(kl, reward, kl_max, reward_floor):
    """Normalised area under the monotone upper envelope.

    (1/kl_max) * integral_0^kl_max max(f(k) - reward_floor, 0) dk, with f the
    step envelope (f = reward_floor where no point has KL <= k): the
    hypervolume dominated by the points w.r.t. the reference point
    (kl_max, reward_floor), e.g. reward_floor = SFT reward. Points with KL >
    kl_max do not count; negative KL estimates count from k = 0. Units:
    reward above the floor, averaged over the KL range.
    """
    if not kl_max > 0:
        raise ValueError("kl_max must be > 0")
    ek, er = frontier_envelope(kl, reward)
    if ek.size == 0:
        return 0.0
    left = np.clip(ek, 0.0, kl_max)
    right = np.r_[left[1:], kl_max]
    height = np.clip(er - reward_floor, 0.0, None)
    return float(np.sum(height * (right - left)) / kl_max)


def frontier_bootstrap(kl, reward, group, budgets, kl_max, reward_floor, n_resamples=1000,
                       seed=0, alpha=0.05):
    """Bootstrap CIs for reward_at_kl and frontier_area, resampling groups.

    kl, reward, group: [n_points]; group ids (e.g. seed, or run) are the
      resampling units: points of one group are correlated (same run).
    Each replicate draws n_groups groups with replacement and recomputes the
    frontier from the union of their points.
    Returns dict(budgets, reward_at_kl, reward_at_kl_low, reward_at_kl_high,
    area, area_low, area_high); point values equal ``reward_at_kl`` and
    ``frontier_area`` on all points. A resample with no point under a budget
    gives NaN there and is ignored by its quantiles.

    Vectorised: the union envelope is the max over chosen groups of each
    group's envelope, evaluated on one grid of thresholds (all point KLs in
    [0, kl_max] plus the budgets), so a replicate is a masked max over a
    [groups, thresholds] table.
    """
    _check_alpha(alpha)
    if not kl_max > 0:
        raise ValueError("kl_max must be > 0")
    kl, reward = _frontier_inputs(kl, reward)
    group = np.asarray(group).ravel()
    if group.size != kl.size:
        raise ValueError("group needs one id per point")
    ok = ~(np.isnan(kl) | np.isnan(reward))
    kl, reward, group = kl[ok], reward[ok], group[ok]
    b_arr = np.atleast_1d(np.asarray(budgets, dtype=np.float64))
    nb = b_arr.size
    if kl.size == 0:
        nan = np.full(nb, np.nan)
        return dict(budgets=b_arr, reward_at_kl=nan, reward_at_kl_low=nan, reward_at_kl_high=nan,
                    area=0.0, area_low=0.0, area_high=0.0)
    _, g = np.unique(group, return_inverse=True)
    G = int(g.max()) + 1
    # area grid: envelope constant on [K_m, K_{m+1}) with K_0 = 0, last to kl_max
    K = np.unique(np.r_[0.0, np.clip(kl[kl <= kl_max], 0.0, kl_max)])
    widths = np.diff(np.r_[K, kl_max])
    thr = np.r_[K, b_arr]
    order = np.argsort(thr, kind="stable")
    ts = thr[order]
    # F[g, t] = best reward of group g with kl <= threshold t
    Fs = np.full((G, ts.size + 1), -np.inf)
    # a point counts for every threshold >= its KL: drop it into the first such
    # column, then take a running max (points above every threshold fall into
    # the extra last column, which is discarded; a negative KL lands at or
    # before K_0 = 0, i.e. counts from k = 0 as in frontier_area)
    np.maximum.at(Fs, (g, np.searchsorted(ts, kl, side="left")), reward)
    Fs = np.maximum.accumulate(Fs[:, :-1], axis=1)
    F = np.empty_like(Fs)
    F[:, order] = Fs

    def summarise(Fb):
        r = Fb[..., K.size:]
        r = np.where(np.isfinite(r), r, np.nan)
        area = np.clip(Fb[..., :K.size] - reward_floor, 0.0, None) @ widths / kl_max
        return r, area

    r_point, a_point = summarise(F.max(axis=0))
    rng = np.random.default_rng(seed)
    boot_r = np.empty((int(n_resamples), nb))
    boot_a = np.empty(int(n_resamples))
    # with few groups most resamples choose one of a few subsets: build each
    # distinct subset's envelope once and copy it to the resamples that drew it
    # (the same rows, so the same numbers as building every row)
    few = G <= 20
    bits = (1 << np.arange(G, dtype=np.int64)) if few else None
    for start, b in _chunks(n_resamples, G * thr.size + G):
        chosen = _counts(rng.integers(0, G, size=(b, G)), G) > 0
        if few:
            code = chosen.astype(np.int64) @ bits
            _, first, inv = np.unique(code, return_index=True, return_inverse=True)
            Fb = np.where(chosen[first][:, :, None], F[None], -np.inf).max(axis=1)[inv.ravel()]
        else:
            Fb = np.where(chosen[:, :, None], F[None], -np.inf).max(axis=1)
        boot_r[start:start + b], boot_a[start:start + b] = summarise(Fb)
    rlo, rhi = _percentile_interval(boot_r, alpha)
    alo, ahi = _percentile_interval(boot_a, alpha)
    return dict(budgets=b_arr, reward_at_kl=r_point, reward_at_kl_low=rlo, reward_at_kl_high=rhi,
                area=float(a_point), area_low=float(alo), area_high=float(ahi))


# ---------------------------------------------------------------------------
# benchmark (python -m harness.core.stats)
# ---------------------------------------------------------------------------

def _benchmark():
    """Time the per-config hierarchical CIs of a 1,000-run sweep.

    333 configs x 3 seeds (999 runs) x 500 prompts of win scores in {0, .5, 1},
    10,000 resamples per config; also the crossed (shared_items) variant and
    the per-config loop over hierarchical_bootstrap for comparison.
    """
    rng = np.random.default_rng(0)
    C, S, I, B = 333, 3, 500, 10000
    base = rng.uniform(0.3, 0.7, size=(C, 1, 1))
    u = rng.uniform(size=(C, S, I))
    scores = np.where(u < base * 0.9, 1.0, np.where(u < base * 0.9 + 0.1, 0.5, 0.0))
    print(f"hierarchical bootstrap: {C} configs x {S} seeds x {I} prompts, {B} resamples per config")
    t0 = time.perf_counter()
    res = hierarchical_bootstrap_many(scores, n_resamples=B, seed=0)
    t_nested = time.perf_counter() - t0
    print(f"  hierarchical_bootstrap_many (nested items): {t_nested:.2f} s")
    t0 = time.perf_counter()
    hierarchical_bootstrap_many(scores, n_resamples=B, seed=0, shared_items=True)
    print(f"  hierarchical_bootstrap_many (shared items): {time.perf_counter() - t0:.2f} s")
    scores_nan = scores.copy()
    scores_nan[rng.uniform(size=scores.shape) < 0.02] = np.nan
    t0 = time.perf_counter()
    hierarchical_bootstrap_many(scores_nan, n_resamples=B, seed=0)
    print(f"  hierarchical_bootstrap_many (nested, 2% missing): {time.perf_counter() - t0:.2f} s")
    k = 10
    t0 = time.perf_counter()
    for c in range(k):
        hierarchical_bootstrap(scores[c], n_resamples=B, seed=0)
    t_loop = (time.perf_counter() - t0) / k * C
    print(f"  per-config hierarchical_bootstrap loop (extrapolated from {k}): {t_loop:.2f} s")
    print(f"  example config 0: point {res['point'][0]:.4f} CI [{res['low'][0]:.4f}, {res['high'][0]:.4f}]")
    print(f"TOTAL (nested, all configs): {t_nested:.2f} s")
    return t_nested


if __name__ == "__main__":
    _benchmark()
