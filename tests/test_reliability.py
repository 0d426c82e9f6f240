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



# A sweep of the shape of issue #19 (two algorithms, a swept β, three seeds: 12 runs; DPO with 8 steps
# and a mid-run checkpoint every 2), on the tiny suite.
KILLED_SWEEP = ["--algorithms", "sft,dpo", "--sweep", "dpo.beta=0.1,0.3", "--seeds", "0,1,2", "--set", "dpo.batch_size=2",
                "--set", "dpo.lr=0.002", "--checkpoint-every", "2"]
# named points and how far into an invocation's work a kill there may land (the n-th time it is reached)
FAULT_POINTS = [("train:step", 6), ("eval:sampled", 2), ("run:commit", 2)]


def test_sweep_sigkilled_at_ten_random_moments_then_finished_matches_the_uninterrupted_one(tmp_path):
    """Issue #19: ten SIGKILLs at random moments (alternately at a random named point inside the work and
    asynchronously, a random delay after one of the next runs started), then a last invocation that
    finishes: every run folder and the report are byte-identical to those of one uninterrupted sweep
    (metrics.json without its ``timing`` values, the only run-dependent field)."""
    import random
    import re
    import signal
    import time

    from harness.analysis import headline

    def start(results: Path, fault: str | None = None) -> subprocess.Popen:
        env = {**os.environ, "PREFBENCH_CACHE": str(tmp_path / "cache"), "PREFBENCH_QUIET": "1", "PREFBENCH_THREADS": "1"}
        env.pop("PREFBENCH_FAULT", None)
        if fault:
            env["PREFBENCH_FAULT"] = fault
        return subprocess.Popen([sys.executable, "-m", "harness.cli", "run", TINY, *KILLED_SWEEP, "--results", str(results)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)

    def files(results: Path) -> dict:
        out = {}
        for run in ResultsStore(results).iter_runs("tiny"):
            for name in ("config.json", "metrics.json", "samples.parquet", "train_log.jsonl"):
                raw = (run / name).read_bytes()
                out[run.name, name] = re.sub(rb'"timing": \{[^{}]*\}', b'"timing": {}', raw) if name == "metrics.json" else raw
        return out

    clean = start(tmp_path / "clean")
    err = clean.communicate(timeout=900)[1]
    assert clean.returncode == 0, err[-3000:]
    n_runs = err.count(": running")
    rng = random.Random(19)
    killed = tmp_path / "killed"
    kills, resumed, attempts, log = 0, 0, 0, []
    while kills < 10:
        attempts += 1
        assert attempts <= 20, f"only {kills} kills landed before the sweep finished: {log}"
        # while more runs are left than kills to come, a kill may let runs finish; after that it lands
        # before the invocation's first commit, so that every one of the ten kills lands in work
        slack = n_runs - len(list(ResultsStore(killed).iter_runs("tiny"))) > 10 - kills
        if attempts % 2:  # at a random named point: the n-th time this invocation reaches it
            point, most = rng.choice(FAULT_POINTS)
            moment = f"{point}@{rng.randint(1, most)}" if slack else "run:commit@1"
            if attempts == 1:  # mid-DPO (after the SFT steps), past a checkpoint: the resume path is taken
                moment = "train:step@6"
            p = start(killed, moment)
            err = p.communicate(timeout=900)[1]
        else:  # asynchronously: a random delay after the first or second run this invocation computes started
            target, delay = (rng.randint(1, 2), rng.uniform(0.0, 1.5)) if slack else (1, rng.uniform(0.0, 1.0))
            moment, p, seen, lines = f"{delay:.2f} s after run {target}", start(killed), 0, []
            for line in p.stderr:
                lines.append(line)
                seen += ": running" in line
                if seen == target:
                    time.sleep(delay)
                    p.send_signal(signal.SIGKILL)
                    break
            err = "".join(lines) + p.communicate(timeout=900)[1]
        resumed += "resumed from the checkpoint" in err
        done = list(ResultsStore(killed).iter_runs("tiny"))
        log.append((moment, p.returncode, len(done)))
        assert p.returncode in (0, -9), err[-3000:]
        kills += p.returncode == -9
        for run in done:  # nothing half-written is ever visible: every visible run is complete
            m = json.loads((run / "metrics.json").read_text())
            assert m["status"] == "ok" and len(pd.read_parquet(run / "samples.parquet")) == m["metrics"]["n_samples"]
    final = start(killed)
    err = final.communicate(timeout=900)[1]
    assert final.returncode == 0, err[-3000:]
    resumed += "resumed from the checkpoint" in err
    assert resumed >= 1, log  # some restart continued a killed run from its mid-run checkpoint
    assert not list((killed / "tiny" / ".checkpoints").glob("*/meta.json"))
    assert not any((killed / "tiny" / ".staging").iterdir())
    a, b = files(tmp_path / "clean"), files(killed)
    assert len(a) == 4 * n_runs and a.keys() == b.keys(), log
    for key in a:
        assert a[key] == b[key], (key, log)
    for fmt in ("md", "csv"):  # the report
        assert headline(tmp_path / "clean", "tiny", None, fmt, n_resamples=1000) == headline(killed, "tiny", None, fmt,
                                                                                               n_resamples=1000)


# ----------------------------------------------------------------------------- clean stops on signals
# Ctrl-C and SIGTERM reach the prefbench process the user started (a fault point sends the real signal to
# it, at an exact place); it forwards the stop to the worker, which saves a checkpoint at its next step.
@pytest.mark.parametrize("fault, code, saved", [
    ("train:step@1:TERM", 143, "training state was saved at step 1"),  # a cluster's pre-emption mid-training
    ("pretrain:step@40:INT", 130, "state was saved at step 40"),       # Ctrl-C while π_SFT pre-trains
    ("eval:sampled@1:TERM", 143, "stopped by SIGTERM"),               # nothing to save: it starts again
])
def test_a_signal_stops_cleanly_and_the_next_invocation_resumes_to_identical_results(clean, tmp_path, fault,
                                                                                      code, saved):
    first = prefbench(tmp_path / "results", tmp_path / "cache", fault=fault)
    assert first.returncode == code, first.stderr[-3000:]
    assert saved in first.stderr, first.stderr[-3000:]
    assert "run the same command again to continue" in first.stderr
    assert "Traceback" not in first.stderr
    assert "Loading weights" not in first.stderr  # library loading bars stay hidden without --verbose
    stopped = snapshot(tmp_path / "results")
    assert all(m["status"] == "ok" for m, _ in stopped.values())  # nothing half-done was published
    assert len(stopped) < len(snapshot(clean / "results"))
    second = prefbench(tmp_path / "results", tmp_path / "cache")
    assert second.returncode == 0, second.stderr[-3000:]
    if fault.startswith("train"):
        assert "resumed from the checkpoint at step 1/" in second.stderr
    if fault.startswith("pretrain"):
        assert "π_SFT pre-training resumed from its checkpoint at step 40/" in second.stderr
    assert_same_results(clean / "results", tmp_path / "results")
