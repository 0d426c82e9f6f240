"""Comparison tables from committed runs. Reads JSON and Parquet only (no torch), so a report can be
rebuilt on a laptop from a copied results folder.

One row per (suite, algorithm, variant, hyperparameters), aggregated over seeds. The win-rate CI is
a hierarchical bootstrap over seeds and the shared evaluation prompts (metrics.md §3.6, §4.3);
with one seed it is the bootstrap over prompts.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from harness.core import stats
from harness.core.hashing import canonical_json
from harness.execution.results import ResultsStore, read_json

COLUMNS = ["suite", "algorithm", "variant", "hyperparameters", "n_seeds", "n_failed", "n_diverged", "gold_reward",
           "gold_reward_std",
           "win_rate", "win_rate_ci_low", "win_rate_ci_high", "kl", "kl_k1", "kl_k3", "kl_per_token", "length",
           "truncation_rate", "distinct_2", "n_prompts", "kl_upper_bound", "rm_valid_accuracy", "versions"]
# algorithm-specific facts shown only when some row has them (best-of-n's KL bound, a reward model's accuracy)
OPTIONAL = [("kl_upper_bound", "KL bound"), ("rm_valid_accuracy", "RM held-out acc.")]


def load_runs(root: Path | str, suite: str | None = None, run_ids: set[str] | None = None) -> pd.DataFrame:
    """One row per committed run: identity, status and flattened metrics, plus its folder."""
    rows = []
    for path in ResultsStore(root).iter_runs(suite):
        m = read_json(path / "metrics.json")
        if run_ids is not None and m["run_id"] not in run_ids:
            continue
        rows.append({"run_id": m["run_id"], "suite": m["suite"], "preset": m.get("preset"),
                     "algorithm": m["algorithm"], "variant": m.get("variant", m["algorithm"]),
                     "hp_json": canonical_json(m.get("hyperparameters", {})),
                     "hyperparameters": m.get("hyperparameters", {}), "seed": m["seed"], "status": m["status"],
                     "library_versions": m.get("library_versions") or {}, "path": str(path),
                     **{k: v for k, v in (m.get("extra") or {}).items() if not isinstance(v, (list, dict))},
                     **{k: v for k, v in (m.get("metrics") or {}).items() if not isinstance(v, (list, dict))}})
    return pd.DataFrame(rows)


def varying_hyperparameters(runs: pd.DataFrame) -> dict[str, list[str]]:
    """Per algorithm, the hyperparameters that differ between its runs (shown in the table)."""
    out = {}
    for algo, g in runs.groupby("algorithm"):
        dicts = g.hyperparameters.tolist()
        keys = sorted({k for d in dicts for k in d})
        out[algo] = [k for k in keys if len({json.dumps(d.get(k)) for d in dicts}) > 1]
    return out


def _label(hp: dict, keys: list[str]) -> str:
    return ", ".join(f"{k}={hp[k]:g}" if isinstance(hp.get(k), float) else f"{k}={hp.get(k)}" for k in keys) or "default"


def win_matrix(paths: list[str]) -> np.ndarray:
    """[n_seeds, n_prompts] per-prompt win scores (mean over samples of a prompt)."""
    rows = []
    for p in paths:
        s = pd.read_parquet(Path(p) / "samples.parquet", columns=["prompt_index", "win"])
        rows.append(s.groupby("prompt_index", sort=True).win.mean())
    return pd.concat(rows, axis=1).T.to_numpy(dtype=float)


def summary_table(runs: pd.DataFrame, n_resamples: int = 10000, seed: int = 0) -> pd.DataFrame:
    if runs.empty:
        return pd.DataFrame(columns=COLUMNS)
    keys = varying_hyperparameters(runs)
    versions = runs.library_versions if "library_versions" in runs else pd.Series([{}] * len(runs), index=runs.index)
    common = {}  # per suite, the most frequent version of every package
    for suite, g in runs.groupby("suite"):
        vs = versions[g.index].tolist()
        common[suite] = {k: pd.Series([v.get(k) for v in vs]).mode(dropna=False).iloc[0]
                         for k in sorted({k for v in vs for k in v})}
    rows = []
    for (suite, algo, variant, hp_json), g in runs.groupby(["suite", "algorithm", "variant", "hp_json"], sort=False):
        ok = g[g.status == "ok"]
        differ = sorted({k for v in versions[g.index] for k in set(v) | set(common[suite])
                         if v.get(k) != common[suite].get(k)})
        row = {"suite": suite, "algorithm": algo, "variant": variant,
               "hyperparameters": _label(json.loads(hp_json), keys.get(algo, [])),
               "n_seeds": int(len(ok)), "n_failed": int(len(g) - len(ok)),
               "n_diverged": int((g.status == "diverged").sum()),
               # runs made with library versions other than the suite's usual ones: comparisons are flagged
               "versions": ("⚠ " + ", ".join(differ)) if differ else ""}
        if len(ok):
            for col in ("gold_reward", "kl", "kl_k1", "kl_k3", "kl_per_token", "length", "truncation_rate",
                        "distinct_2", "n_prompts"):
                row[col] = float(ok[col].mean())
            for col, _ in OPTIONAL:
                if col in ok:
                    row[col] = float(pd.to_numeric(ok[col], errors="coerce").mean())
            row["gold_reward_std"] = float(ok.gold_reward.std(ddof=1)) if len(ok) > 1 else float("nan")
            # the same prompts appear in every seed: resample them jointly (stats.hierarchical_bootstrap)
            hb = stats.hierarchical_bootstrap(win_matrix(ok.path.tolist()), n_resamples=n_resamples, seed=seed,
                                              shared_items=True)
            row.update(win_rate=hb["point"], win_rate_ci_low=hb["low"], win_rate_ci_high=hb["high"])
        rows.append(row)
    table = pd.DataFrame(rows).reindex(columns=COLUMNS)
    order = {"reference": 0}
    table["_o"] = table.algorithm.map(lambda a: order.get(a, 1))
    return table.sort_values(["suite", "_o", "algorithm", "hyperparameters"]).drop(columns="_o").reset_index(drop=True)


def _fmt(v, digits=3) -> str:
    if isinstance(v, float):
        return "–" if np.isnan(v) else f"{v:.{digits}f}"
    return str(v)


DISPLAY = [("suite", "suite"), ("algorithm", "algorithm"), ("variant", "variant"), ("hyperparameters", "hyperparameters"),
           ("n_seeds", "seeds"), ("not_ok", "not ok (diverged)"), ("gold_reward", "gold reward"), ("win_rate", "win rate vs π_SFT"),
           ("win_ci", "95% CI"), ("kl", "KL (nats)"), ("kl_k1", "KL k1"), ("kl_k3", "KL k3"),
           ("length", "length"), ("truncation_rate", "truncated"), ("distinct_2", "distinct-2")]


def _display(table: pd.DataFrame) -> list[tuple[str, str]]:
    """DISPLAY, plus a library-versions column when some row's runs used other versions than the rest."""
    flagged = "versions" in table and table.versions.fillna("").astype(str).str.len().gt(0).any()
    extra = [(c, h) for c, h in OPTIONAL if c in table and table[c].notna().any()]
    return DISPLAY + extra + ([("versions", "library versions differ")] if flagged else [])


def _display_rows(table: pd.DataFrame) -> list[list[str]]:
    out = []
    display = _display(table)
    for _, r in table.iterrows():
        ci = "–" if pd.isna(r.win_rate_ci_low) else f"[{r.win_rate_ci_low:.3f}, {r.win_rate_ci_high:.3f}]"
        not_ok = "–" if pd.isna(r.n_failed) else f"{int(r.n_failed)} ({int(r.n_diverged)})"
        vals = {**r.to_dict(), "win_ci": ci, "not_ok": not_ok}
        if not isinstance(vals.get("versions"), str):
            vals["versions"] = ""
        out.append([_fmt(vals[k], 1 if k == "length" else 3) for k, _ in display])
    return out


def to_markdown(table: pd.DataFrame) -> str:
    head = [h for _, h in _display(table)]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in _display_rows(table)]
    return "\n".join(lines) + "\n"


def _latex_escape(s: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#"),
                 ("π", r"$\pi$"), ("–", "--"), ("⚠", "(!)")):
        s = s.replace(a, b)
    return s


def to_latex(table: pd.DataFrame) -> str:
    head = [_latex_escape(h) for _, h in _display(table)]
    lines = [r"\begin{tabular}{" + "l" * 4 + "r" * (len(head) - 4) + "}", r"\toprule", " & ".join(head) + r" \\",
             r"\midrule"]
    lines += [" & ".join(_latex_escape(c) for c in r) + r" \\" for r in _display_rows(table)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def render(table: pd.DataFrame, fmt: str) -> str:
    if fmt == "csv":
        return table.to_csv(index=False)
    if fmt == "latex":
        return to_latex(table)
    return to_markdown(table)
