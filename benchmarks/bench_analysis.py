#!/usr/bin/env python
"""How long the report takes on a large sweep: 1,000 runs x 500 prompts, 10,000 bootstrap resamples.

Fabricates the run folders (harness.analysis.fake: config.json, metrics.json with two checkpoints,
train_log.jsonl, samples.parquet with 500 prompts) for 250 configurations x 4 seeds: π_SFT, SFT at
9 learning rates and DPO on a 15 β x 16 lr grid. Then times, separately,

- importing the analysis modules (numpy, scipy.stats, pandas, matplotlib: once per process);
- reading the folders (JSON, JSONL and Parquet) into frames and per-prompt arrays;
- the statistics (every bootstrap at 10,000 resamples): per-configuration means, IQMs and
  hierarchical CIs of four metrics, failure rates, length-controlled win rates, all paired
  comparisons the report makes (vs π_SFT and vs the best, two metrics), Bradley–Terry with CIs,
  sensitivity indices, frontier CIs;
- the tables (Markdown, LaTeX, CSV) and the figures (PNG and PDF);

and prints each with its CPU time, then one verdict line per target of issue 15 (statistics at most
10 s and figures at most 10 s of wall time on 2 cores). Statistics and figures use ``--jobs``
processes (the report's default, 2: see harness.analysis.parallel); ``--jobs 1`` keeps to one. The
CPU-seconds of each process are printed too: the largest is about the wall time on idle cores. The
machine's load average is printed at the start and the end: on a machine shared with other work the
wall times grow with the load, the CPU times much less. A benchmark, not a test: it asserts nothing
but that the report was written.

    python benchmarks/bench_analysis.py [--configs-dpo-beta 15] [--configs-dpo-lr 16] [--seeds 4]
                                        [--prompts 500] [--resamples 10000] [--jobs 2] [--no-plots]
                                        [--keep DIR]
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TARGET_S = 10.0  # issue 15: statistics and figures each within 10 s on 2 cores


def fabricate(root: Path, n_beta: int, n_lr: int, n_sft: int, seeds: int, prompts: int) -> int:
    import numpy as np

    from harness.analysis.fake import FakeGroup, write_fake_sweep

    groups = [FakeGroup("reference", {})]
    for lr in np.geomspace(1e-5, 1e-3, n_sft):
        groups.append(FakeGroup("sft", {"lr": float(lr)}, gain=0.05, kl=0.3, length_shift=1.0))
    for b in np.geomspace(0.02, 1.0, n_beta):
        for lr in np.geomspace(1e-5, 1e-3, n_lr):
            groups.append(FakeGroup("dpo", {"beta": float(b), "lr": float(lr)}, gain=0.12 / (1 + 4 * b) + 0.05,
                                    kl=0.4 / b, length_shift=4.0 / (1 + 5 * b)))
    # a few realistic blemishes: diverged runs and one run from another torch
    groups[-1].status = {0: "diverged"}
    groups[-2].versions = {1: {"torch": "2.14.0"}}
    write_fake_sweep(root, groups, seeds=tuple(range(seeds)), n_prompts=prompts, suite="bench", checkpoints=2,
                     train_steps=40)
    return len(groups) * seeds


class Clock:
    """Wall time, and CPU time of this process plus the worker processes it waited for."""

    def __enter__(self):
        self.t, self.c = time.perf_counter(), self._cpu()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.t, self._cpu() - self.c

    @staticmethod
    def _cpu() -> float:
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.1f} / {five:.1f} / {fifteen:.1f} (1 / 5 / 15 min)"


def verdict(name: str, c: Clock, cpus: int) -> str:
    ok = "PASS" if c.wall <= TARGET_S else "FAIL"
    return (f"VERDICT {name}: {c.wall:.1f} s wall, target <= {TARGET_S:g} s on 2 cores: {ok} ({cpus} CPUs here, "
            f"{c.cpu:.1f} CPU-seconds, load average {os.getloadavg()[0]:.1f})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs-dpo-beta", type=int, default=15)
    ap.add_argument("--configs-dpo-lr", type=int, default=16)
    ap.add_argument("--configs-sft", type=int, default=9)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--prompts", type=int, default=500)
    ap.add_argument("--resamples", type=int, default=10000)
    ap.add_argument("--jobs", type=int, default=None,
                    help="processes for statistics and figures (default: the report's, 2; 1: one process)")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--keep", default=None, help="fabricate into (and reuse) this folder instead of a temp dir")
    args = ap.parse_args()

    print(f"load average at start: {load()}")
    with Clock() as imports:
        import scipy.stats  # noqa: F401  (the statistics' first call would import it)

        from harness.analysis import Options, _figures, _tables, analyse, collect_blocks, reportmd
        from harness.analysis import compare, frontier, plots, sensitivity, summary  # noqa: F401
        from harness.analysis import parallel
        from harness.analysis.parallel import workers

    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-analysis-"))
    results, out = tmp / "results", tmp / "report"
    try:
        t0 = time.perf_counter()
        if not (results / "bench").is_dir():
            n_runs = fabricate(results, args.configs_dpo_beta, args.configs_dpo_lr, args.configs_sft, args.seeds,
                               args.prompts)
            print(f"fabricated {n_runs} runs x {args.prompts} prompts in {time.perf_counter() - t0:.1f} s")
        opts = Options(n_resamples=args.resamples, jobs=args.jobs)
        try:
            cpus = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cpus = os.cpu_count() or 1
        import numpy as np

        blas = next((v for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS") if os.environ.get(v)),
                    None)
        print(f"machine: {platform.processor() or platform.machine()}, {cpus} CPUs for this process, python "
              f"{platform.python_version()}, numpy {np.__version__}; BLAS threads: "
              f"{f'{blas}={os.environ[blas]}' if blas else 'library default'}; processes: {workers(args.jobs)}")

        t = {"imports": imports}
        with Clock() as t["read run folders"]:
            blocks = collect_blocks(results)
        block = blocks[0]
        print(f"{len(block.runs)} runs, {len(block.groups)} configurations, {len(block.prompts)} prompts, "
              f"{args.resamples} resamples")
        with Clock() as t["statistics"]:
            res = analyse(block, opts)
        out.mkdir(parents=True, exist_ok=True)
        with Clock() as t["tables"]:
            _tables(block, res, opts, out / "tables", "")
        res["figs"] = {}
        if not args.no_plots:
            with Clock() as t["figures (PNG + PDF)"]:
                _figures(block, res, replace(opts), out / "figures", "")
        with Clock() as t["report.md"]:
            (out / "report.md").write_text(reportmd.render(blocks, [res], opts, out, results))
        print()
        print(f"  {'':<22} {'wall':>8} {'CPU':>8}")
        for k, c in t.items():
            print(f"  {k:<22} {c.wall:7.2f}s {c.cpu:7.2f}s")
        for k, v in res["timings"].items():
            print(f"    statistics: {k:<38} {v:7.2f}s")
        print(f"  {'total':<22} {sum(c.wall for c in t.values()):7.2f}s {sum(c.cpu for c in t.values()):7.2f}s")
        print(f"\nLC bootstrap method: {res['gs'].lc_method}; pairs compared: {len(res['pairs']) // 2} per metric; "
              f"Bradley–Terry players: {len(res['bt'])}; figures: {len(res['figs'])}")
        print(f"settings: {len(block.runs)} runs x {len(block.prompts)} prompts x {args.resamples} resamples, "
              f"{cpus} CPUs, {workers(args.jobs)} processes (--jobs)")
        tm = res["timings"]
        bg = [tm.get("background CPU: lc", 0.0), tm.get("background CPU: bradley_terry_frontier", 0.0)]
        if any(bg):
            print(f"statistics: CPU-seconds in this process {t['statistics'].cpu - sum(bg):.1f}, in the background "
                  f"process {' + '.join(f'{c:.1f}' for c in bg)} (length-controlled win rates; Bradley–Terry and "
                  f"frontier), each overlapping this process's work")
        else:
            print(f"statistics: CPU-seconds {t['statistics'].cpu:.1f}, all in this process")
        if not args.no_plots:
            per = sorted(parallel.last_cpu.values(), reverse=True)
            print(f"figures: CPU-seconds per drawing process {', '.join(f'{c:.1f}' for c in per)} (the largest is "
                  f"about the wall time when each process has a core of its own)")
        print(f"load average at end: {load()}")
        print(verdict("statistics", t["statistics"], cpus))
        if not args.no_plots:
            print(verdict("figures", t["figures (PNG + PDF)"], cpus))
        assert (out / "report.md").is_file()
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
