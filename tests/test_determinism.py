"""Bit-identical means independent of what the process did before (issue #19).

A run's numbers must not depend on what ran before it in its process: other runs, runs reused from
an earlier invocation, or an invocation killed and restarted. ``prefbench run`` therefore computes
every job in a fresh worker process forked from a zygote that only imports (harness/execution/runner.py),
each worker applying the same preamble (threads, environment, seeded global RNGs).

The fast tests check that property of the workers directly: every worker starts in the same state as a
fresh interpreter given the same preamble, whatever the worker before it changed. The slow test runs
one run of the tiny suite four ways (alone; after five other runs; after a SIGKILL and a restart from
step 0; after a SIGKILL and a restart from a mid-run checkpoint) and asserts byte-identical
metrics.json, samples.parquet, train_log.jsonl and config.json. The only field excluded is
metrics.json's ``timing`` (wall-clock seconds, which legitimately differ from run to run).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.execution.runner import Workers

ROOT = Path(__file__).resolve().parent.parent
TINY = str(ROOT / "tests" / "data" / "tiny.yaml")
STATE = ("harness.core.env:process_state", [])
# what earlier work in a process may leave behind: thread count, global RNG states, float modes, env
MESS = [("torch:set_num_threads", [1]), ("torch:manual_seed", [123]), ("random:seed", [7]),
        ("numpy.random:seed", [7]), ("torch:set_flush_denormal", [True]),
        ("torch:set_float32_matmul_precision", ["medium"]), ("os:environ.__setitem__", ["OMP_NUM_THREADS", "1"])]


@pytest.fixture(scope="module")
def workers():
    old = os.environ.get("PREFBENCH_THREADS")
    os.environ["PREFBENCH_THREADS"] = "2"  # the preamble applies it; MESS sets 1
    w = Workers()
    yield w
    w.close()
    if old is None:
        os.environ.pop("PREFBENCH_THREADS", None)
    else:
        os.environ["PREFBENCH_THREADS"] = old


def _call(workers, *calls, seed=5):
    code, result = workers.run({"kind": "call", "calls": list(calls), "seed": seed}, "test")
    assert code == 0, code
    return result["values"]


def test_every_worker_starts_in_the_state_of_a_fresh_process(workers):
    first, *_, changed = _call(workers, STATE, *MESS, STATE)
    assert changed != first  # the worker did change its process state...
    (second,) = _call(workers, STATE)
    assert second == first  # ...and the next worker does not see it
    assert first["torch_threads"] == 2 and not first["flush_denormal"]
    # a worker starts like a fresh interpreter given the same preamble (threads, seeded global RNGs)
    env = {k: v for k, v in os.environ.items() if k != "PREFBENCH_FAULT"}
    env.setdefault("PYTHONHASHSEED", "0")
    code = ("import json; from harness.core import env, seeds; env.apply_threads(); seeds.seed_globals(5); "
            "print(json.dumps(env.process_state()))")
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert json.loads(fresh.stdout.splitlines()[-1]) == first
    # the preamble's seed is the job's: another seed, other global RNG states, nothing else
    (other,) = _call(workers, STATE, seed=6)
    assert other["rng"] != first["rng"] and {**other, "rng": None} == {**first, "rng": None}


def test_a_worker_that_dies_is_reported_and_the_next_one_runs(workers):
    code, result = workers.run({"kind": "call", "calls": [("os:_exit", [3])], "seed": 0}, "test")
    assert (code, result) == (3, None)
    assert _call(workers, ("os:getpid", []))[0] != _call(workers, ("os:getpid", []))[0]  # one process per job


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_workers_die_with_a_sigkilled_scheduler():
    """A SIGKILLed prefbench leaves no worker behind to write into a run that a restart will claim."""
    script = ("import sys; from harness.execution.runner import Workers; w = Workers(); w._start(); "
              "print(w._proc.pid, flush=True); w.run({'kind': 'call', 'calls': [('time:sleep', [300])], 'seed': 0}, 't')")
    p = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    zygote = int(p.stdout.readline())
    deadline = time.time() + 300
    while not _children(zygote) and time.time() < deadline:  # the zygote imports, then forks the worker
        time.sleep(0.2)
    (worker,) = _children(zygote)
    p.kill()
    p.wait()
    deadline = time.time() + 10
    while (_alive(zygote) or _alive(worker)) and time.time() < deadline:
        time.sleep(0.1)
    assert not _alive(zygote) and not _alive(worker)


# --------------------------------------------------------------------------------------------- slow
DPO = ["--set", "dpo.batch_size=2", "--set", "dpo.epochs=3", "--set", "dpo.lr=0.002", "--eval-checkpoints", "1"]  # 8 steps


def _prefbench(results: Path, cache: Path, *args, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFBENCH_CACHE": str(cache), "PREFBENCH_QUIET": "1", "PREFBENCH_THREADS": "1"}
    env.pop("PREFBENCH_FAULT", None)
    if fault:
        env["PREFBENCH_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "harness.cli", "run", TINY, *args, "--results", str(results)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)


def _files(run: Path) -> dict[str, bytes]:
    """A run folder's files, byte for byte; metrics.json with its ``timing`` values blanked (only those)."""
    out = {}
    for name in ("config.json", "metrics.json", "samples.parquet", "train_log.jsonl"):
        raw = (run / name).read_bytes()
        if name == "metrics.json":
            raw, n = re.subn(rb'"timing": \{[^{}]*\}', b'"timing": {}', raw)
            assert n == 1
        out[name] = raw
    return out


@pytest.mark.slow
def test_a_run_is_bit_identical_alone_after_other_runs_and_after_kills(tmp_path):
    cache = tmp_path / "cache"
    # after other runs: dpo seed 1 is the sixth run of its process (after both reference rows, two SFT
    # runs and DPO seed 0)
    r = _prefbench(tmp_path / "after", cache, "--algorithms", "sft,dpo", "--seeds", "0,1", *DPO)
    assert r.returncode == 0, r.stderr[-3000:]
    (target,) = [p for p in (tmp_path / "after" / "tiny").iterdir() if p.name.startswith("dpo-s1-")]
    (ref,) = [p for p in (tmp_path / "after" / "tiny").iterdir() if p.name.startswith("reference-s1-")]
    m = json.loads((target / "metrics.json").read_text())
    assert m["status"] == "ok" and m["extra"]["train_steps"] >= 6 and m["trajectory"]
    assert m["metrics"]["kl"] > 0.01  # the policy moved: its numbers would show a different computation

    def seeded(name: str) -> Path:  # a results folder holding only the finished reference row of seed 1
        import shutil

        shutil.copytree(ref, tmp_path / name / "tiny" / ref.name)
        (tmp_path / name / ".prefbench-results").write_text((tmp_path / "after" / ".prefbench-results").read_text())
        return tmp_path / name

    single = ["--algorithms", "dpo", "--seeds", "1", *DPO]
    # alone: the only run its process computes
    r = _prefbench(seeded("alone"), cache, *single)
    assert r.returncode == 0 and r.stderr.count(": running") == 1, r.stderr[-3000:]
    # killed mid-training with no checkpoint, then restarted: trained again from step 0
    killed = _prefbench(seeded("restart"), cache, *single, "--checkpoint-every", "0", fault="train:step@5")
    assert killed.returncode == -9, killed.stderr[-3000:]
    r = _prefbench(tmp_path / "restart", cache, *single, "--checkpoint-every", "0")
    assert r.returncode == 0 and "resumed" not in r.stderr, r.stderr[-3000:]
    # killed mid-training after a checkpoint, then restarted from that checkpoint
    killed = _prefbench(seeded("resume"), cache, *single, "--checkpoint-every", "2", fault="train:step@7")
    assert killed.returncode == -9, killed.stderr[-3000:]
    r = _prefbench(tmp_path / "resume", cache, *single, "--checkpoint-every", "2")
    assert r.returncode == 0 and "resumed from the checkpoint at step 6/" in r.stderr, r.stderr[-3000:]

    want = _files(target)
    for name in ("alone", "restart", "resume"):
        got = _files(tmp_path / name / "tiny" / target.name)
        for f in want:
            assert got[f] == want[f], (name, f)
