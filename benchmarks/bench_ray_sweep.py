#!/usr/bin/env python
"""The same sweep through ``--executor local`` and ``--executor ray`` on this machine: wall time of each,
and the report files compared byte for byte.

The sweep (default: the test suite tests/data/tiny.yaml, smoke preset): SFT and DPO at two β, seeds 0
and 1, plus the π_SFT reference row per seed: 8 runs. Suite artifacts are built once beforehand into a
shared cache (a warm-up command, timed separately), so both timings are the runs alone, with the fixed
costs each executor pays included: the local executor's zygote; for Ray, starting a local cluster
(``ray.init`` with every CPU of the machine) and one zygote per Ray worker.

Each run uses ``PREFBENCH_THREADS`` torch threads (default 1), the same in every command so the run
folders can be compared byte for byte: the local executor computes the runs one after another, the Ray
executor ``CPUS // cpus-per-run`` at a time. A third command, local with every CPU as torch threads, is
timed too (``--also-local-threads``; 0: skip): the fair single-process rival.

    python benchmarks/bench_ray_sweep.py [--suite tests/data/tiny.yaml] [--preset smoke] [--threads 1]
                                         [--cpus-per-run 1] [--also-local-threads 2] [--keep DIR]
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SWEEP = ["--algorithms", "sft,dpo", "--seeds", "0,1", "--sweep", "dpo.beta=0.1,0.5", "--set", "dpo.batch_size=2",
         "--set", "dpo.epochs=3", "--set", "dpo.lr=0.002"]


def prefbench(args: list[str], cache: Path, threads: int) -> tuple[float, subprocess.CompletedProcess]:
    env = {**os.environ, "PREFBENCH_CACHE": str(cache), "PREFBENCH_QUIET": "1", "PREFBENCH_THREADS": str(threads),
           "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=REPO, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"command failed ({p.returncode}): prefbench {' '.join(args)}\n{p.stderr[-3000:]}")
    return dt, p


def files(folder: Path, blank_timing: bool = False) -> dict[str, bytes]:
    out = {}
    for f in sorted(folder.rglob("*")):
        rel = f.relative_to(folder)
        if not f.is_file() or any(part.startswith((".", "_")) for part in rel.parts):
            continue
        raw = f.read_bytes()
        if blank_timing and f.name == "metrics.json":
            raw = re.sub(rb'"timing": \{[^{}]*\}', b'"timing": {}', raw)
        out[str(rel)] = raw
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default=str(REPO / "tests" / "data" / "tiny.yaml"))
    ap.add_argument("--preset", default="smoke")
    ap.add_argument("--threads", type=int, default=1, help="PREFBENCH_THREADS of every run (default 1)")
    ap.add_argument("--cpus-per-run", type=float, default=1.0)
    ap.add_argument("--also-local-threads", type=int, default=os.cpu_count() or 1,
                    help="also time the local executor with this many torch threads (0: skip)")
    ap.add_argument("--keep", default=None, help="keep the results folders here")
    a = ap.parse_args()
    work = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="bench-ray-"))
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "cache"
    base = ["run", a.suite, "--preset", a.preset, *SWEEP]
    import ray

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, ray {ray.__version__}; load average at start {os.getloadavg()[0]:.2f}")
    print(f"sweep: prefbench {' '.join(base[:1] + [Path(a.suite).name] + base[2:])}")
    print(f"every run: PREFBENCH_THREADS={a.threads}; ray: --cpus-per-run {a.cpus_per_run:g}")
    t, _ = prefbench(["run", a.suite, "--preset", a.preset, "--algorithms", "dpo", "--seeds", "99",
                      "--results", str(work / "warmup")], cache, a.threads)
    print(f"warm-up (suite artifacts built once, shared by every command below): {t:.1f} s")
    t_local, p_local = prefbench([*base, "--results", str(work / "local")], cache, a.threads)
    t_ray, p_ray = prefbench([*base, "--results", str(work / "ray"), "--executor", "ray", "--cpus-per-run",
                              f"{a.cpus_per_run:g}"], cache, a.threads)
    n_runs = p_local.stderr.count(": done in ")
    assert n_runs == p_ray.stderr.count(": done in "), "the two commands computed different numbers of runs"
    print(f"runs computed: {n_runs} by each executor")
    rows = [("local", a.threads, t_local), ("ray", a.threads, t_ray)]
    if a.also_local_threads:
        t_wide, _ = prefbench([*base, "--results", str(work / "local-wide")], cache, a.also_local_threads)
        rows.append(("local", a.also_local_threads, t_wide))
    print("\n| executor | torch threads per run | wall time (s) | vs local, same threads |")
    print("|---|---|---|---|")
    for name, threads, t in rows:
        print(f"| {name} | {threads} | {t:.1f} | {t / t_local:.2f}x |")
    reports = {}
    for name in ("local", "ray"):
        _, _ = prefbench(["report", "--results", str(work / name), "--dir", str(work / f"report-{name}")], cache,
                         a.threads)
        # report.md names the results folder it was built from: the only bytes allowed to differ
        reports[name] = {k: v.replace(str(work / name).encode(), b"RESULTS")
                         for k, v in files(work / f"report-{name}").items()}
    runs_same = files(work / "local", blank_timing=True) == files(work / "ray", blank_timing=True)
    same = reports["local"] == reports["ray"]
    differ = sorted(k for k in set(reports["local"]) | set(reports["ray"])
                    if reports["local"].get(k) != reports["ray"].get(k))
    print(f"\nclosing table printed by the two commands identical: {p_local.stdout == p_ray.stdout}")
    print(f"run folders (config.json, metrics.json without timing, samples.parquet, train_log.jsonl) identical: "
          f"{runs_same}")
    print(f"report files (prefbench report --dir): {len(reports['local'])} files, byte-identical: {same}"
          + (f"; differing: {', '.join(differ)}" if differ else ""))
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
