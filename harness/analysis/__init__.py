"""The report folder: statistics, tables and figures over a results folder.

``build_report(results_root, suite, out_dir)`` reads the run folders (JSON, JSONL and Parquet only; no
torch), and writes ``out_dir/report.md`` with ``tables/`` (Markdown, LaTeX, CSV) and ``figures/``
(PNG, PDF). Each (suite, preset) is analysed on its own: its runs share the evaluation prompts.

Modules: ``collect`` (run folders -> frames and per-prompt arrays), ``summary`` (per configuration,
over seeds), ``compare`` (pairs, Bradley–Terry, provenance), ``sensitivity``, ``frontier``,
``tables``, ``plots``, ``reportmd``, ``parallel`` (forked processes for statistics and figures,
``Options.jobs``); ``fake`` fabricates run folders for tests and benchmarks.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path

from harness.analysis.collect import REFERENCE, Block, collect_blocks
from harness.analysis.options import Options

__all__ = ["build_report", "analyse", "collect_blocks", "comparison", "headline", "Options"]


def headline_of(block: Block, opts: Options, gs=None):
    """The headline table of one block (see :func:`harness.analysis.tables.headline_table`). With
    ``opts.select_split`` the best values are chosen on one half of the prompts and every number is
    reported on the other."""
    from harness.analysis import summary, tables as T
    from harness.analysis.collect import restrict, split_halves

    name = block.file_prefix.replace("-", "_") + "_headline"
    if opts.select_split:
        sel, rep = split_halves(block, opts.seed)
        gs_sel = summary.group_stats(restrict(block, sel), opts)
        gs_rep = summary.group_stats(restrict(block, rep), opts)
        return T.headline_table(name, gs_rep.table, opts, block.name + " (reported half)", select=gs_sel.table)
    gs = gs or summary.group_stats(block, opts)
    return T.headline_table(name, gs.table, opts, block.name)


def block_title(block: Block, differs: list[str] | None = None) -> str:
    """One line naming a block by everything that makes its runs comparable."""
    i = block.identity
    import json

    try:
        arts = json.loads(i.get("artifacts_json") or "{}")
    except ValueError:
        arts = {}
    judge = i.get("judge_json", "")
    try:
        j = json.loads(judge)
        judge = j.get("kind", judge) if isinstance(j, dict) else judge
    except ValueError:
        pass
    parts = [f"π_SFT {arts.get('reference', '?')[:8]}", f"pairs {arts.get('pairs', '?')[:8]}",
             f"baseline {arts.get('baseline', '?')[:8]}", f"sampler {i.get('sampler') or '?'}", f"judge {judge or '?'}"]
    note = f" (differs from the other {block.suite}/{block.preset} block(s) in: {', '.join(differs)})" if differs else ""
    return f"{block.name}: " + ", ".join(parts) + note


def comparison(results_root: Path, suite: str | None = None, run_ids: set[str] | None = None,
               opts: Options | None = None, **overrides):
    """The headline numbers as one frame at full precision: one row per configuration, with the block
    (``block`` key, suite, suite_version, preset, sampler) it belongs to."""
    import pandas as pd

    opts = replace(opts or Options(), **overrides)
    frames = []
    for b in collect_blocks(Path(results_root), suite, run_ids):
        csv = headline_of(b, opts).csv
        ident = {"block": b.key, **{k: b.identity.get(k) for k in ("suite", "suite_version", "preset", "sampler")}}
        frames.append(pd.concat([pd.DataFrame([ident] * len(csv), index=csv.index), csv], axis=1))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def headline(results_root: Path, suite: str | None = None, run_ids: set[str] | None = None, fmt: str = "md",
             opts: Options | None = None, **overrides) -> str:
    """The comparison table(s) over finished runs, as Markdown, LaTeX or CSV: one block per comparable
    configuration, never one row over runs that are not comparable. The run-end table of ``prefbench
    run`` and ``prefbench report --format`` both come from here."""
    from harness.analysis import tables as T
    from harness.analysis.collect import identity_differences

    opts = replace(opts or Options(), **overrides)
    if fmt == "csv":
        return comparison(results_root, suite, run_ids, opts).to_csv(index=False)
    blocks = collect_blocks(Path(results_root), suite, run_ids)
    if not blocks:
        return "(no finished runs)\n"
    differs = identity_differences(blocks)
    parts = []
    for b in blocks:
        tab = headline_of(b, opts)
        title = block_title(b, differs.get(b.key))
        if fmt == "latex":
            parts.append(f"% {title}\n" + T.to_latex(tab))
        else:
            parts.append(f"**{title}**\n\n" + T.to_markdown(tab) + "\n" + tab.caption + "\n")
    return "\n".join(parts)


def analyse(block: Block, opts: Options) -> dict:
    """Every statistic of one block (no files written). With ``opts.jobs`` > 1 two independent parts run
    in a forked process while this one computes the rest: the length-controlled win rates beside the
    hierarchical bootstraps, then Bradley–Terry and the frontier beside the paired comparisons. The
    numbers are those of a single process, bit for bit."""
    from harness.analysis import compare, frontier, sensitivity, summary
    from harness.analysis.parallel import Background

    timings = {}
    t0 = time.perf_counter()
    lc = Background(lambda: summary.lc_stats(block, opts), opts.jobs)
    gs = summary.group_stats(block, opts, lc=lc)
    timings["summary"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    side = Background(lambda: (compare.bradley_terry_ratings(block, gs, opts),
                               frontier.frontier_analysis(block, gs, opts)), opts.jobs)
    pairs = compare.compare_pairs(block, gs, opts)
    timings["pairs"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    sens, em = sensitivity.sensitivity_tables(block, gs, opts)
    timings["sensitivity"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    bt, fr = side()
    timings["bradley_terry_frontier (wait)"] = time.perf_counter() - t0
    timings["background CPU: lc"], timings["background CPU: bradley_terry_frontier"] = lc.cpu, side.cpu
    trained = [a for a in dict.fromkeys(block.groups.algorithm) if a != REFERENCE]
    return {"gs": gs, "pairs": pairs, "bt": bt, "sensitivity": sens, "expected_max": em, "frontier": fr,
            "swept": sensitivity.swept_algorithms(block, gs), "trained": trained,
            "provenance": compare.provenance(block), "timings": timings}


def _tables(block: Block, r: dict, opts: Options, folder: Path, prefix: str) -> None:
    from harness.analysis import tables as T

    name = block.name
    tabs = {"headline": _headline_renamed(block, r, opts, prefix + "headline"),
            "summary": T.summary_table(prefix + "summary", r["gs"].table, r["pairs"], r["bt"], opts, name),
            "failures": T.failures_table(prefix + "failures", r["gs"].table, opts, name),
            "over_seeds": T.over_seeds_table(prefix + "over_seeds", r["gs"].table, name),
            "seeds": T.seeds_table(prefix + "seeds", r["gs"].seeds, name)}
    if r["pairs"] is not None and not r["pairs"].empty:
        tabs["pairs"] = T.pairs_table(prefix + "pairs", r["pairs"], opts, name)
    if r["bt"] is not None and not r["bt"].empty:
        tabs["bradley_terry"] = T.bt_table(prefix + "bradley_terry", r["bt"], opts, name)
    if not r["sensitivity"].empty:
        tabs["sensitivity"] = T.sensitivity_table(prefix + "sensitivity", r["sensitivity"], r["expected_max"], opts,
                                                  name)
    if not r["frontier"].table.empty:
        tabs["frontier"] = T.frontier_table(prefix + "frontier", r["frontier"], opts, name)
    paths = {k: T.write(t, folder) for k, t in tabs.items()}
    p = folder / f"{prefix}frontier_points.csv"
    r["frontier"].points.to_csv(p, index=False)
    paths["frontier_points"] = [p]
    if not r["expected_max"].empty:
        p = folder / f"{prefix}expected_max.csv"
        r["expected_max"].to_csv(p, index=False)
        paths["expected_max"] = [p]
    r["tables"], r["paths"] = tabs, paths


def _headline_renamed(block: Block, r: dict, opts: Options, name: str):
    tab = headline_of(block, opts, r["gs"])
    tab.name = name
    return tab


# relative drawing cost of each figure (measured on the 1,000-run benchmark), to hand the slow ones
# out first when several processes draw
_FIGURE_COST = {"frontier": 4, "frontier_sqrt_kl": 4, "seed_stability": 4, "sensitivity": 4, "expected_max": 1,
                "curves": 5, "bradley_terry": 2}


def _figures(block: Block, r: dict, opts: Options, folder: Path, prefix: str) -> None:
    from harness.analysis import plots as P
    from harness.analysis.parallel import run_tasks

    folder.mkdir(parents=True, exist_ok=True)
    fr, gs = r["frontier"], r["gs"]
    tasks = []  # (names, cost, draw): draw() returns one entry per name
    if len(fr.points):
        tasks.append((["frontier"], _FIGURE_COST["frontier"],
                      lambda: [P.plot_frontier(block, fr, opts, folder / f"{prefix}frontier")]))
        if opts.sqrt_kl:
            tasks.append((["frontier_sqrt_kl"], _FIGURE_COST["frontier_sqrt_kl"],
                          lambda: [P.plot_frontier(block, fr, opts, folder / f"{prefix}frontier_sqrt_kl", sqrt=True)]))
    tasks.append((["seed_stability"], _FIGURE_COST["seed_stability"],
                  lambda: [P.plot_seed_stability(block, gs, fr, opts, folder / f"{prefix}seed_stability")]))
    for algo in r["swept"]:
        tasks.append(([f"sensitivity_{algo}"], _FIGURE_COST["sensitivity"],
                      lambda algo=algo: [P.plot_sensitivity(block, gs, fr, algo, opts,
                                                            folder / f"{prefix}sensitivity_{algo}")]))
    tasks.append((["expected_max"], _FIGURE_COST["expected_max"],
                  lambda: [P.plot_expected_max(block, r["expected_max"], opts, folder / f"{prefix}expected_max")]))
    for algo in r["trained"]:
        # one task per algorithm for both figures that read its training logs (read once, in one process);
        # the gradient-weight lens is None for algorithms that log no gradient weights
        tasks.append(([f"training_curves_{algo}", f"gradient_weight_{algo}"], _FIGURE_COST["curves"],
                      lambda algo=algo: [
                          P.plot_training_curves(block, gs, algo, opts, folder / f"{prefix}training_curves_{algo}"),
                          P.plot_gradient_weight(block, gs, algo, opts, folder / f"{prefix}gradient_weight_{algo}")]))
    tasks.append((["bradley_terry"], _FIGURE_COST["bradley_terry"],
                  lambda: [P.plot_bradley_terry(block, r["bt"], opts, folder / f"{prefix}bradley_terry")]))
    drawn = run_tasks([(cost, draw) for _, cost, draw in tasks], opts.jobs)
    figs = {}
    for (names, _, _), files in zip(tasks, drawn):
        figs.update(zip(names, files))
    order = ["frontier", "frontier_sqrt_kl", "seed_stability", *(f"sensitivity_{a}" for a in r["swept"]),
             "expected_max", *(f"training_curves_{a}" for a in r["trained"]), "bradley_terry",
             *(f"gradient_weight_{a}" for a in r["trained"])]
    r["figs"] = {k: figs[k] for k in order if figs.get(k)}


def build_report(results_root: Path, suite: str | None, out_dir: Path, opts: Options | None = None,
                 **overrides) -> Path:
    """Write the report folder for every (suite, preset) under ``results_root`` (or one suite).

    ``overrides`` set fields of :class:`Options` (e.g. ``kl_bound=50.0``, ``n_resamples=10000``).
    Returns the path of ``report.md``. Files written: report.md; tables/{summary, failures, over_seeds,
    seeds, pairs, bradley_terry, sensitivity, frontier}.{md,tex,csv}, tables/frontier_points.csv,
    tables/expected_max.csv; figures/{frontier, frontier_sqrt_kl, seed_stability,
    sensitivity_<algorithm>, expected_max, training_curves_<algorithm>, bradley_terry}.{png,pdf}
    (with a ``<suite>-<preset>_`` prefix when the results hold more than one block). Tables and
    figures that have nothing to show (e.g. sensitivity without a sweep) are left out.
    """
    opts = replace(opts or Options(), **overrides)
    results_root, out_dir = Path(results_root), Path(out_dir)
    blocks = collect_blocks(results_root, suite)
    if not blocks:
        raise ValueError(f"no finished runs in {results_root}" + (f" for suite {suite}" if suite else ""))
    out_dir.mkdir(parents=True, exist_ok=True)
    for sub in ("tables", "figures"):  # a rebuilt report holds no stale files
        if (out_dir / sub).is_dir():
            shutil.rmtree(out_dir / sub)
    results = []
    for b in blocks:
        prefix = f"{b.file_prefix}_" if len(blocks) > 1 else ""
        r = analyse(b, opts)
        _tables(b, r, opts, out_dir / "tables", prefix)
        r["figs"] = {}
        if opts.plots:
            _figures(b, r, opts, out_dir / "figures", prefix)
        results.append(r)
    from harness.analysis import reportmd

    path = out_dir / "report.md"
    path.write_text(reportmd.render(blocks, results, opts, out_dir, results_root))
    return path
