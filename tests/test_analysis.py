"""Tests for the report folder (harness.analysis) and the statistics it added to harness.core.stats.

Runs are fabricated (harness.analysis.fake writes config.json, metrics.json, train_log.jsonl and
samples.parquet directly), so nothing trains; every number is checked against a direct computation,
scipy, or the stats routine it must reproduce."""
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from harness.core import stats as hs
from harness.analysis import Options, analyse, build_report, collect_blocks
from harness.analysis.fake import FakeGroup, default_groups, write_fake_sweep

N_RES = 400  # bootstrap resamples in these tests (the report's default is 10,000)


# ---------------------------------------------------------------- stats additions

def test_bootstrap_p_value_hand_cases_and_ci_inversion():
    B = 999
    assert hs.bootstrap_p_value(np.linspace(0.1, 1.0, B)) == pytest.approx(2 / (B + 1))  # all > 0
    assert hs.bootstrap_p_value(np.linspace(-1.0, -0.1, B)) == pytest.approx(2 / (B + 1))
    assert hs.bootstrap_p_value(np.linspace(-1.0, 1.0, B)) == pytest.approx(1.0)  # symmetric about 0
    # 25 of 999 replicates <= 0: p = 2 * 26 / 1000
    boot = np.r_[-np.ones(25), np.ones(B - 25)]
    assert hs.bootstrap_p_value(boot) == pytest.approx(0.052)
    # p < alpha exactly when the percentile interval excludes 0 (away from interpolation ties)
    rng = np.random.default_rng(3)
    reps = rng.normal(rng.uniform(-0.3, 0.3, 300), 0.1, size=(4000, 300))
    lo, hi = hs.percentile_ci(reps, 0.05)
    p = hs.bootstrap_p_value(reps)
    excl = (lo > 0) | (hi < 0)
    clear = np.abs(p - 0.05) > 0.005
    assert np.array_equal((p < 0.05)[clear], excl[clear])
    assert np.isnan(hs.bootstrap_p_value(np.full(10, np.nan)))


def test_replicate_differences_are_the_paired_hierarchical_bootstrap():
    rng = np.random.default_rng(0)
    prompt = rng.normal(0, 1, 80)
    a = prompt + rng.normal(0.2, 1, (3, 80))
    b = prompt + rng.normal(0.0, 1, (3, 80))
    c = prompt + rng.normal(0.1, 1, (3, 80))
    rep = hs.hierarchical_bootstrap_replicates(np.stack([a, b, c]), 3000, seed=5, shared_items=True)
    lo, hi = hs.percentile_ci(rep[:, 0] - rep[:, 1])
    direct = hs.paired_bootstrap_diff(a, b, n_resamples=3000, seed=5, shared_items=True)
    assert lo == pytest.approx(direct["low"], abs=1e-12) and hi == pytest.approx(direct["high"], abs=1e-12)
    # and each column is the config's own hierarchical bootstrap
    one = hs.hierarchical_bootstrap(c, n_resamples=3000, seed=5, shared_items=True)
    assert hs.percentile_ci(rep[:, 2]) == pytest.approx((one["low"], one["high"]), abs=1e-12)


def test_seed_stats_against_numpy_and_scipy():
    rng = np.random.default_rng(1)
    v = rng.normal(size=(6, 7))
    v[1, 4:] = np.nan  # a config with 4 seeds
    v[2, 1:] = np.nan  # one seed: no std
    v[3] = np.nan  # none
    st = hs.seed_stats(v)
    for i in (0, 1, 4, 5):
        x = v[i][~np.isnan(v[i])]
        assert st["n"][i] == x.size
        assert st["mean"][i] == pytest.approx(x.mean())
        assert st["std"][i] == pytest.approx(x.std(ddof=1))
        assert st["iqm"][i] == pytest.approx(sps.trim_mean(x, 0.25))
    assert st["mean"][2] == v[2, 0] and math.isnan(st["std"][2])
    assert math.isnan(st["mean"][3]) and math.isnan(st["iqm"][3]) and st["n"][3] == 0


def _lc_data(rng, C, S, I, spp=1):
    cfg = np.repeat(np.arange(C), S * I * spp)
    sid = np.tile(np.repeat(np.arange(S) + 10, I * spp), C)
    iid = np.tile(np.repeat(np.arange(I) * 3, spp), C * S)
    d = rng.normal(0, 8, cfg.size).round()
    logit = 0.4 * (cfg - 1) + 1.2 * np.tanh(d / 8) + rng.normal(0, 0.5, I)[iid // 3]
    s = (rng.uniform(size=cfg.size) < 1 / (1 + np.exp(-logit))).astype(float)
    s[rng.uniform(size=cfg.size) < 0.05] = 0.5  # some ties
    return s, d, cfg, sid, iid


def test_lc_many_one_seed_equals_length_controlled_win_rate():
    rng = np.random.default_rng(2)
    s, d, cfg, sid, iid = _lc_data(rng, 1, 1, 150)
    one = hs.length_controlled_win_rate(s, d, n_resamples=800, seed=4)
    many = hs.length_controlled_win_rate_many(s, d, cfg, sid, np.arange(s.size), n_resamples=800, seed=4,
                                              method="refit")
    for k in ("lc_win_rate", "low", "high", "raw_win_rate", "raw_low", "raw_high", "phi"):
        assert many[k][0] == pytest.approx(one[k], abs=1e-8), k


def test_lc_many_points_raw_ci_and_onestep():
    rng = np.random.default_rng(7)
    s, d, cfg, sid, iid = _lc_data(rng, 3, 3, 120)
    res = {m: hs.length_controlled_win_rate_many(s, d, cfg, sid, iid, n_resamples=500, seed=1, method=m)
           for m in ("refit", "onestep")}
    for c in range(3):
        m = cfg == c
        single = hs.length_controlled_win_rate(s[m], d[m], n_resamples=10)  # point fit on the pooled rows
        assert res["refit"]["lc_win_rate"][c] == pytest.approx(single["lc_win_rate"], abs=1e-9)
        assert res["refit"]["n_seeds"][c] == 3
        # the raw-win replicates are the crossed hierarchical bootstrap of the (seed, prompt) scores:
        # with one chunk of draws both routines consume the random stream identically
        X = s[m].reshape(3, 120)
        hb = hs.hierarchical_bootstrap(X, n_resamples=500, seed=1, shared_items=True)
        for meth in ("refit", "onestep"):
            assert res[meth]["raw_low"][c] == pytest.approx(hb["low"], abs=1e-12)
            assert res[meth]["raw_high"][c] == pytest.approx(hb["high"], abs=1e-12)
        # one Newton step from the full fit: O(1/n) from the refit, far inside the CI width
        width = res["refit"]["high"][c] - res["refit"]["low"][c]
        assert abs(res["onestep"]["low"][c] - res["refit"]["low"][c]) < 0.06 * width
        assert abs(res["onestep"]["high"][c] - res["refit"]["high"][c]) < 0.06 * width
    assert res["refit"]["method"] == "refit" and res["onestep"]["method"] == "onestep"
    auto = hs.length_controlled_win_rate_many(s, d, cfg, sid, iid, n_resamples=500, refit_budget=10)
    assert auto["method"] == "onestep"


def test_lc_many_removes_planted_length_bias():
    # the model wins only through length: LC win rate near 0.5 while the raw win rate is high
    rng = np.random.default_rng(11)
    n = 600
    d = rng.normal(6, 8, n)
    s = (rng.uniform(size=n) < 1 / (1 + np.exp(-2.5 * np.tanh(d / d.std(ddof=1))))).astype(float)
    r = hs.length_controlled_win_rate_many(s, d, np.zeros(n, int), np.zeros(n, int), np.arange(n), n_resamples=300)
    assert r["raw_win_rate"][0] > 0.65
    assert r["low"][0] < 0.5 < r["high"][0]


# ---------------------------------------------------------------- the report on a fabricated sweep

def _groups():
    g = default_groups()
    g[3].status = {1: "diverged"}  # dpo β=0.1, seed 1
    g[4].versions = {2: {"torch": "2.14.0"}}  # dpo β=0.5, seed 2: another torch
    return g


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    write_fake_sweep(root, _groups(), n_prompts=48, checkpoints=2)
    return root


@pytest.fixture(scope="module")
def analysed(sweep):
    opts = Options(n_resamples=N_RES, plots=False)
    block = collect_blocks(sweep)[0]
    return block, analyse(block, opts), opts


@pytest.fixture(scope="module")
def report(sweep, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    path = build_report(sweep, None, out, n_resamples=N_RES, formats=("png",))  # PDF: test_pdf_figures
    return path, out


def _per_prompt(path, col):
    s = pd.read_parquet(path / "samples.parquet")
    return s.groupby("prompt_index")[col].mean().to_numpy()


def test_collect_reads_groups_points_and_prompts(sweep, analysed):
    block, _, _ = analysed
    assert (block.suite, block.preset) == ("toy", "smoke")
    assert list(block.groups.label) == ["reference (π_SFT)", "dpo β=0.05", "dpo β=0.1", "dpo β=0.5", "sft"]
    assert block.hp_keys["dpo"] == ["beta"] and block.hp_keys["sft"] == []
    assert len(block.runs) == 15 and len(block.prompts) == 48
    assert (block.runs.status == "diverged").sum() == 1
    # points: 2 checkpoints per trained ok run, 1 for the diverged one (before its failure), + finals
    pts = block.points
    assert pts.final.sum() == 14
    div = block.runs.index[block.runs.status == "diverged"][0]
    assert len(pts[pts.run == div]) == 1 and not pts[pts.run == div].final.any()
    final = pts[pts.final].set_index("run")
    for i in final.index:
        m = json.loads((Path(block.runs.path[i]) / "metrics.json").read_text())
        assert final.step[i] == m["extra"].get("train_steps", 0)
        assert final.kl[i] == pytest.approx(m["metrics"]["kl"])
    # per-prompt arrays are the parquet means
    r = int(block.groups.ok_runs[1][0])
    np.testing.assert_allclose(block.per_prompt["win"][r], _per_prompt(Path(block.runs.path[r]), "win"))


def test_group_means_cis_and_failures(analysed):
    block, res, opts = analysed
    t = res["gs"].table
    for g in t.index:
        runs = block.groups.ok_runs[g]
        W = block.per_prompt["win"][runs]
        assert t.n_seeds[g] == len(runs)
        assert t.win_rate[g] == pytest.approx(W.mean())
        assert t.win_rate_std[g] == pytest.approx(W.mean(axis=1).std(ddof=1))
        assert t.gold_reward_iqm[g] == pytest.approx(sps.trim_mean(block.per_prompt["gold_reward"][runs].mean(axis=1),
                                                                   0.25))
        hb = hs.hierarchical_bootstrap(W, n_resamples=N_RES, seed=opts.seed, shared_items=True)
        assert (t.win_rate_ci_low[g], t.win_rate_ci_high[g]) == pytest.approx((hb["low"], hb["high"]), abs=1e-12)
    b01 = 2  # dpo β=0.1 with a diverged seed
    assert t.n_runs[b01] == 3 and t.n_seeds[b01] == 2 and t.n_diverged[b01] == 1 and t.n_failures[b01] >= 1
    lo, hi = sps.binomtest(int(t.n_failures[b01]), 3).proportion_ci(0.95, method="exact")
    assert (t.failure_ci_low[b01], t.failure_ci_high[b01]) == pytest.approx((lo, hi))
    # every seed is kept, including the diverged one
    seeds = res["gs"].seeds
    assert len(seeds) == 15 and seeds[seeds.group == b01].diverged.sum() == 1
    # below-reference: compared with the π_SFT run of the same seed
    ref = block.runs[block.runs.algorithm == "reference"].set_index("seed").gold_reward
    for r in seeds[seeds.status == "ok"].itertuples():
        if r.algorithm != "reference":
            assert r.below_reference == (r.gold_reward < ref[r.seed])
    assert bool(t.mixed_versions[3]) and not t.mixed_versions.drop(3).any()


def test_failure_criteria_kl_bound(sweep):
    block = collect_blocks(sweep)[0]
    res = analyse(block, Options(n_resamples=50, kl_bound=2.0))
    t = res["gs"].table
    # dpo β=0.05 and β=0.1 have KL ≈ 8 and 4 nats: every finished seed is above a 2-nat bound
    assert t.n_kl_above_bound[1] == 3 and t.n_kl_above_bound[2] == 2 and t.n_kl_above_bound[3] == 0
    assert t.n_failures[2] == 3


def test_pairs_match_direct_computations(analysed):
    block, res, opts = analysed
    pairs = res["pairs"]
    n_live = 5
    assert len(pairs) == 2 * n_live * (n_live - 1) // 2  # all pairs, two metrics
    seeds = res["gs"].seeds
    for r in pairs.itertuples():
        col = {"gold_reward": "gold_reward", "win_rate": "win"}[r.metric]
        sa, sb = block.groups.ok_seeds[r.a], block.groups.ok_seeds[r.b]
        common = sorted(set(sa) & set(sb))
        A = block.per_prompt[col][[block.groups.ok_runs[r.a][sa.index(s)] for s in common]]
        B = block.per_prompt[col][[block.groups.ok_runs[r.b][sb.index(s)] for s in common]]
        direct = hs.paired_bootstrap_diff(A, B, n_resamples=N_RES, seed=opts.seed, shared_items=True)
        assert r.diff == pytest.approx(direct["diff"])
        assert (r.ci_low, r.ci_high) == pytest.approx((direct["low"], direct["high"]), abs=1e-12)
        x = seeds[(seeds.group == r.a) & (seeds.status == "ok")][r.metric]
        y = seeds[(seeds.group == r.b) & (seeds.status == "ok")][r.metric]
        assert r.welch_p == pytest.approx(sps.ttest_ind(x, y, equal_var=False).pvalue)
        assert r.mwu_p == pytest.approx(sps.mannwhitneyu(x, y, method="exact").pvalue)
        assert r.mwu_min_p == pytest.approx(2 / math.comb(len(x) + len(y), len(x)))
        assert r.poi == pytest.approx(np.mean([(u > v) + 0.5 * (u == v) for u in x for v in y]))
    for metric, g in pairs.groupby("metric"):
        np.testing.assert_allclose(g.p_boot_holm, hs.holm(g.p_boot.to_numpy()))
        np.testing.assert_allclose(g.welch_p_holm, hs.holm(g.welch_p.to_numpy()))
    # comparisons touching the configuration with another torch are flagged
    flagged = pairs[(pairs.a == 3) | (pairs.b == 3)]
    assert (flagged.versions_differ == "torch").all()
    assert (pairs[(pairs.a != 3) & (pairs.b != 3)].versions_differ == "").all()


def test_bradley_terry_anchor_and_battles(analysed):
    block, res, opts = analysed
    bt = res["bt"].set_index("group")
    ref = block.reference_group
    assert bt.elo[ref] == pytest.approx(1000.0) and bt.elo_low[ref] == bt.elo_high[ref] == pytest.approx(1000.0)
    # rebuild the battles by hand for two players and compare the 2-player closed form
    # (with two players the MLE is logit of the pooled score share)
    R = block.per_prompt["gold_reward"]
    a, b = block.groups.ok_runs[1], block.groups.ok_runs[ref]
    share = np.mean([[hs.win_scores(R[i], R[j]) for j in b] for i in a], axis=(0, 1))
    two = hs.bradley_terry(np.zeros(48, int), np.ones(48, int), share, 2, anchor=1, n_resamples=10)
    p = share.mean()
    assert two["strength"][0] == pytest.approx(math.log(p / (1 - p)), abs=1e-4)
    assert np.isfinite(bt.elo).all() and (bt.elo_low <= bt.elo + 1e-9).all() and (bt.elo <= bt.elo_high + 1e-9).all()


def test_frontier_pareto_and_budgets(analysed):
    block, res, opts = analysed
    fr = res["frontier"]
    pts = fr.points
    for algo, g in pts.groupby("algorithm"):
        np.testing.assert_array_equal(g.on_front_gold_reward, hs.pareto_front(g.kl, g.gold_reward))
    assert fr.floors["gold_reward"] == pytest.approx(res["gs"].table.gold_reward[block.reference_group])
    dpo = pts[pts.algorithm == "dpo"]
    row = fr.table[(fr.table.algorithm == "dpo") & (fr.table.metric == "gold_reward")].iloc[0]
    for b in fr.budgets:
        assert row[f"at_{b:g}"] == pytest.approx(hs.reward_at_kl(dpo.kl, dpo.gold_reward, b), nan_ok=True)
    assert row.area == pytest.approx(hs.frontier_area(dpo.kl, dpo.gold_reward, fr.kl_max, fr.floors["gold_reward"]))
    assert fr.kl_max >= pts[pts.final & (pts.algorithm == "dpo")].kl.max()
    assert all(b <= fr.kl_max for b in fr.budgets)


def test_sensitivity_and_expected_max(analysed):
    block, res, opts = analysed
    sens, em = res["sensitivity"], res["expected_max"]
    assert set(sens.algorithm) == {"dpo"}  # sft and π_SFT have one configuration
    t = res["gs"].table
    v = t[t.algorithm == "dpo"].win_rate.to_numpy()
    r = sens[sens.metric == "win_rate"].iloc[0]
    assert r.range == pytest.approx(v.max() - v.min())
    assert r.best_minus_median == pytest.approx(v.max() - np.median(v))
    assert r.n_configs == 3 and r.best == t.label[t[t.algorithm == "dpo"].win_rate.idxmax()]
    e = em[(em.metric == "win_rate")].sort_values("budget").expected_max.to_numpy()
    assert e[0] == pytest.approx(v.mean()) and e[-1] == pytest.approx(v.max())


def test_report_folder_files_and_contents(report):
    path, out = report
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    for t in ("summary", "failures", "over_seeds", "seeds", "pairs", "bradley_terry", "sensitivity", "frontier"):
        for ext in ("md", "tex", "csv"):
            assert f"tables/{t}.{ext}" in names
    for f in ("frontier", "frontier_sqrt_kl", "seed_stability", "sensitivity_dpo", "expected_max",
              "training_curves_dpo", "training_curves_sft", "bradley_terry"):
        assert f"figures/{f}.png" in names
        assert (out / "figures" / f"{f}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (out / "figures" / f"{f}.png").stat().st_size > 5000
    text = path.read_text()
    for needle in ("vader", "temperature 1.0", "48 evaluation prompts", "Seeds**: 0, 1, 2", "50 nats",
                   "different library versions", "| torch ⚠ | 2.14.0 | 1/15 |", "figures/frontier.png",
                   "tables/summary.tex", "cannot reach p < 0.05"):
        assert needle in text, needle
    for link in [l.split("](")[1].split(")")[0] for l in text.split("\n") if "](" in l]:
        for part in link.split("), ["):
            assert (out / part).exists(), part
    tex = (out / "tables" / "summary.tex").read_text()
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex and r"\textbf{" in tex
    body = [l for l in tex.splitlines() if l.endswith(r"\\")]
    assert len({l.count(" & ") for l in body}) == 1
    summary = pd.read_csv(out / "tables" / "summary.csv")
    assert {"n_seeds", "n_diverged", "n_failed", "failure_rate", "failure_ci_low", "win_rate_iqm", "lc_win_rate",
            "mixed_versions"} <= set(summary.columns)


def test_pdf_figures(analysed, tmp_path):
    from harness.analysis import plots

    block, res, opts = analysed
    o = Options(formats=("png", "pdf"))
    files = plots.plot_bradley_terry(block, res["bt"], o, tmp_path / "bt")
    assert [f.suffix for f in files] == [".png", ".pdf"]
    pdf = files[1].read_bytes()
    assert pdf[:5] == b"%PDF-" and b"CreationDate" not in pdf  # no timestamp: rebuilt reports are identical


def test_significance_marker_and_bold_best(tmp_path):
    # a large effect on 200 prompts: DPO is significantly better than π_SFT and SFT
    groups = [FakeGroup("reference", {}), FakeGroup("sft", {"lr": 1e-4}, gain=0.0, kl=0.3),
              FakeGroup("dpo", {"beta": 0.1}, gain=0.5, kl=3.0)]
    write_fake_sweep(tmp_path / "res", groups, n_prompts=200, log_steps=False)
    path = build_report(tmp_path / "res", None, tmp_path / "out", n_resamples=N_RES, plots=False)
    md = (tmp_path / "out" / "tables" / "summary.md").read_text()
    dpo = next(l for l in md.splitlines() if l.startswith("| dpo"))
    sft = next(l for l in md.splitlines() if l.startswith("| sft"))
    assert dpo.count("**") >= 4 and "†" not in dpo
    assert "†" in sft
    tex = (tmp_path / "out" / "tables" / "summary.tex").read_text()
    assert r"$^{\dagger}$" in tex
    assert path.is_file()


def test_report_is_deterministic(sweep, tmp_path):
    a = build_report(sweep, None, tmp_path / "a", n_resamples=100, plots=False)
    b = build_report(sweep, None, tmp_path / "b", n_resamples=100, plots=False)
    for f in ("summary.csv", "pairs.csv", "bradley_terry.csv", "frontier.csv", "summary.tex"):
        assert (tmp_path / "a" / "tables" / f).read_text() == (tmp_path / "b" / "tables" / f).read_text()
    assert a.read_text().replace(str(tmp_path / "a"), "") == b.read_text().replace(str(tmp_path / "b"), "")


def test_several_blocks_get_prefixed_files(tmp_path):
    write_fake_sweep(tmp_path / "res", default_groups(betas=(0.1,)), suite="toy", n_prompts=20, seeds=(0,))
    write_fake_sweep(tmp_path / "res", default_groups(betas=(0.1, 0.5)), suite="other", n_prompts=20, seeds=(0, 1))
    path = build_report(tmp_path / "res", None, tmp_path / "out", n_resamples=50, plots=False)
    text = path.read_text()
    assert "## toy / smoke" in text and "## other / smoke" in text
    assert (tmp_path / "out" / "tables" / "toy-smoke_summary.csv").is_file()
    assert (tmp_path / "out" / "tables" / "other-smoke_sensitivity.csv").is_file()
    # one suite only
    build_report(tmp_path / "res", "toy", tmp_path / "one", n_resamples=50, plots=False)
    assert (tmp_path / "one" / "tables" / "summary.csv").is_file()


def test_cli_report_dir_and_plain_table(sweep, tmp_path, capsys, monkeypatch):
    import functools

    import harness.analysis
    from harness.cli import main

    # the CLI calls build_report with its defaults (10,000 resamples, every figure): keep the test quick
    monkeypatch.setattr(harness.analysis, "build_report",
                        functools.partial(build_report, n_resamples=50, plots=False))

    assert main(["report", "--results", str(sweep), "--dir", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "report.md").is_file()
    assert "report written to" in capsys.readouterr().out
    assert main(["report", "--results", str(sweep), "--format", "md"]) == 0
    out = capsys.readouterr().out
    assert "| dpo β=0.5 ⚠ |" in out and "2/3 (1 diverged)" in out and "LC win rate" in out and "truncated" in out
    from harness.analysis import comparison

    t = comparison(sweep, n_resamples=50)
    assert t[(t.algorithm == "dpo") & (t.hp_label == "β=0.1")].n_diverged.iloc[0] == 1


def test_analysis_imports_no_torch():
    import subprocess
    import sys

    code = ("import sys, harness.analysis, harness.analysis.plots, harness.analysis.summary, "
            "harness.analysis.compare, harness.analysis.frontier; "
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False False"


def test_degenerate_sweeps_still_give_a_report(tmp_path):
    # one seed; an algorithm whose every run failed; π_SFT alone in another suite
    groups = [FakeGroup("reference", {}), FakeGroup("sft", {"lr": 1e-4}, gain=0.05, kl=0.3),
              FakeGroup("dpo", {"beta": 0.1}, gain=0.1, kl=2.0, status={0: "failed"})]
    write_fake_sweep(tmp_path / "res", groups, seeds=(0,), n_prompts=16, suite="one")
    write_fake_sweep(tmp_path / "res", [FakeGroup("reference", {})], seeds=(0, 1), n_prompts=16, suite="alone")
    path = build_report(tmp_path / "res", None, tmp_path / "out", n_resamples=50, formats=("png",))
    text = path.read_text()
    assert "## one / smoke" in text and "## alone / smoke" in text
    t = pd.read_csv(tmp_path / "out" / "tables" / "one-smoke_summary.csv")
    dpo = t[t.algorithm == "dpo"].iloc[0]
    assert dpo.n_seeds == 0 and dpo.n_failed == 1 and dpo.n_failures == 1 and math.isnan(dpo.win_rate)
    assert t[t.algorithm == "sft"].n_seeds.iloc[0] == 1 and math.isnan(t[t.algorithm == "sft"].win_rate_std.iloc[0])
    assert (tmp_path / "out" / "figures" / "one-smoke_frontier.png").is_file()
    assert (tmp_path / "out" / "figures" / "alone-smoke_seed_stability.png").is_file()
