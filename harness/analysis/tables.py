"""Tables in Markdown, LaTeX (booktabs) and CSV. CSV holds every number at full precision; Markdown
and LaTeX show mean ± half-width of the 95% CI, the best value in bold and a dagger where a
configuration is significantly below the best."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness.analysis.options import Options

DAGGER = "†"


@dataclass
class Cell:
    text: str
    bold: bool = False
    mark: bool = False


@dataclass
class Table:
    name: str
    caption: str
    headers: list[str]
    rows: list[list]  # str or Cell
    csv: pd.DataFrame
    align: str = ""  # LaTeX column alignment, e.g. "lrr"; default: first left, rest right
    notes: str = ""  # printed under the table in report.md


def isnan(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, np.floating) and np.isnan(v))


def num(v, d: int = 3) -> str:
    if isnan(v):
        return "–"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return f"{float(v):.{d}f}"


def pm(mean, lo, hi, d: int = 3) -> str:
    """mean ± half-width of the interval [lo, hi] (the asymmetric bounds are in the CSV)."""
    if isnan(mean):
        return "–"
    if isnan(lo) or isnan(hi):
        return num(mean, d)
    return f"{float(mean):.{d}f} ± {(float(hi) - float(lo)) / 2:.{d}f}"


def ci(lo, hi, d: int = 3) -> str:
    if isnan(lo) or isnan(hi):
        return "–"
    return f"[{float(lo):.{d}f}, {float(hi):.{d}f}]"


def pval(p) -> str:
    if isnan(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


# ----------------------------------------------------------------------------- renderers

def _md_cell(c) -> str:
    if isinstance(c, Cell):
        t = c.text.replace("|", "\\|")
        t = f"**{t}**" if c.bold and t != "–" else t
        return t + (DAGGER if c.mark else "")
    return str(c).replace("|", "\\|")


def to_markdown(t: Table) -> str:
    lines = ["| " + " | ".join(t.headers) + " |", "|" + "|".join("---" for _ in t.headers) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in t.rows]
    return "\n".join(lines) + "\n"


_LATEX = [("π_SFT", "\x00"), ("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#"), ("$", r"\$"),
          ("{", r"\{"), ("}", r"\}"), ("~", r"\textasciitilde{}"), ("^", r"\textasciicircum{}"),
          ("\x00", r"$\pi_{\mathrm{SFT}}$"), ("π", r"$\pi$"), ("±", r"$\pm$"), ("β", r"$\beta$"),
          ("ε", r"$\epsilon$"), ("‖", r"$\|$"), ("√", r"$\sqrt{}$"), ("≤", r"$\le$"), ("≈", r"$\approx$"), ("≥", r"$\ge$"),
          (">", r"$>$"), ("<", r"$<$"), ("–", "--"), ("−", "$-$"), ("⚠", r"(!)"), ("×", r"$\times$"),
          ("†", r"$^\dagger$")]


def latex_escape(s: str) -> str:
    # backslash and braces first, before the replacements introduce their own
    out = []
    for ch in s:
        out.append({"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}"}.get(ch, ch))
    s = "".join(out)
    for a, b in _LATEX:
        if a in ("\\", "{", "}"):
            continue
        s = s.replace(a, b)
    return s.replace("$$", "")


def _tex_cell(c) -> str:
    if isinstance(c, Cell):
        t = latex_escape(c.text)
        t = rf"\textbf{{{t}}}" if c.bold and c.text != "–" else t
        return t + (r"$^{\dagger}$" if c.mark else "")
    return latex_escape(str(c))


def to_latex(t: Table) -> str:
    align = t.align or ("l" + "r" * (len(t.headers) - 1))
    lines = [r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{" + align + "}", r"\toprule",
             " & ".join(latex_escape(h) for h in t.headers) + r" \\", r"\midrule"]
    lines += [" & ".join(_tex_cell(c) for c in r) + r" \\" for r in t.rows]
    lines += [r"\bottomrule", r"\end{tabular}", r"\caption{" + latex_escape(t.caption) + "}",
              r"\label{tab:" + t.name.replace("_", "-") + "}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write(t: Table, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{t.name}.md", folder / f"{t.name}.tex", folder / f"{t.name}.csv"]
    paths[0].write_text(to_markdown(t))
    paths[1].write_text(to_latex(t))
    t.csv.to_csv(paths[2], index=False)
    return paths


# ----------------------------------------------------------------------------- builders

def significance_vs_best(table: pd.DataFrame, pairs: pd.DataFrame, metric: str) -> tuple[int | None, set[int]]:
    """(best group, groups significantly below it: Holm-adjusted paired-bootstrap p < alpha)."""
    live = table[table.n_seeds > 0]
    if live.empty or live[metric].isna().all():
        return None, set()
    best = int(live[metric].idxmax())
    below = set()
    if pairs is not None and not pairs.empty:
        p = pairs[(pairs.metric == metric) & ((pairs.a == best) | (pairs.b == best)) & pairs.significant]
        for r in p.itertuples():
            other = r.b if r.a == best else r.a
            if table[metric][other] < table[metric][best]:
                below.add(int(other))
    return best, below


SELECTION_NOTE_SAME = ("Bold and † are chosen on the same prompts they are reported on, which favours the "
                       "selected configuration (winner's curse); `prefbench report --select-split` selects on one "
                       "half of the prompts and reports on the other.")
SELECTION_NOTE_SPLIT = ("Bold and † were chosen on one half of the evaluation prompts (a seeded split by prompt "
                        "index); every number shown is measured on the other half.")
ESTIMATE = "≈"  # marks a KL that is an estimate, not the exact per-step sum (docs/metrics.md §3.5)
BOUND = "≤"  # marks a KL that is an upper bound (best-of-n's closed form when candidates tied)
KL_MARKS = {"estimate": ESTIMATE, "bound": BOUND}


def kl_note(t: pd.DataFrame) -> str:
    """What the table's KL marks mean, for the kinds present."""
    kinds = set(t.kl_kind.dropna()) if "kl_kind" in t else set()
    notes = []
    if "analytic" in kinds:
        notes.append("best-of-n: the analytic log n − (n−1)/n, exact when no candidates tie")
    if "bound" in kinds:
        notes.append(f"{BOUND}: an upper bound (best-of-n with tied candidates)")
    if "estimate" in kinds:
        notes.append(f"{ESTIMATE}: an estimate, not the exact per-step sum")
    return "; ".join(notes)


def selection_note(split: bool) -> str:
    return SELECTION_NOTE_SPLIT if split else SELECTION_NOTE_SAME


def kl_header(t: pd.DataFrame) -> str:
    """The KL column's name: KL(π‖π_ref), or KL(π_T‖π_ref,T) when the runs sampled at T ≠ 1."""
    temps = sorted({round(float(x), 6) for x in t.kl_temperature.dropna()}) if "kl_temperature" in t else []
    if temps and temps != [1.0]:
        return "KL(π_T‖π_ref,T), T=" + "/".join(f"{x:g}" for x in temps) + " (nats)"
    return "KL(π‖π_ref) (nats)"


def win_opponent(t: pd.DataFrame) -> str:
    """Whom the win rates are against: π_SFT (its samples) or the dataset's reference responses."""
    kinds = set(t.win_baseline.dropna()) if "win_baseline" in t else set()
    return "dataset reference" if kinds == {"dataset"} else "π_SFT"


def kl_cell(r, d: int = 2) -> str:
    text = pm(r.kl, r.kl_ci_low, r.kl_ci_high, d)
    mark = KL_MARKS.get(getattr(r, "kl_kind", "exact"), "")
    return mark + text if text != "–" else text


def headline_table(name: str, t: pd.DataFrame, opts: Options, block_name: str,
                   select: pd.DataFrame | None = None) -> Table:
    """The comparison a paper pastes: raw and length-controlled win rates with CIs, length and truncation
    beside gold reward and KL, one row per configuration. ``select`` (same index as ``t``) is where the
    best values are chosen; by default ``t`` itself."""
    level = int(round(100 * (1 - opts.alpha)))
    sel = t if select is None else select
    live = sel[sel.n_seeds > 0]

    def best(metric):
        return int(live[metric].idxmax()) if not live.empty and live[metric].notna().any() else None

    bg, bw, blc = best("gold_reward"), best("win_rate"), best("lc_win_rate")
    optional = [(c, h) for c, h in (("judge_unresolved", "undecided pairs"), ("kl_upper_bound", "KL bound (nats)"),
                                    ("rm_valid_accuracy", "RM held-out acc."))
                if c in t and t[c].notna().any() and (c != "judge_unresolved" or t[c].fillna(0).gt(0).any())]
    headers = (["configuration", "seeds (ok/runs)", "gold reward", f"win rate vs {win_opponent(t)} [{level}% CI]",
                f"LC win rate [{level}% CI]", "length", "truncated", kl_header(t)] + [h for _, h in optional])
    rows = []
    for g, r in t.iterrows():
        label = r.label + (" ⚠" if r.get("mixed_versions", False) else "")
        wr = "–" if isnan(r.win_rate) else f"{r.win_rate:.3f} {ci(r.win_rate_ci_low, r.win_rate_ci_high)}"
        lc = "–" if isnan(r.lc_win_rate) else f"{r.lc_win_rate:.3f} {ci(r.lc_ci_low, r.lc_ci_high)}"
        bad = ", ".join(f"{n} {w}" for n, w in ((r.n_diverged, "diverged"), (r.n_failed, "failed")) if n)
        rows.append([label, f"{r.n_seeds}/{r.n_runs}" + (f" ({bad})" if bad else ""),
                     Cell(pm(r.gold_reward, r.gold_reward_ci_low, r.gold_reward_ci_high), g == bg),
                     Cell(wr, g == bw), Cell(lc, g == blc), num(r.length, 1), num(r.truncation_rate, 3),
                     kl_cell(r)] + [num(r[c], 0 if c == "judge_unresolved" else 3) for c, _ in optional])
    note = kl_note(t)
    undecided = (" Undecided pairs: the pairwise judge gave no verdict after its retries; they count as ties."
                 if any(c == "judge_unresolved" for c, _ in optional) else "")
    caption = (f"{block_name}: one row per configuration over its seeds. Gold reward: mean ± half-width of the "
               f"{level}% CI; win rates: point [{level}% CI] (hierarchical bootstrap: seeds, then the shared "
               f"prompts; {opts.n_resamples} resamples). LC: length-controlled win rate (the win rate at equal "
               + ("length to π_SFT's sample). " if win_opponent(t) == "π_SFT" else "length to the dataset's reference "
                  "response; win rates are against that response, not a π_SFT sample). ")
               + "length: mean completion tokens; truncated: share of samples without "
               "EOS within the length cap. KL on the policy's own samples, exact per-step sum over the vocabulary"
               + (f" ({note})" if note else "") + "." + undecided + f" Bold: best. {selection_note(select is not None)}")
    cols = ["label", "algorithm", "variant", "hp_label", "n_seeds", "n_runs", "n_diverged", "n_failed",
            "gold_reward", "gold_reward_ci_low", "gold_reward_ci_high", "win_rate", "win_rate_ci_low",
            "win_rate_ci_high", "lc_win_rate", "lc_ci_low", "lc_ci_high", "length", "truncation_rate", "kl",
            "kl_ci_low", "kl_ci_high", "kl_k1", "kl_k3", "kl_kind", "kl_temperature", "kl_upper_bound", "rm_valid_accuracy",
            "judge_unresolved"]
    csv = t[[c for c in cols if c in t]].copy()
    return Table(name, caption, headers, rows, csv, align="l" + "r" * (len(headers) - 1))


def summary_table(name: str, t: pd.DataFrame, pairs: pd.DataFrame, bt: pd.DataFrame, opts: Options,
                  block_name: str) -> Table:
    level = int(round(100 * (1 - opts.alpha)))
    best_g, sig_g = significance_vs_best(t, pairs, "gold_reward")
    best_w, sig_w = significance_vs_best(t, pairs, "win_rate")
    live = t[t.n_seeds > 0]
    best_lc = int(live.lc_win_rate.idxmax()) if not live.empty and live.lc_win_rate.notna().any() else None
    elo = bt.set_index("group") if bt is not None and not bt.empty else pd.DataFrame(columns=["elo"])
    best_elo = int(elo.elo.idxmax()) if len(elo) and elo.elo.notna().any() else None
    headers = ["configuration", "seeds (ok/runs)", "diverged/failed", "failures k/n [CI]", "gold reward",
               "gold IQM", f"win rate vs {win_opponent(t)}", "LC win rate", "length", kl_header(t), "Elo [CI]"]
    rows = []
    for g, r in t.iterrows():
        label = r.label + (" ⚠" if r.mixed_versions else "")
        e = elo.loc[g] if g in elo.index else None
        rows.append([
            label, f"{r.n_seeds}/{r.n_runs}", f"{r.n_diverged}/{r.n_failed}",
            f"{r.n_failures}/{r.n_runs} {ci(r.failure_ci_low, r.failure_ci_high, 2)}",
            Cell(pm(r.gold_reward, r.gold_reward_ci_low, r.gold_reward_ci_high), g == best_g, g in sig_g),
            num(r.gold_reward_iqm),
            Cell(pm(r.win_rate, r.win_rate_ci_low, r.win_rate_ci_high), g == best_w, g in sig_w),
            Cell(pm(r.lc_win_rate, r.lc_ci_low, r.lc_ci_high), g == best_lc),
            num(r.length, 1), kl_cell(r),
            Cell("–" if e is None or isnan(e.elo) else f"{e.elo:.0f} [{e.elo_low:.0f}, {e.elo_high:.0f}]",
                 g == best_elo)])
    caption = (f"{block_name}: one row per configuration, over its seeds. Values are mean ± half-width of the "
               f"{level}% CI (hierarchical bootstrap: seeds, then the shared prompts; {opts.n_resamples} resamples; "
               f"exact bounds in the CSV). Bold: best; {DAGGER}: significantly below the best (paired bootstrap on "
               f"the same prompts, Holm-adjusted p < {opts.alpha:g}). Failures: diverged, failed, KL > "
               f"{opts.kl_bound:g} nats or gold reward below π_SFT's (same seed), with an exact binomial CI. "
               "LC: length-controlled win rate. Elo: Bradley–Terry on gold-reward comparisons, π_SFT = 1000.")
    if kl_note(t):
        caption += f" KL: {kl_note(t)}."
    caption += " " + selection_note(False)  # this table is not split
    if t.mixed_versions.any():
        caption += " ⚠: the configuration's runs used different library versions."
    csv = t.drop(columns=["hp_json"]).copy()
    for c in ("elo", "elo_low", "elo_high"):
        csv[c] = elo[c].reindex(csv.index) if c in elo else np.nan
    return Table(name, caption, headers, rows, csv, align="l" + "r" * (len(headers) - 1))


def failures_table(name: str, t: pd.DataFrame, opts: Options, block_name: str) -> Table:
    level = int(round(100 * (1 - opts.alpha)))
    headers = ["configuration", "runs", "diverged", "failed", f"KL > {opts.kl_bound:g}", "gold < π_SFT",
               "any (k/n)", f"rate [{level}% CI]"]
    rows = [[r.label, str(r.n_runs), str(r.n_diverged), str(r.n_failed), str(r.n_kl_above_bound),
             str(r.n_below_reference), f"{r.n_failures}/{r.n_runs}",
             f"{num(r.failure_rate, 2)} {ci(r.failure_ci_low, r.failure_ci_high, 2)}"] for _, r in t.iterrows()]
    caption = (f"{block_name}: runs meeting each declared failure criterion. A run can meet several; 'any' counts "
               f"it once. CI: exact (Clopper–Pearson). 'gold < π_SFT' compares with the π_SFT run of the same seed.")
    cols = ["label", "algorithm", "hp_label", "n_runs", "n_seeds", "n_diverged", "n_failed", "n_kl_above_bound",
            "n_below_reference", "n_failures", "failure_rate", "failure_ci_low", "failure_ci_high"]
    return Table(name, caption, headers, rows, t[cols].copy())


def over_seeds_table(name: str, t: pd.DataFrame, block_name: str) -> Table:
    """Mean, std and IQM over seeds of each metric, and the number of seeds behind them."""
    metrics = (("gold_reward", "gold reward", 3), ("win_rate", "win rate", 3), ("kl", "KL (nats)", 2),
               ("length", "length", 1))
    headers = ["configuration", "seeds"] + [f"{h} {s}" for _, h, _ in metrics for s in ("mean", "std", "IQM")]
    rows = []
    for _, r in t.iterrows():
        cells = [r.label, str(r.n_seeds)]
        for m, _, d in metrics:
            cells += [num(r[m], d), num(r[f"{m}_std"], d), num(r[f"{m}_iqm"], d)]
        rows.append(cells)
    caption = (f"{block_name}: each metric over the seeds of a configuration (one value per seed: the mean over "
               "its prompts). std: sample standard deviation (ddof 1; – with one seed); IQM: interquartile mean "
               "(scipy trim_mean 0.25, as rliable). With 3–5 seeds the IQM is close to the mean.")
    cols = ["label", "n_seeds"] + [f"{m}{s}" for m, _, _ in metrics for s in ("", "_std", "_iqm")]
    return Table(name, caption, headers, rows, t[cols].copy())


def seeds_table(name: str, seeds: pd.DataFrame, block_name: str) -> Table:
    headers = ["configuration", "seed", "status", "gold reward", "win rate", "KL (nats)", "length", "failure flags"]
    rows = []
    for r in seeds.itertuples():
        flags = [n for n, f in (("diverged", r.diverged), ("failed", r.failed), ("KL>bound", r.kl_above_bound),
                                ("gold<π_SFT", r.below_reference)) if f]
        status = r.status if r.status == "ok" else f"{r.status} (step {r.failure_step})" \
            if r.failure_step == r.failure_step and r.failure_step is not None else r.status
        rows.append([r.label, str(r.seed), status, num(r.gold_reward), num(r.win_rate), num(r.kl, 2),
                     num(r.length, 1), ", ".join(flags) or "–"])
    caption = f"{block_name}: every run (seed) on its own."
    return Table(name, caption, headers, rows, seeds.copy())


def pairs_table(name: str, pairs: pd.DataFrame, opts: Options, block_name: str) -> Table:
    level = int(round(100 * (1 - opts.alpha)))
    headers = ["metric", "A", "B", f"A − B [{level}% CI]", "p (Holm)", "P(A > B) seeds [CI]", "Welch p (Holm)",
               "MWU p (min p)", "pairing", "versions"]
    rows = []
    for r in pairs.itertuples():
        rows.append([r.metric.replace("_", " "), r.a_label, r.b_label,
                     Cell(f"{r.diff:+.3f} {ci(r.ci_low, r.ci_high)}", mark=bool(r.significant)),
                     f"{pval(r.p_boot)} ({pval(r.p_boot_holm)})",
                     f"{num(r.poi, 2)} {ci(r.poi_low, r.poi_high, 2)}",
                     f"{pval(r.welch_p)} ({pval(r.welch_p_holm)})",
                     f"{pval(r.mwu_p)} ({num(r.mwu_min_p, 3)})", r.pairing,
                     ("⚠ " + r.versions_differ) if r.versions_differ else "same"])
    caption = (f"{block_name}: A − B on the same prompts (runs paired by seed; hierarchical bootstrap over seeds, "
               f"then prompts, {opts.n_resamples} resamples) with its bootstrap p-value; {DAGGER}: Holm-adjusted "
               f"p < {opts.alpha:g} within the metric's family of comparisons. P(A > B): probability that a seed "
               "of A beats a seed of B (Mann–Whitney U / n_A n_B, bootstrap CI). Welch t-test and exact "
               "Mann–Whitney test on the per-seed values; 'min p' is the smallest p-value Mann–Whitney can reach "
               "with these seed counts (0.1 with 3 vs 3 seeds: it cannot reject at 0.05). "
               "versions: ⚠ lists packages whose version differs between the runs compared.")
    return Table(name, caption, headers, rows, pairs.copy(), align="lll" + "r" * 5 + "ll")


def bt_table(name: str, bt: pd.DataFrame, opts: Options, block_name: str) -> Table:
    level = int(round(100 * (1 - opts.alpha)))
    best = int(bt.elo.idxmax()) if len(bt) and bt.elo.notna().any() else None
    headers = ["configuration", f"Elo [{level}% CI]", "strength (nats)", "P(beats anchor)"]
    rows = [[r.label, Cell(f"{r.elo:.0f} [{r.elo_low:.0f}, {r.elo_high:.0f}]" if not isnan(r.elo) else "–", i == best),
             f"{r.strength:+.3f}", num(r.p_beats_anchor)] for i, r in bt.iterrows()]
    anchor = bt.anchor.iloc[0] if len(bt) else "–"
    caption = (f"{block_name}: Bradley–Terry ratings (maximum likelihood, not online Elo) from pairwise "
               "gold-reward comparisons on the shared prompts (each pair of configurations plays one battle per "
               f"prompt, scored as the share of seed pairs won, ties ½). Anchor: {anchor} at 1000; 400 points = "
               f"10:1 odds. CIs: bootstrap over prompts ({opts.n_resamples} resamples).")
    return Table(name, caption, headers, rows, bt.copy())


def sensitivity_table(name: str, sens: pd.DataFrame, em: pd.DataFrame, opts: Options, block_name: str) -> Table:
    headers = ["algorithm", "metric", "configs", "best", "best value", "range", "best − median",
               f"within ε={opts.eps:g}", "E[max] for n = 1, 2, …"]
    rows = []
    for r in sens.itertuples():
        e = em[(em.algorithm == r.algorithm) & (em.metric == r.metric)].sort_values("budget")
        rows.append([r.algorithm, r.metric.replace("_", " "), str(r.n_configs), r.best, num(r.best_value),
                     num(r.range), num(r.best_minus_median), num(r.frac_within_eps, 2),
                     ", ".join(num(v) for v in e.expected_max)])
    caption = (f"{block_name}: sensitivity to hyperparameters, on the seed-averaged metric of each configuration. "
               "range = best − worst; within ε: share of configurations within ε of the best; E[max]: expected "
               "best value when n configurations are drawn at random from the grid (without replacement; "
               "unbiased, Tang et al. 2020).")
    return Table(name, caption, headers, rows, sens.copy(), align="ll" + "r" * 6 + "l")


def frontier_table(name: str, fr, opts: Options, block_name: str) -> Table:
    level = int(round(100 * (1 - opts.alpha)))
    tb = fr.table
    headers = ["algorithm", "metric", "Pareto points"] + [f"at KL ≤ {b:g}" for b in fr.budgets] + \
              [f"area [0, {fr.kl_max:g}]"]
    rows = []
    for r in tb.to_dict("records"):
        cells = [r["algorithm"], r["metric"].replace("_", " "), f"{r['n_pareto']}/{r['n_points']}"]
        cells += [pm(r[f"at_{b:g}"], r[f"at_{b:g}_ci_low"], r[f"at_{b:g}_ci_high"]) for b in fr.budgets]
        cells.append(pm(r["area"], r["area_ci_low"], r["area_ci_high"]))
        rows.append(cells)
    caption = (f"{block_name}: reward–KL frontier per algorithm over all its runs and checkpoints. 'at KL ≤ b': "
               "best observed value among the algorithm's evaluations with KL ≤ b nats; area: mean height of the "
               f"frontier above π_SFT's level (gold reward {fr.floors['gold_reward']:.3f}, win rate 0.5) over KL in "
               f"[0, {fr.kl_max:g}] nats. ± half-width of the {level}% CI (bootstrap over seeds, "
               f"{opts.n_resamples} resamples). Pareto sets are chosen on the prompts they are reported on.")
    return Table(name, caption, headers, rows, tb.copy())
