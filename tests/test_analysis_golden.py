"""The report's numbers on a fixed input, against a golden file written before the analysis was sped up.

``tests/data/analysis_golden.json`` holds, for a small fabricated sweep (``harness.analysis.fake``,
fully seeded), every file the report writes except the figures (tables as Markdown, LaTeX and CSV,
report.md with the results path replaced), the frames ``analyse`` returns (CSV at full precision),
and the return values of the bootstrap routines in ``harness.core.stats`` on small seeded inputs.
The golden file was produced by the code before issue 15's speed-up; the faster code must give the
same numbers. Markdown, LaTeX and report.md are compared byte for byte; CSV cells and stats values as
numbers within ``TOL`` (1e-12 relative; NaN equals NaN), text cells exactly. On the machine that wrote
the golden file the faster code gives the same bits (``PREFBENCH_GOLDEN_TOL=0`` passes).

Regenerate (only when a change of numbers is intended, and say so in the commit):

    .venv/bin/python tests/test_analysis_golden.py --write
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from harness.analysis import analyse, build_report  # noqa: E402
from harness.analysis.fake import FakeGroup, write_fake_sweep  # noqa: E402
from harness.core import stats as hs  # noqa: E402

GOLDEN = REPO / "tests" / "data" / "analysis_golden.json"
N_RES = 2000
# CSV and stats values: relative tolerance. The numbers were equal bit for bit (TOL=0) on the machine that
# wrote the golden file, with 1, 2 and 4 BLAS threads; another CPU's BLAS kernels may sum in another order
# and move the last bits, so the default allows 1e-12. PREFBENCH_GOLDEN_TOL=0 asks for equality.
TOL = float(os.environ.get("PREFBENCH_GOLDEN_TOL", "1e-12"))
ROOT_MARK = "<RESULTS>"

# two reports of the same sweep: the defaults (all pairs, every player, the LC refit), and the
# settings a large sweep takes (pairs vs π_SFT and the best, a subset of BT players, the one-step LC,
# the split selection of the headline)
CASES = {
    "default": dict(n_resamples=N_RES, plots=False),
    "large": dict(n_resamples=N_RES, plots=False, max_all_pairs=4, max_bt_players=5, lc_method="onestep",
                  select_split=True, kl_budgets=(1.0, 5.0, 20.0)),
}


def fixed_groups() -> list[FakeGroup]:
    """π_SFT, SFT at two learning rates, DPO on a 3 β x 2 lr grid; blemishes that exercise every pairing:
    a diverged seed (common seeds), two configurations with one finished seed each and no seed in common
    (seed order), and one run from another torch."""
    groups = [FakeGroup("reference", {})]
    for lr in (1e-5, 1e-4):
        groups.append(FakeGroup("sft", {"lr": lr}, gain=0.05, kl=0.3, length_shift=1.0))
    for b in (0.05, 0.1, 0.5):
        for lr in (1e-5, 1e-4):
            groups.append(FakeGroup("dpo", {"beta": b, "lr": lr}, gain=0.12 / (1 + 4 * b) + 0.05, kl=0.4 / b,
                                    length_shift=4.0 / (1 + 5 * b)))
    groups[3].status = {0: "diverged"}  # dpo β=0.05 lr=1e-5: seeds 1, 2
    groups[5].status = {1: "failed", 2: "diverged"}  # dpo β=0.1 lr=1e-5: seed 0 only
    groups[6].status = {0: "diverged", 2: "failed"}  # dpo β=0.1 lr=1e-4: seed 1 only
    groups[8].versions = {1: {"torch": "2.14.0"}}
    return groups


def make_sweep(root: Path) -> Path:
    write_fake_sweep(root, fixed_groups(), seeds=(0, 1, 2), n_prompts=60, suite="golden", checkpoints=3,
                     train_steps=30, samples_per_prompt=2, seed=7)
    return root


def _csv(df) -> str:
    return df.to_csv(index=True) if df is not None else ""


def report_outputs(results: Path, out: Path, case: str) -> dict[str, str]:
    """Every text the report writes for one case, plus the analysed frames."""
    import harness.analysis as A

    kw = CASES[case]
    kept = []  # what build_report's own analyse returns (the sweep is one block)

    def keep(*a, **k):
        kept.append(analyse(*a, **k))
        return kept[-1]

    A.analyse = keep
    try:
        path = build_report(results, None, out, **kw)
    finally:
        A.analyse = analyse
    files = {"report.md": path.read_text().replace(str(results), ROOT_MARK)}
    for p in sorted((out / "tables").iterdir()):
        files[f"tables/{p.name}"] = p.read_text()
    (r,) = kept
    gs = r["gs"]
    files["analyse/gs_table.csv"] = _csv(gs.table)
    files["analyse/gs_seeds.csv"] = _csv(gs.seeds)
    files["analyse/pairs.csv"] = _csv(r["pairs"])
    files["analyse/bt.csv"] = _csv(r["bt"])
    files["analyse/sensitivity.csv"] = _csv(r["sensitivity"])
    files["analyse/expected_max.csv"] = _csv(r["expected_max"])
    files["analyse/frontier_table.csv"] = _csv(r["frontier"].table)
    files["analyse/frontier_points.csv"] = _csv(r["frontier"].points)
    files["analyse/frontier_meta.json"] = json.dumps(
        {"budgets": r["frontier"].budgets, "kl_max": r["frontier"].kl_max, "floors": r["frontier"].floors,
         "swept": r["swept"], "trained": r["trained"], "lc_method": gs.lc_method}, sort_keys=True)
    # the bootstrap replicates kept for paired comparisons: a few quantiles and sums per bucket
    reps = {}
    for metric, by_s in gs.reps.items():
        for S, (gids, rep) in sorted(by_s.items()):
            reps[f"{metric}/{S}"] = {"gids": [int(g) for g in gids], "sum": rep.sum(axis=0).tolist(),
                                     "first": rep[0].tolist(), "last": rep[-1].tolist()}
    files["analyse/reps.json"] = json.dumps(reps, sort_keys=True)
    return files


def _plain(x):
    """Return values of stats routines as JSON-able lists and floats."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return x.item()
    return x


def stats_outputs() -> dict:
    """The bootstrap routines on small seeded inputs (nested and crossed, NaN cells, several chunks)."""
    rng = np.random.default_rng(11)
    X = rng.normal(0, 1, (7, 3, 40)) + rng.normal(0, 0.5, 40)
    Xn = X.copy()
    Xn[rng.uniform(size=X.shape) < 0.05] = np.nan
    W = np.where(X > 0.3, 1.0, np.where(X < -0.3, 0.0, 0.5))
    out = {}
    for name, A in (("X", X), ("Xn", Xn), ("W", W)):
        for shared in (False, True):
            key = f"hb_many/{name}/{'shared' if shared else 'nested'}"
            out[key] = _plain(hs.hierarchical_bootstrap_many(A, n_resamples=1500, seed=3, shared_items=shared))
            rep = hs.hierarchical_bootstrap_replicates(A[:3], n_resamples=700, seed=4, shared_items=shared)
            out[key + "/reps"] = _plain(rep.sum(axis=0))
        out[f"hb/{name}"] = _plain(hs.hierarchical_bootstrap(A[0], n_resamples=900, seed=1))
    out["boot_ci/mean"] = _plain(hs.bootstrap_ci(X[0, 0], n_resamples=1200, seed=2))
    out["boot_ci/iqm"] = _plain(hs.bootstrap_ci(X[0].T, n_resamples=800, seed=2, statistic="iqm"))
    out["boot_ci/nan"] = _plain(hs.bootstrap_ci(Xn[1].T, n_resamples=800, seed=2))
    out["paired"] = _plain(hs.paired_bootstrap_diff(X[0], X[1], n_resamples=1000, seed=5, shared_items=True))
    out["paired_1d"] = _plain(hs.paired_bootstrap_diff(X[0, 0], X[1, 0], n_resamples=1000, seed=5))
    out["seed_summary"] = _plain(hs.seed_summary(X[:, 0, 0], n_resamples=1000, seed=2))
    x, y = rng.normal(0, 1, (9, 3)), rng.normal(0.3, 1, (9, 4))
    out["poi_many"] = _plain(hs.probability_of_improvement_many(x, y, n_resamples=1100, seed=6))
    out["poi"] = _plain(hs.probability_of_improvement(x[0], y[0], n_resamples=1100, seed=6))
    out["compare_seeds_many"] = _plain(hs.compare_seeds_many(x, y))
    # length-controlled win rate: 4 configs x 3 seeds x 50 prompts x 2 samples, one config with 2 seeds
    C, S, I, spp = 4, 3, 50, 2
    cfg = np.repeat(np.arange(C), S * I * spp)
    sid = np.tile(np.repeat(np.arange(S), I * spp), C)
    iid = np.tile(np.repeat(np.arange(I), spp), C * S)
    d = rng.normal(0, 8, cfg.size).round()
    p = 1 / (1 + np.exp(-(0.3 * (cfg - 1) + np.tanh(d / 8))))
    s = np.where(rng.uniform(size=cfg.size) < p, 1.0, np.where(rng.uniform(size=cfg.size) < 0.1, 0.5, 0.0))
    keep = ~((cfg == 2) & (sid == 1))
    for method in ("refit", "onestep"):
        for raw in (True, False):
            out[f"lc_many/{method}/{raw}"] = _plain(hs.length_controlled_win_rate_many(
                s[keep], d[keep], cfg[keep], sid[keep], iid[keep], n_resamples=600, seed=8, method=method,
                raw_ci=raw))
    out["lc"] = _plain(hs.length_controlled_win_rate(s[:I], d[:I], n_resamples=700, seed=9))
    # Bradley-Terry: 5 players, every pair on 30 prompts (clustered)
    P, K = 5, 30
    ii, jj = np.triu_indices(P, 1)
    bi, bj = np.repeat(jj, K), np.repeat(ii, K)
    strength = np.array([0.0, 0.3, -0.2, 0.8, 0.1])
    sc = (rng.uniform(size=bi.size) < 1 / (1 + np.exp(-(strength[bi] - strength[bj])))).astype(float)
    cl = np.tile(np.arange(K), ii.size)
    out["bt"] = _plain(hs.bradley_terry(bi, bj, sc, P, anchor=0, n_resamples=500, seed=2, cluster=cl))
    # frontier: 3 seeds x 6 points
    kl = rng.gamma(2.0, 2.0, 18)
    rw = np.sqrt(kl) * 0.1 + rng.normal(0, 0.05, 18)
    out["frontier"] = _plain(hs.frontier_bootstrap(kl, rw, np.repeat(np.arange(3), 6), [1.0, 3.0, 8.0], 10.0, 0.0,
                                                   n_resamples=900, seed=4))
    return out


def build_all(tmp: Path) -> dict:
    results = make_sweep(tmp / "results")
    out = {"reports": {c: report_outputs(results, tmp / f"report-{c}", c) for c in CASES},
           "stats": stats_outputs()}
    return out


# ----------------------------------------------------------------------------- comparison

def _same_value(a, b, tol: float) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            fa, fb = float(a), float(b)
        except (TypeError, ValueError):
            return False
        if math.isnan(fa) or math.isnan(fb):
            return math.isnan(fa) and math.isnan(fb)
        return fa == fb or abs(fa - fb) <= tol * max(1.0, abs(fa), abs(fb))
    return a == b


def _diff_json(a, b, tol: float, where: str, out: list) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            out.append(f"{where}: keys {sorted(set(a) ^ set(b))}")
        for k in sorted(set(a) & set(b)):
            _diff_json(a[k], b[k], tol, f"{where}/{k}", out)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{where}: length {len(a)} != {len(b)}")
        for k, (u, v) in enumerate(zip(a, b)):
            _diff_json(u, v, tol, f"{where}[{k}]", out)
    elif not _same_value(a, b, tol):
        out.append(f"{where}: {a!r} != {b!r}")


def _diff_csv(a: str, b: str, tol: float, where: str, out: list) -> None:
    """Cell by cell: text cells equal, number cells equal within ``tol`` (relative)."""
    if a == b:
        return
    ra, rb = list(csv.reader(io.StringIO(a))), list(csv.reader(io.StringIO(b)))
    if len(ra) != len(rb):
        out.append(f"{where}: {len(rb)} rows, golden {len(ra)}")
        return
    for i, (x, y) in enumerate(zip(ra, rb)):
        if len(x) != len(y):
            out.append(f"{where}: row {i + 1} has {len(y)} cells, golden {len(x)}")
            return
        for j, (u, v) in enumerate(zip(x, y)):
            if u != v and not _same_value(_num(u), _num(v), tol):
                col = ra[0][j] if j < len(ra[0]) else j
                out.append(f"{where}: row {i + 1} column {col}: golden {u!r}, now {v!r}")


def _num(v: str):
    """A CSV cell as a float when it is a number (not a bool), else the text."""
    if v.strip().lower() in ("true", "false", ""):
        return v
    try:
        return float(v)
    except ValueError:
        return v


def differences(golden: dict, now: dict, tol: float = TOL) -> list[str]:
    out = []
    for case, files in golden["reports"].items():
        got = now["reports"].get(case, {})
        if set(files) != set(got):
            out.append(f"{case}: files differ: {sorted(set(files) ^ set(got))}")
        for name in sorted(set(files) & set(got)):
            where = f"{case}/{name}"
            if name.endswith(".csv"):
                _diff_csv(files[name], got[name], tol, where, out)
            elif name.endswith(".json"):
                _diff_json(json.loads(files[name]), json.loads(got[name]), tol, where, out)
            elif files[name] != got[name]:  # Markdown, LaTeX, report.md: byte for byte
                la, lb = files[name].splitlines(), got[name].splitlines()
                bad = next((k for k, (u, v) in enumerate(zip(la, lb)) if u != v), min(len(la), len(lb)))
                out.append(f"{where}: line {bad + 1} differs")
    _diff_json(golden["stats"], now["stats"], tol, "stats", out)
    return out


# ----------------------------------------------------------------------------- tests

@pytest.fixture(scope="module")
def golden():
    return json.loads(GOLDEN.read_text())


@pytest.fixture(scope="module")
def now(tmp_path_factory):
    return build_all(tmp_path_factory.mktemp("golden"))


def test_golden_input_covers_every_path(golden):
    """The fixed input reaches the code paths the speed-up touches (guards against a golden file that
    silently stopped covering them)."""
    d = golden["reports"]["default"]
    pairs = pd.read_csv(io.StringIO(d["analyse/pairs.csv"]))
    assert {"same seeds", "common seeds (2)", "common seeds (1)", "seed order"} <= set(pairs.pairing)
    big = pd.read_csv(io.StringIO(golden["reports"]["large"]["analyse/pairs.csv"]))
    assert len(big) < len(pairs)  # pairs vs π_SFT and the best only
    assert json.loads(d["analyse/frontier_meta.json"])["lc_method"] == "refit"
    assert json.loads(golden["reports"]["large"]["analyse/frontier_meta.json"])["lc_method"] == "onestep"
    reps = json.loads(d["analyse/reps.json"])
    assert {"win_rate/1", "win_rate/2", "win_rate/3"} <= set(reps)
    assert len(pd.read_csv(io.StringIO(golden["reports"]["large"]["analyse/bt.csv"]))) == 5
    assert "versions_differ" in pairs and (pairs.versions_differ == "torch").any()


def test_report_numbers_equal_the_golden_file(golden, now):
    diffs = differences(golden, now)
    assert not diffs, "\n".join(diffs[:30]) + (f"\n... {len(diffs) - 30} more" if len(diffs) > 30 else "")


def test_the_comparison_sees_a_changed_number(golden):
    """differences() is not vacuous: one changed digit in a CSV, a table or a stats value is caught."""
    bent = json.loads(json.dumps(golden))
    f = bent["reports"]["default"]
    row = f["tables/summary.csv"].splitlines()
    row[1] = row[1].replace("0.", "0.9", 1)
    f["tables/summary.csv"] = "\n".join(row) + "\n"
    f["tables/pairs.md"] = f["tables/pairs.md"].replace("|", "¦", 1)
    bent["stats"]["bt"]["elo"][1] += 1e-6
    # a number moved by one part in a billion, far below anything a table shows, is still caught
    rows = list(csv.reader(io.StringIO(f["analyse/gs_table.csv"])))
    col = next(j for j, c in enumerate(rows[1]) if isinstance(_num(c), float) and abs(_num(c)) > 1e-3)
    rows[1][col] = repr(float(rows[1][col]) * (1 + 1e-9))
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    f["analyse/gs_table.csv"] = buf.getvalue()
    diffs = differences(golden, bent)
    assert any("summary.csv" in d for d in diffs)
    assert any("gs_table.csv" in d for d in diffs)
    assert any("pairs.md" in d for d in diffs)
    assert any("stats/bt/elo[1]" in d for d in diffs)


if __name__ == "__main__":
    import tempfile

    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_analysis_golden.py --write   (regenerates the golden file)")
    with tempfile.TemporaryDirectory() as t:
        data = build_all(Path(t))
    GOLDEN.write_text(json.dumps(data, indent=1, sort_keys=True, allow_nan=True) + "\n")
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size / 1e3:.0f} kB)")
