#!/usr/bin/env python
"""How long the report takes on a large sweep: 1,000 runs x 500 prompts, 10,000 bootstrap resamples.

Fabricates the run folders (harness.analysis.fake: config.json, metrics.json with two checkpoints,
train_log.jsonl, samples.parquet with 500 prompts) for 250 configurations x 4 seeds: π_SFT, SFT at
9 learning rates and DPO on a 15 β x 16 lr grid. Then times, separately,

- reading the folders (JSON, JSONL and Parquet) into frames and per-prompt arrays;
- the statistics (every bootstrap at 10,000 resamples): per-configuration means, IQMs and
  hierarchical CIs of four metrics, failure rates, length-controlled win rates, all paired
  comparisons the report makes (vs π_SFT and vs the best, two metrics), Bradley–Terry with CIs,
  sensitivity indices, frontier CIs;
- the tables (Markdown, LaTeX, CSV) and the figures (PNG and PDF);

and prints each. A benchmark, not a test: it asserts nothing but that the report was written.

    python benchmarks/bench_analysis.py [--configs-dpo-beta 15] [--configs-dpo-lr 16] [--seeds 4]
                                        [--prompts 500] [--resamples 10000] [--no-plots] [--keep DIR]
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs-dpo-beta", type=int, default=15)
    ap.add_argument("--configs-dpo-lr", type=int, default=16)
    ap.add_argument("--configs-sft", type=int, default=9)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--prompts", type=int, default=500)
    ap.add_argument("--resamples", type=int, default=10000)
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--keep", default=None, help="fabricate into (and reuse) this folder instead of a temp dir")
    args = ap.parse_args()

    from harness.analysis import Options, _figures, _tables, analyse, collect_blocks, reportmd

    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-analysis-"))
    results, out = tmp / "results", tmp / "report"
    try:
        t0 = time.perf_counter()
        if not (results / "bench").is_dir():
            n_runs = fabricate(results, args.configs_dpo_beta, args.configs_dpo_lr, args.configs_sft, args.seeds,
                               args.prompts)
            print(f"fabricated {n_runs} runs x {args.prompts} prompts in {time.perf_counter() - t0:.1f} s")
        opts = Options(n_resamples=args.resamples)
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.1f}; numpy/BLAS threads as configured")

        t = {}
        t0 = time.perf_counter()
        blocks = collect_blocks(results)
        t["read run folders"] = time.perf_counter() - t0
        block = blocks[0]
        print(f"{len(block.runs)} runs, {len(block.groups)} configurations, {len(block.prompts)} prompts, "
              f"{args.resamples} resamples")
        t0, c0 = time.perf_counter(), time.process_time()
        res = analyse(block, opts)
        t["statistics"] = time.perf_counter() - t0
        cpu_stats = time.process_time() - c0
        out.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        _tables(block, res, opts, out / "tables", "")
        t["tables"] = time.perf_counter() - t0
        res["figs"] = {}
        if not args.no_plots:
            t0 = time.perf_counter()
            _figures(block, res, replace(opts), out / "figures", "")
            t["figures (PNG + PDF)"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        (out / "report.md").write_text(reportmd.render(blocks, [res], opts, out, results))
        t["report.md"] = time.perf_counter() - t0
        print()
        for k, v in t.items():
            print(f"  {k:<22} {v:7.2f} s")
        for k, v in res["timings"].items():
            print(f"    statistics: {k:<20} {v:7.2f} s")
        print(f"  {'total':<22} {sum(t.values()):7.2f} s")
        print(f"\nLC bootstrap method: {res['gs'].lc_method}; pairs compared: {len(res['pairs']) // 2} per metric; "
              f"Bradley–Terry players: {len(res['bt'])}")
        print(f"STATISTICS {len(block.runs)} runs x {len(block.prompts)} prompts x {args.resamples} resamples: "
              f"{t['statistics']:.1f} s wall, {cpu_stats:.1f} s CPU (all threads); reading "
              f"{t['read run folders']:.1f} s; load average now {os.getloadavg()[0]:.1f}")
        assert (out / "report.md").is_file()
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
