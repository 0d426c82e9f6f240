"""The Ray executor (``prefbench run --executor ray``, harness/adapters/ray_executor.py) on a real local
Ray cluster that the tests start (``ray start --head`` in a session of its own) and stop (that session's
processes, and nothing else).

- flags are checked before any compute: one line, exit 2, nothing written;
- a 2-seed sweep through Ray gives run folders and a report byte-identical to the local executor's
  (metrics.json's wall-clock ``timing`` aside, as in tests/test_determinism.py);
- a Ray worker SIGKILLed mid-sweep fails its run only (nothing of it committed, the other runs go on);
  the same command run again computes only what is missing, and the report is again the local one.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parent.parent
TINY = str(ROOT / "tests" / "data" / "tiny.yaml")
SWEEP = ["--algorithms", "dpo", "--seeds", "0,1", "--set", "dpo.batch_size=2", "--set", "dpo.epochs=3",
         "--set", "dpo.lr=0.002"]  # 2 seeds: 2 DPO runs and 2 reference rows, 8 optimizer steps per DPO run
RAY_BIN = str(Path(sys.executable).with_name("ray"))


def _env(cache: Path) -> dict:
    env = {**os.environ, "PREFBENCH_CACHE": str(cache), "PREFBENCH_QUIET": "1", "PREFBENCH_THREADS": "1",
           "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    for k in ("PREFBENCH_FAULT", "RAY_ADDRESS"):
        env.pop(k, None)
    return env


def _prefbench(cache: Path, *args, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env=_env(cache), timeout=timeout)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    """A 2-CPU Ray head node on loopback, in a process session of its own: (address, session id)."""
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="/tmp/rt")  # Ray's socket paths must stay short
    env = {**_env(Path(temp)), "RAY_ADDRESS": ""}
    head = subprocess.Popen([RAY_BIN, "start", "--head", "--block", f"--port={port}", "--num-cpus=2", "--num-gpus=0",
                             "--node-ip-address=127.0.0.1", "--include-dashboard=false", f"--temp-dir={temp}",
                             "--disable-usage-stats"], env=env, cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        probe = subprocess.run([sys.executable, "-c", f"import ray; ray.init(address={address!r}, logging_level='ERROR')"],
                               env=env, capture_output=True, timeout=120)
        if probe.returncode == 0:
            break
        time.sleep(1)
    else:
        os.killpg(head.pid, signal.SIGKILL)
        pytest.fail("the Ray head node did not come up")
    yield address, head.pid
    started = _descendants(head.pid)
    for sig in (signal.SIGTERM, signal.SIGKILL):  # the session we started, and only it
        try:
            os.killpg(head.pid, sig)
        except ProcessLookupError:
            break
        try:
            head.wait(timeout=20)
            break
        except subprocess.TimeoutExpired:
            continue
    for proc in started:  # what the head node started, if still there
        if _proc_stat(proc) is not None:
            os.kill(proc, signal.SIGKILL)


def _proc_stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _descendants(root: int) -> list[int]:
    """Every live process below ``root`` (Ray starts some in sessions of their own)."""
    parent = {}
    for d in Path("/proc").glob("[0-9]*"):
        st = _proc_stat(int(d.name))
        if st and st[0] != "Z":
            parent[int(d.name)] = int(st[1])
    out, frontier = [], {root}
    while frontier:
        frontier = {pid for pid, pp in parent.items() if pp in frontier}
        out.extend(frontier)
    return out


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").glob("[0-9]*"):
        st = _proc_stat(int(d.name))
        if st and int(st[1]) == pid and st[0] != "Z":
            out.append(int(d.name))
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """The sweep through the local executor: (results folder, artifact cache), the reference."""
    base = tmp_path_factory.mktemp("ray-local")
    cache, results = base / "cache", base / "results"
    p = _prefbench(cache, "run", TINY, *SWEEP, "--results", str(results))
    assert p.returncode == 0, p.stderr[-3000:]
    return results, cache


def _run_files(results: Path) -> dict[str, bytes]:
    """Every committed run's files, byte for byte; metrics.json's ``timing`` values blanked (only those)."""
    out = {}
    runs = sorted(p for p in (results / "tiny").iterdir() if not p.name.startswith("."))
    for run in runs:
        for f in sorted(run.iterdir()):
            raw = f.read_bytes()
            if f.name == "metrics.json":
                raw, n = re.subn(rb'"timing": \{[^{}]*\}', b'"timing": {}', raw)
                assert n == 1
            out[f"{run.name}/{f.name}"] = raw
    return out


def _report(cache: Path, results: Path, out: Path) -> dict[str, bytes]:
    p = _prefbench(cache, "report", "--results", str(results), "--suite", "tiny", "--dir", str(out),
                   "--resamples", "200")
    assert p.returncode == 0, p.stderr[-3000:]
    # report.md names the results folder it was built from: the only bytes allowed to differ
    files = {str(f.relative_to(out)): f.read_bytes().replace(str(results).encode(), b"RESULTS")
             for f in sorted(out.rglob("*")) if f.is_file()}
    assert any(name.endswith(".md") for name in files) and any(name.endswith(".csv") for name in files)
    return files


# ------------------------------------------------------------------------------------------- fast
@pytest.mark.parametrize("flags, where", [
    (["--cpus-per-run", "2"], "--cpus-per-run"),  # a Ray flag without --executor ray
    (["--ray-address", "auto"], "--ray-address"),
    (["--executor", "ray", "--cpus-per-run", "0"], "--cpus-per-run"),
    (["--executor", "ray", "--gpus-per-run", "-1"], "--gpus-per-run"),
    (["--executor", "ray", "--cpus-per-run", "nan"], "--cpus-per-run"),
    (["--executor", "ray", "--ray-address", " "], "--ray-address"),
    (["--executor", "dask"], "--executor"),
])
def test_bad_executor_flags_are_one_line_before_anything(tmp_path, flags, where):
    results = tmp_path / "results"
    p = _prefbench(tmp_path / "cache", "run", TINY, "--algorithms", "dpo", "--results", str(results), *flags,
                   timeout=300)
    assert p.returncode == 2, p.stderr[-2000:]
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prefbench: error: ") and where in lines[0], p.stderr
    assert not results.exists() and not (tmp_path / "cache").exists()


def test_a_run_bigger_than_every_node_is_refused_before_anything(tmp_path, cluster):
    address, _ = cluster
    results = tmp_path / "results"
    for flag, value in (("--gpus-per-run", "1"), ("--cpus-per-run", "3")):  # the cluster: 2 CPUs, no GPU
        p = _prefbench(tmp_path / "cache", "run", TINY, "--algorithms", "dpo", "--results", str(results),
                       "--executor", "ray", "--ray-address", address, flag, value, timeout=300)
        assert p.returncode == 2, p.stderr[-2000:]
        assert f"prefbench: error: {flag}" in p.stderr and "no node of the cluster" in p.stderr, p.stderr
        assert not results.exists() and not (tmp_path / "cache").exists()


# ------------------------------------------------------------------------------------------- slow
@pytest.mark.slow
def test_a_sweep_through_ray_is_byte_identical_to_the_local_one(tmp_path, cluster, local_sweep):
    address, _ = cluster
    local, _ = local_sweep
    results, cache = tmp_path / "results", tmp_path / "cache"  # its own cache: Ray builds the artifacts too
    p = _prefbench(cache, "run", TINY, *SWEEP, "--results", str(results), "--executor", "ray",
                   "--ray-address", address, "--cpus-per-run", "1")
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stderr.count(": submitted") == 4 and p.stderr.count(": done in ") == 4
    here = _prefbench(cache, "run", TINY, *SWEEP, "--results", str(local))  # the closing table: the same
    assert p.stdout == here.stdout and here.stderr.count("finished earlier, reused") == 4
    assert _run_files(results) == _run_files(local)
    assert _report(cache, results, tmp_path / "report-ray") == _report(cache, local, tmp_path / "report-local")


@pytest.mark.slow
def test_a_ray_worker_killed_mid_sweep_then_a_rerun_gives_the_same_report(tmp_path, cluster, local_sweep):
    address, session = cluster
    local, local_cache = local_sweep
    results = tmp_path / "results"
    args = [sys.executable, "-m", "harness.cli", "run", TINY, *SWEEP, "--seeds", "0,1,2", "--results",
            str(results), "--executor", "ray", "--ray-address", address, "--cpus-per-run", "1"]
    first = subprocess.Popen(args, cwd=ROOT, env=_env(local_cache), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    killed, deadline = None, time.time() + 600
    while killed is None and first.poll() is None and time.time() < deadline:
        done = [p for p in (results / "tiny").glob("*") if not p.name.startswith(".")] if results.exists() else []
        if done:  # a run has finished: kill a Ray worker that is computing another one
            for pid in _descendants(session):
                if "prefbench-run" in _cmdline(pid) and any(_children(z) for z in _children(pid)):
                    os.kill(pid, signal.SIGKILL)
                    killed = pid
                    break
        time.sleep(0.05)
    out, err = first.communicate(timeout=600)
    assert killed is not None, err[-3000:]
    assert first.returncode == 1, err[-3000:]  # some run failed; the others went on
    assert "its Ray task failed" in err and err.count(": done in ") == 5, err[-3000:]
    committed = {p.name: (p.stat().st_ino, (p / "metrics.json").read_bytes())
                 for p in (results / "tiny").iterdir() if not p.name.startswith(".")}
    assert len(committed) == 5  # of 6: the killed run left nothing behind
    # the same command again: only the missing run is computed
    again = subprocess.run(args, cwd=ROOT, env=_env(local_cache), capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("finished earlier, reused") == 5 and again.stderr.count(": done in ") == 1
    for name, (ino, metrics) in committed.items():
        run = results / "tiny" / name
        assert run.stat().st_ino == ino and (run / "metrics.json").read_bytes() == metrics
    assert not list((results / "tiny" / ".staging").glob("*"))
    # seeds 0 and 1 are the local sweep's, byte for byte; the report over them is the local one
    files = _run_files(results)
    local_files = _run_files(local)
    assert {k: v for k, v in files.items() if k in local_files} == local_files
    for seed2 in [p for p in (results / "tiny").iterdir() if "-s2-" in p.name]:
        import shutil

        shutil.rmtree(seed2)
    assert _report(local_cache, results, tmp_path / "r1") == _report(local_cache, local, tmp_path / "r2")
