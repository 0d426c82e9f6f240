"""Tests for harness.core.stats: each routine against scipy, a hand-computed case,
or a property that must hold (coverage, invariances, limits)."""
import itertools
import math

import numpy as np
import pytest
from scipy import optimize, special, stats

from harness.core import stats as hs


# ---------------------------------------------------------------- win scores, IQM

def test_win_scores_values_shape_and_nan():
    a = np.array([[1.0, 2.0, 3.0], [np.nan, 0.0, -np.inf]])
    b = np.array([[0.0, 2.0, 4.0], [1.0, np.nan, -np.inf]])
    s = hs.win_scores(a, b)
    assert s.shape == a.shape
    np.testing.assert_array_equal(s[0], [1.0, 0.5, 0.0])
    assert np.isnan(s[1, 0]) and np.isnan(s[1, 1])
    assert s[1, 2] == 0.5  # -inf == -inf is a tie, not NaN
    # antisymmetry: s(a, b) + s(b, a) = 1
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 3, 100).astype(float), rng.integers(0, 3, 100).astype(float)
    np.testing.assert_array_equal(hs.win_scores(x, y) + hs.win_scores(y, x), 1.0)
    with pytest.raises(ValueError):
        hs.win_scores(np.zeros(3), np.zeros(4))


def test_iqm_hand_and_scipy():
    # 10 values: floor(2.5) = 2 cut from each end -> mean(2..7) = 4.5; the outlier is ignored
    assert hs.iqm([0, 1, 2, 3, 4, 5, 6, 7, 8, 1000]) == pytest.approx(4.5)
    assert hs.iqm([1, 2, 3, 4, 5, 6, 7, 8]) == pytest.approx(4.5)  # middle 3,4,5,6
    rng = np.random.default_rng(0)
    for shape in [(1,), (3,), (7,), (10, 5), (4, 3, 9)]:
        x = rng.standard_exponential(shape)
        assert hs.iqm(x) == pytest.approx(stats.trim_mean(x, 0.25, axis=None), rel=1e-13)
    x = rng.normal(size=13)
    assert hs.iqm(np.r_[x, np.nan]) == pytest.approx(stats.trim_mean(x, 0.25))
    assert math.isnan(hs.iqm([np.nan]))


# ---------------------------------------------------------------- item bootstrap

def test_bootstrap_ci_mean_coverage():
    # 400 datasets of 60 Bernoulli(0.3) items in one vectorised call (columns)
    rng = np.random.default_rng(123)
    x = (rng.uniform(size=(60, 400)) < 0.3).astype(float)
    lo, hi = hs.bootstrap_ci(x, n_resamples=2000, seed=7)
    assert lo.shape == hi.shape == (400,)
    cover = np.mean((lo <= 0.3) & (0.3 <= hi))
    assert 0.90 <= cover <= 0.99


def test_bootstrap_ci_iqm_coverage_and_matches_trim_mean_columns():
    rng = np.random.default_rng(5)
    x = rng.normal(2.0, 1.0, size=(40, 400))  # symmetric: population IQM = mean = 2
    lo, hi = hs.bootstrap_ci(x, n_resamples=1000, seed=3, statistic="iqm")
    cover = np.mean((lo <= 2.0) & (2.0 <= hi))
    assert 0.90 <= cover <= 0.99
    # the vectorised IQM (cumsum over sorted rows) equals trim_mean per resample
    boot_rows = rng.normal(size=(50, 33))
    boot_rows[3, :5] = np.nan  # ragged valid counts
    valid = (~np.isnan(boot_rows)).sum(1)
    got = hs._iqm_sorted_rows(np.sort(boot_rows, axis=1), valid)
    want = [stats.trim_mean(r[~np.isnan(r)], 0.25) for r in boot_rows]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_bootstrap_ci_reproducible_nan_dropping_and_degenerate():
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    assert hs.bootstrap_ci(x, 500, seed=4) == hs.bootstrap_ci(x, 500, seed=4)
    assert hs.bootstrap_ci(x, 500, seed=4) != hs.bootstrap_ci(x, 500, seed=5)
    # 1-D NaN items are dropped before resampling
    assert hs.bootstrap_ci(np.r_[x, np.nan, np.nan], 500, seed=4) == hs.bootstrap_ci(x, 500, seed=4)
    lo, hi = hs.bootstrap_ci(np.full(10, 0.5), 200)
    assert lo == hi == 0.5
    lo, hi = hs.bootstrap_ci(x, 1000, alpha=0.05)
    lo90, hi90 = hs.bootstrap_ci(x, 1000, alpha=0.10)
    assert lo <= lo90 <= x.mean() <= hi90 <= hi


# ---------------------------------------------------------------- hierarchical bootstrap

def test_hierarchical_one_seed_equals_item_bootstrap():
    rng = np.random.default_rng(2)
    x = (rng.uniform(size=500) < 0.6).astype(float)
    lo, hi = hs.bootstrap_ci(x, n_resamples=3000, seed=11)
    for inp in (x, x[None, :]):
        r = hs.hierarchical_bootstrap(inp, n_resamples=3000, seed=11)
        assert r["point"] == pytest.approx(x.mean())
        assert r["low"] == pytest.approx(lo, abs=1e-12) and r["high"] == pytest.approx(hi, abs=1e-12)
        assert r["n_seeds"] == 1 and r["n_items"] == 500


def test_hierarchical_coverage_nested_model():
    # y_si = mu + a_s + e_si, seeds x items; 400 datasets through the batched version
    rng = np.random.default_rng(99)
    D, S, I, mu = 400, 10, 50, 0.4
    y = mu + rng.normal(0, 0.3, size=(D, S, 1)) + rng.normal(0, 1.0, size=(D, S, I))
    r = hs.hierarchical_bootstrap_many(y, n_resamples=1000, seed=1)
    cover = np.mean((r["low"] <= mu) & (mu <= r["high"]))
    assert 0.90 <= cover <= 0.99
    np.testing.assert_allclose(r["point"], y.mean(axis=(1, 2)))


def test_hierarchical_many_equals_per_config_calls():
    rng = np.random.default_rng(8)
    X = rng.uniform(size=(7, 3, 40))
    X[X < 0.05] = np.nan  # missing cells
    for shared in (False, True):
        many = hs.hierarchical_bootstrap_many(X, n_resamples=800, seed=3, shared_items=shared)
        for c in range(X.shape[0]):
            one = hs.hierarchical_bootstrap(X[c], n_resamples=800, seed=3, shared_items=shared)
            assert one["point"] == pytest.approx(many["point"][c], abs=1e-12)
            assert one["low"] == pytest.approx(many["low"][c], abs=1e-12)
            assert one["high"] == pytest.approx(many["high"][c], abs=1e-12)


def test_hierarchical_crossed_design_needs_shared_items():
    # Same prompts in every seed with strong prompt-difficulty effects (crossed
    # design): nested item resampling counts prompt variance 1/S times and
    # undercovers; sharing the item resample across seeds restores coverage.
    rng = np.random.default_rng(4)
    D, S, I, mu = 300, 5, 40, 0.0
    y = (rng.normal(0, 0.2, size=(D, S, 1)) + rng.normal(0, 1.0, size=(D, 1, I))
         + rng.normal(0, 0.5, size=(D, S, I)))
    nested = hs.hierarchical_bootstrap_many(y, n_resamples=1000, seed=0)
    shared = hs.hierarchical_bootstrap_many(y, n_resamples=1000, seed=0, shared_items=True)
    cov_n = np.mean((nested["low"] <= mu) & (mu <= nested["high"]))
    cov_s = np.mean((shared["low"] <= mu) & (mu <= shared["high"]))
    assert cov_n < 0.90
    assert 0.90 <= cov_s <= 0.99


def test_hierarchical_missing_values():
    X = np.array([[1.0, 0.0, np.nan, 1.0], [0.5, np.nan, 1.0, 1.0], [np.nan] * 4])
    r = hs.hierarchical_bootstrap(X, n_resamples=500)
    assert r["point"] == pytest.approx(np.nanmean(X))
    assert r["n_seeds"] == 2  # the all-missing seed is dropped
    assert 0.0 <= r["low"] <= r["point"] <= r["high"] <= 1.0


# ---------------------------------------------------------------- seed summaries

def test_seed_summary():
    v = np.array([0.61, 0.55, 0.70, np.nan, 0.58, 0.64])
    s = hs.seed_summary(v, n_resamples=2000)
    w = v[~np.isnan(v)]
    assert s["n"] == 5
    assert s["mean"] == pytest.approx(w.mean())
    assert s["std"] == pytest.approx(np.std(w, ddof=1))
    assert s["iqm"] == pytest.approx(stats.trim_mean(w, 0.25))
    assert w.min() <= s["ci_low"] <= s["mean"] <= s["ci_high"] <= w.max()
    tl, th = stats.t.interval(0.95, 4, loc=w.mean(), scale=stats.sem(w))
    assert (s["t_low"], s["t_high"]) == pytest.approx((tl, th))
    one = hs.seed_summary([0.3])
    assert one["n"] == 1 and one["mean"] == 0.3
    assert math.isnan(one["std"]) and math.isnan(one["ci_low"]) and math.isnan(one["ci_high"])
    assert hs.seed_summary([])["n"] == 0


@pytest.mark.parametrize("method", ["exact", "wilson"])
@pytest.mark.parametrize("alpha", [0.05, 0.1])
def test_binomial_ci_matches_scipy(method, alpha):
    ks, ns, lo_ref, hi_ref = [], [], [], []
    for n in [1, 2, 3, 5, 10, 37, 100]:
        for k in sorted({0, 1, n // 3, n // 2, n - 1, n}):
            ci = stats.binomtest(k, n).proportion_ci(confidence_level=1 - alpha, method=method)
            ks.append(k); ns.append(n); lo_ref.append(ci.low); hi_ref.append(ci.high)
            lo, hi = hs.binomial_ci(k, n, alpha=alpha, method=method)  # scalar path
            assert lo == pytest.approx(ci.low, abs=1e-9) and hi == pytest.approx(ci.high, abs=1e-9)
    lo, hi = hs.binomial_ci(np.array(ks), np.array(ns), alpha=alpha, method=method)  # vector path
    np.testing.assert_allclose(lo, lo_ref, atol=1e-9)
    np.testing.assert_allclose(hi, hi_ref, atol=1e-9)


def test_binomial_ci_edges():
    assert all(math.isnan(v) for v in hs.binomial_ci(0, 0))
    lo, hi = hs.binomial_ci(0, 5)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 5))  # closed form for k = 0
    with pytest.raises(ValueError):
        hs.binomial_ci(6, 5)


# ---------------------------------------------------------------- paired differences

def test_paired_bootstrap_diff_1d_pairing_helps():
    rng = np.random.default_rng(6)
    difficulty = rng.normal(0, 1, 400)  # shared per-prompt effect
    a = difficulty + 0.1 + rng.normal(0, 0.3, 400)
    b = difficulty + rng.normal(0, 0.3, 400)
    r = hs.paired_bootstrap_diff(a, b, n_resamples=2000)
    assert r["diff"] == pytest.approx(a.mean() - b.mean())
    assert r["low"] <= r["diff"] <= r["high"]
    # unpaired CI of the same difference is much wider than the paired one
    la, ha = hs.bootstrap_ci(a, 2000, seed=1)
    lb, hb = hs.bootstrap_ci(b, 2000, seed=2)
    assert (r["high"] - r["low"]) < 0.5 * ((ha - la) + (hb - lb)) / 2
    # a missing side drops the pair
    a2, b2 = np.r_[a, np.nan], np.r_[b, 5.0]
    assert hs.paired_bootstrap_diff(a2, b2, 500) == hs.paired_bootstrap_diff(a, b, 500)


def test_paired_bootstrap_diff_2d_is_hierarchical_on_differences():
    rng = np.random.default_rng(7)
    a = rng.uniform(size=(4, 100))
    b = rng.uniform(size=(4, 100))
    r = hs.paired_bootstrap_diff(a, b, n_resamples=1000, seed=2)
    h = hs.hierarchical_bootstrap(a - b, n_resamples=1000, seed=2)
    assert (r["diff"], r["low"], r["high"]) == (h["point"], h["low"], h["high"])
    with pytest.raises(ValueError):
        hs.paired_bootstrap_diff(a, b[:3])


# ---------------------------------------------------------------- seeds: PoI, tests, Holm

def test_probability_of_improvement():
    x = np.array([0.2, 0.5, 0.5, 0.9])
    r = hs.probability_of_improvement(x, x)
    assert r["p"] == 0.5 and r["low"] <= 0.5 <= r["high"]
    r = hs.probability_of_improvement([3.0, 4.0, 5.0], [0.0, 1.0, 2.0])
    assert r["p"] == 1.0 and r["low"] == 1.0 and r["high"] == 1.0
    rng = np.random.default_rng(3)
    for _ in range(5):
        x = rng.integers(0, 5, size=7).astype(float)  # ties on purpose
        y = rng.integers(0, 5, size=5).astype(float)
        u = stats.mannwhitneyu(x, y, alternative="greater").statistic
        r = hs.probability_of_improvement(x, y, n_resamples=500)
        assert r["p"] == pytest.approx(u / (7 * 5))
        assert 0.0 <= r["low"] <= r["high"] <= 1.0
    # symmetry P(X>Y) + P(Y>X) = 1
    assert hs.probability_of_improvement(x, y)["p"] + hs.probability_of_improvement(y, x)["p"] == pytest.approx(1)


def test_compare_seeds_matches_scipy_and_min_p():
    rng = np.random.default_rng(10)
    x, y = rng.normal(0.5, 0.1, 6), rng.normal(0.6, 0.2, 5)
    r = hs.compare_seeds(x, y)
    t = stats.ttest_ind(x, y, equal_var=False)
    m = stats.mannwhitneyu(x, y, alternative="two-sided", method="exact")
    assert r["welch_t"] == pytest.approx(t.statistic) and r["welch_p"] == pytest.approx(t.pvalue)
    assert r["mwu_u"] == pytest.approx(m.statistic) and r["mwu_p"] == pytest.approx(m.pvalue)
    assert r["mwu_min_p"] == pytest.approx(2 / math.comb(11, 6))
    assert hs.compare_seeds([1, 2, 3], [4, 5, 6])["mwu_min_p"] == pytest.approx(0.1)
    assert hs.compare_seeds(range(5), range(5, 10))["mwu_min_p"] == pytest.approx(2 / 252)
    # the bound is attained by complete separation
    sep = hs.compare_seeds([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    assert sep["mwu_p"] == pytest.approx(sep["mwu_min_p"])
    small = hs.compare_seeds([1.0], [2.0, 3.0])
    assert math.isnan(small["welch_t"]) and math.isnan(small["welch_p"])
    assert small["mwu_min_p"] == pytest.approx(2 / 3) and not math.isnan(small["mwu_p"])
    empty = hs.compare_seeds([], [1.0, 2.0])
    assert all(math.isnan(empty[k]) for k in ("welch_p", "mwu_p", "mwu_min_p"))


def test_holm_hand_example():
    # sorted p: .005 .01 .03 .04, times m-j+1 = 4 3 2 1 -> .02 .03 .06 .04, running max -> .02 .03 .06 .06
    p = np.array([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(hs.holm(p), [0.03, 0.06, 0.06, 0.02])
    out = hs.holm([0.5, np.nan, 0.6])  # m = 2: 1.0, then max(1.0, 0.6) -> capped at 1
    assert np.isnan(out[1])
    np.testing.assert_allclose(out[[0, 2]], [1.0, 1.0])
    rng = np.random.default_rng(0)
    q = rng.uniform(size=20)
    adj = hs.holm(q)
    assert np.all(adj >= q) and np.all(adj <= 1)
    assert np.all(np.diff(adj[np.argsort(q)]) >= 0)  # monotone in p


# ---------------------------------------------------------------- length control

def _simulate_length_bias(n, theta, phi, mean_len, rng):
    d = rng.normal(mean_len, 100.0, n)
    p = special.expit(theta + phi * np.tanh(d / 100.0))
    return (rng.uniform(size=n) < p).astype(float), d


def test_lc_win_rate_removes_planted_length_bias():
    rng = np.random.default_rng(12)
    s, d = _simulate_length_bias(4000, 0.0, 2.5, 150.0, rng)  # base rate 0.5, wins when longer
    r = hs.length_controlled_win_rate(s, d, n_resamples=200)
    assert r["raw_win_rate"] > 0.75  # the length bias inflates the raw rate
    assert abs(r["lc_win_rate"] - 0.5) < 0.05
    assert r["low"] <= 0.5 <= r["high"]
    assert r["phi"] > 1.5


def test_lc_win_rate_without_length_effect_equals_raw():
    rng = np.random.default_rng(13)
    s, d = _simulate_length_bias(3000, special.logit(0.7), 0.0, 80.0, rng)
    r = hs.length_controlled_win_rate(s, d, n_resamples=200)
    assert abs(r["lc_win_rate"] - r["raw_win_rate"]) < 0.03
    assert r["raw_low"] <= r["raw_win_rate"] <= r["raw_high"]


def test_lc_glm_fit_matches_scipy_optimizer_and_soft_labels():
    rng = np.random.default_rng(14)
    n = 300
    d = rng.normal(30, 50, n)
    s = rng.choice([0.0, 0.5, 1.0], size=n, p=[0.3, 0.2, 0.5])  # ties as soft labels
    z = np.tanh(d / d.std(ddof=1))
    l2 = 1e-3

    def obj(b):
        eta = b[0] + b[1] * z
        return np.sum(np.logaddexp(0, eta) - s * eta) + 0.5 * l2 * (b @ b)

    ref = optimize.minimize(obj, np.zeros(2), method="BFGS", options={"gtol": 1e-10}).x
    r = hs.length_controlled_win_rate(s, d, n_resamples=50, l2=l2)
    assert r["lc_win_rate"] == pytest.approx(special.expit(ref[0]), abs=1e-6)
    assert r["phi"] == pytest.approx(ref[1], abs=1e-5)
    # all ties -> exactly 0.5 whatever the lengths
    assert hs.length_controlled_win_rate(np.full(50, 0.5), d[:50], 20)["lc_win_rate"] == pytest.approx(0.5)
    # separable data (always wins) stay finite thanks to the ridge
    sep = hs.length_controlled_win_rate(np.ones(100), d[:100], 20)
    assert 0.99 < sep["lc_win_rate"] < 1.0 and np.isfinite(sep["phi"])


# ---------------------------------------------------------------- Bradley-Terry

def test_bradley_terry_recovers_strengths_with_ties():
    rng = np.random.default_rng(15)
    true = np.array([0.0, 0.5, -0.3, 1.0])
    n, tie = 20000, 0.2
    i = rng.integers(0, 4, n)
    j = (i + rng.integers(1, 4, n)) % 4
    p = special.expit(true[i] - true[j])
    # ties with prob 0.2 and E[score of i] = sigmoid(theta_i - theta_j), the BT mean
    q = (p - tie / 2) / (1 - tie)
    u = rng.uniform(size=n)
    s = np.where(u < tie, 0.5, (rng.uniform(size=n) < q).astype(float))
    r = hs.bradley_terry(i, j, s, 4, anchor=0, n_resamples=100, cluster=rng.integers(0, 500, n))
    assert r["strength"][0] == 0.0 and r["strength_low"][0] == 0.0 and r["strength_high"][0] == 0.0
    np.testing.assert_allclose(r["strength"], true, atol=0.1)
    assert np.all(r["strength_low"] <= r["strength"]) and np.all(r["strength"] <= r["strength_high"])
    np.testing.assert_allclose(r["elo"], 400 / np.log(10) * r["strength"] + 1000)
    assert r["elo"][0] == 1000.0 and r["n_clusters"] == 500
    # moving the anchor only shifts the scale
    r2 = hs.bradley_terry(i, j, s, 4, anchor=2, n_resamples=10)
    np.testing.assert_allclose(r2["strength"], r["strength"] - r["strength"][2], atol=1e-8)
    # swapping seats (j vs i with 1 - s) is the same data
    r3 = hs.bradley_terry(j, i, 1 - s, 4, n_resamples=10)
    np.testing.assert_allclose(r3["strength"], r["strength"], atol=1e-8)


def test_bradley_terry_two_players_closed_form():
    # player 1 vs player 0: 6 wins, 2 ties, 2 losses -> score rate 0.7 -> theta_1 = logit(0.7)
    i = np.ones(10, dtype=int)
    j = np.zeros(10, dtype=int)
    s = np.array([1, 1, 1, 1, 1, 1, 0.5, 0.5, 0, 0])
    r = hs.bradley_terry(i, j, s, 2, n_resamples=200)
    assert r["strength"][1] == pytest.approx(np.log(0.7 / 0.3), abs=1e-5)
    assert r["strength_low"][1] < r["strength"][1] < r["strength_high"][1]
    # a player that wins everything gets a large but finite strength (ridge)
    r = hs.bradley_terry(i, j, np.ones(10), 2, n_resamples=20)
    assert 5 < r["strength"][1] < 50
    # a player without battles has no estimate
    r = hs.bradley_terry(i, j, s, 3, n_resamples=20)
    assert np.isnan(r["strength"][2]) and np.isnan(r["elo_low"][2])
    assert r["strength"][1] == pytest.approx(np.log(0.7 / 0.3), abs=1e-5)


# ---------------------------------------------------------------- sensitivity

def test_sensitivity_indices_hand_example():
    v = np.array([0.1, 0.5, 0.3, 0.495, 0.2, np.nan])
    r = hs.sensitivity_indices(v, eps=0.01)
    assert r["n"] == 5
    assert r["range"] == pytest.approx(0.4)
    assert r["best_minus_median"] == pytest.approx(0.2)
    assert r["frac_within_eps"] == pytest.approx(2 / 5)
    w = v[:5]
    assert r["cv"] == pytest.approx(w.std(ddof=1) / w.mean())
    assert r["normalised_range"] == pytest.approx(0.8)


def test_expected_max_unbiased_without_replacement():
    rng = np.random.default_rng(16)
    v = np.round(rng.uniform(size=7), 1)  # rounding creates ties
    N = v.size
    e = hs.expected_max(v)
    assert e.shape == (N,)
    assert e[0] == pytest.approx(v.mean()) and e[-1] == pytest.approx(v.max())
    assert np.all(np.diff(e) >= -1e-12)
    for n in range(1, N + 1):  # brute force over all subsets of size n
        direct = np.mean([max(c) for c in itertools.combinations(v, n)])
        assert e[n - 1] == pytest.approx(direct, abs=1e-12)
    out = hs.expected_max(v, [0, 3, N + 1])
    assert np.isnan(out[0]) and np.isnan(out[2]) and out[1] == pytest.approx(e[2])
    big = hs.expected_max(rng.uniform(size=2000), [1, 10, 2000])  # no overflow for large N
    assert np.all(np.isfinite(big))


def test_expected_max_with_replacement_direct():
    v = np.array([0.3, 0.1, 0.7, 0.7, 0.2])
    N = v.size
    e = hs.expected_max_with_replacement(v, [1, 2, 3])
    for k, n in enumerate([1, 2, 3]):
        direct = np.mean([max(t) for t in itertools.product(v, repeat=n)])
        assert e[k] == pytest.approx(direct)
    assert e[0] == pytest.approx(v.mean())
    # the with-replacement estimate is below the without-replacement one for n > 1
    assert np.all(hs.expected_max_with_replacement(v, range(2, N + 1)) <= hs.expected_max(v, range(2, N + 1)) + 1e-12)


# ---------------------------------------------------------------- frontier

# A(0,.1) B(1,.5) C(2,.4)x D(3,.8) E(3,.7)x F(5,.8)x G(6,.9) H(.5,.05)x I=B copy, nan point
KL = np.array([0.0, 1.0, 2.0, 3.0, 3.0, 5.0, 6.0, 0.5, 1.0, np.nan])
RW = np.array([0.1, 0.5, 0.4, 0.8, 0.7, 0.8, 0.9, 0.05, 0.5, 1.0])


def test_pareto_front_hand_set():
    m = hs.pareto_front(KL, RW)
    np.testing.assert_array_equal(m, [1, 1, 0, 1, 0, 0, 1, 0, 1, 0])
    # brute-force definition on random points with ties
    rng = np.random.default_rng(17)
    k = rng.integers(0, 6, 60).astype(float)
    r = rng.integers(0, 6, 60).astype(float)
    dom = ((k[None] <= k[:, None]) & (r[None] >= r[:, None])
           & ((k[None] < k[:, None]) | (r[None] > r[:, None]))).any(axis=1)
    np.testing.assert_array_equal(hs.pareto_front(k, r), ~dom)


def test_frontier_envelope_reward_at_kl_and_area_hand():
    ek, er = hs.frontier_envelope(KL, RW)
    np.testing.assert_array_equal(ek, [0, 1, 3, 6])
    np.testing.assert_array_equal(er, [0.1, 0.5, 0.8, 0.9])
    got = hs.reward_at_kl(KL, RW, [-1, 0, 0.99, 1, 2.5, 3, 10])
    np.testing.assert_array_equal(got, [np.nan, 0.1, 0.1, 0.5, 0.5, 0.8, 0.9])
    assert hs.reward_at_kl(KL, RW, 4.0) == 0.8
    assert np.isnan(hs.reward_at_kl(KL, RW, np.nan)) and np.isnan(hs.reward_at_kl([], [], 1.0))
    # steps .1 on [0,1), .5 on [1,3), .8 on [3,6), .9 on [6,8]
    assert hs.frontier_area(KL, RW, 8.0, 0.0) == pytest.approx((0.1 + 1.0 + 2.4 + 1.8) / 8)
    assert hs.frontier_area(KL, RW, 8.0, 0.2) == pytest.approx((0.6 + 1.8 + 1.4) / 8)
    assert hs.frontier_area(KL, RW, 4.0, 0.0) == pytest.approx((0.1 + 1.0 + 0.8) / 4)
    # a negative KL estimate counts from 0; points beyond kl_max do not count
    assert hs.frontier_area([-0.5, 9.0], [0.4, 1.0], 2.0, 0.0) == pytest.approx(0.4)


def test_frontier_bootstrap_point_and_resamples():
    rng = np.random.default_rng(18)
    G, per = 5, 30
    group = np.repeat(np.arange(G), per)
    kl = rng.uniform(0, 12, G * per)
    reward = 0.9 * (1 - np.exp(-kl / 3)) + rng.normal(0, 0.05, G * per)
    budgets = np.array([0.5, 2.0, 5.0, 10.0])
    r = hs.frontier_bootstrap(kl, reward, group, budgets, 10.0, 0.0, n_resamples=300, seed=4)
    np.testing.assert_allclose(r["reward_at_kl"], hs.reward_at_kl(kl, reward, budgets))
    assert r["area"] == pytest.approx(hs.frontier_area(kl, reward, 10.0, 0.0))
    assert r["area_low"] <= r["area"] <= r["area_high"]
    assert np.all(r["reward_at_kl_low"] <= r["reward_at_kl"]) and np.all(r["reward_at_kl"] <= r["reward_at_kl_high"])
    # replay the same group draws with the scalar functions (one chunk of 300)
    draws = np.random.default_rng(4).integers(0, G, size=(300, G))
    areas = [hs.frontier_area(kl[np.isin(group, d)], reward[np.isin(group, d)], 10.0, 0.0) for d in draws]
    rats = np.array([hs.reward_at_kl(kl[np.isin(group, d)], reward[np.isin(group, d)], budgets) for d in draws])
    assert (r["area_low"], r["area_high"]) == pytest.approx(tuple(np.quantile(areas, [0.025, 0.975])))
    np.testing.assert_allclose(r["reward_at_kl_low"], np.nanquantile(rats, 0.025, axis=0))
    np.testing.assert_allclose(r["reward_at_kl_high"], np.nanquantile(rats, 0.975, axis=0))
    # identical groups -> no resampling variability
    same = hs.frontier_bootstrap(np.tile(kl[:per], G), np.tile(reward[:per], G), group, budgets, 10.0, 0.0,
                                 n_resamples=100)
    assert same["area_low"] == pytest.approx(same["area_high"])
