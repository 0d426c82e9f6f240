"""Crash safety, concurrency and determinism, on real `prefbench run` processes with the tiny suite.

Faults are real SIGKILLs, delivered at named points inside the pipeline (harness/core/faults.py), so each
kill lands exactly where intended: while an artifact is being built, mid-training, mid-evaluation
and between writing a run and publishing it.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from harness.analysis import comparison
from harness.execution.results import ResultsStore

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
TINY = str(ROOT / "tests" / "data" / "tiny.yaml")
SWEEP = ["--algorithms", "sft,dpo", "--sweep", "dpo.beta=0.1,0.5", "--seeds", "0"]


def prefbench(results: Path, cache: Path, *extra, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFBENCH_CACHE": str(cache), "PREFBENCH_QUIET": "1", "PREFBENCH_THREADS": "1"}
    env.pop("PREFBENCH_FAULT", None)
    if fault:
        env["PREFBENCH_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "harness.cli", "run", TINY, *SWEEP, "--results", str(results), *extra],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)


def snapshot(results: Path) -> dict:
    """run id -> (metrics without timings, per-sample table) for every visible run."""
    out = {}
    for path in ResultsStore(results).iter_runs("tiny"):
        m = json.loads((path / "metrics.json").read_text())
        m.pop("timing")
        out[path.name] = (m, pd.read_parquet(path / "samples.parquet") if m["status"] == "ok" else None)
    return out


def mtimes(results: Path) -> dict:
    return {p.name: (p / "metrics.json").stat().st_mtime_ns for p in ResultsStore(results).iter_runs("tiny")}


def table(results: Path) -> str:
    return comparison(results, "tiny").to_csv(index=False)


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """The uninterrupted sweep every crashed-and-resumed one must reproduce exactly."""
    base = tmp_path_factory.mktemp("clean")
    r = prefbench(base / "results", base / "cache")
    assert r.returncode == 0, r.stderr
    return base


def assert_same_results(a: Path, b: Path):
    sa, sb = snapshot(a), snapshot(b)
    assert sa.keys() == sb.keys()
    for run_id in sa:
        assert sa[run_id][0] == sb[run_id][0], run_id
        if sa[run_id][1] is not None:
            pd.testing.assert_frame_equal(sa[run_id][1], sb[run_id][1])
    assert table(a) == table(b)


def test_same_config_twice_gives_bit_identical_metrics(clean, tmp_path):
    r = prefbench(tmp_path / "results", tmp_path / "cache")  # fresh cache too: artifacts rebuilt
    assert r.returncode == 0, r.stderr
    assert_same_results(clean / "results", tmp_path / "results")


@pytest.mark.parametrize("fault,shared_cache,extra", [
    ("artifact:reference", False, []),   # while π_SFT is being built
    ("artifact:pairs", False, []),       # while the preference pairs are being built
    ("train:step@3", True, []),          # mid-training of a run
    ("train:step@2", True, ["--checkpoint-every", "1"]),  # mid-training, with a checkpoint to resume from
    ("eval:sampled@3", True, []),        # mid-evaluation (after sampling, before scoring)
    ("run:commit@3", True, []),          # run fully written, not yet published
])
def test_sigkill_then_restart_finishes_exactly_the_missing_runs(clean, tmp_path, fault, shared_cache, extra):
    results = tmp_path / "results"
    cache = tmp_path / "cache"
    if shared_cache:  # artifacts already built: the kill lands in a run
        import shutil

        shutil.copytree(clean / "cache", cache)
    killed = prefbench(results, cache, *extra, fault=fault)
    assert killed.returncode == -9, (killed.returncode, killed.stderr[-2000:])
    # nothing half-written is visible: every visible run is complete
    visible = snapshot(results)
    for run_id, (m, samples) in visible.items():
        assert m["status"] == "ok" and samples is not None and len(samples) == m["metrics"]["n_samples"]
    assert len(visible) < 4
    assert not list(cache.glob("tiny/reference-*")) or shared_cache or fault != "artifact:reference"
    before = mtimes(results)
    resumed = prefbench(results, cache, *extra)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    if extra:  # the killed run continued from its mid-training checkpoint, and still matches exactly
        assert "resumed from the checkpoint at step 1/2" in resumed.stderr, resumed.stderr[-2000:]
        assert not list((results / "tiny" / ".checkpoints").glob("*/meta.json"))
    assert resumed.stderr.count("finished earlier, reused") == len(before)
    assert {k: v for k, v in mtimes(results).items() if k in before} == before  # nothing finished was redone
    assert_same_results(clean / "results", results)
    assert not any((results / "tiny" / ".staging").iterdir())  # leftovers of the dead process were cleared


def test_two_processes_on_one_results_folder(clean, tmp_path):
    import shutil

    results, cache = tmp_path / "results", tmp_path / "cache"
    shutil.copytree(clean / "cache", cache)
    env = {**os.environ, "PREFBENCH_CACHE": str(cache), "PREFBENCH_QUIET": "1", "PREFBENCH_THREADS": "1"}
    cmd = [sys.executable, "-m", "harness.cli", "run", TINY, *SWEEP, "--results", str(results)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-1000:] for o in outs]
    ran = sum(o[1].count(": running") for o in outs)
    assert ran == 4  # each run executed by exactly one of the two processes
    # a run one process found claimed was finished by the other, so the set is complete and exact
    assert_same_results(clean / "results", results)
