"""Live tracking (``prefbench run --report-to``, harness/core/tracking.py), tested offline with
TensorBoard: every run's training curve and final metrics reach the tracker under its run id, equal to
what the run folder records; the run folders stay the record (nothing of the tracker in them, the same
files as without tracking); bad choices are one line, exit 2, before anything is written."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TINY = str(ROOT / "tests" / "data" / "tiny.yaml")


def _prefbench(cache: Path, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFBENCH_CACHE": str(cache), "PREFBENCH_QUIET": "1", "PREFBENCH_THREADS": "1"}
    for k in ("PREFBENCH_FAULT", "PREFBENCH_REPORT_TO", "PREFBENCH_TRACKING_DIR"):
        env.pop(k, None)
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=900)


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(folder))
    ea.Reload()
    return {tag: [(e.step, e.value) for e in ea.Scalars(tag)] for tag in ea.Tags()["scalars"]}


@pytest.mark.parametrize("choice, problem", [("comet", "invalid choice"), ("", "invalid choice")])
def test_an_unknown_tracker_is_one_line_before_anything(tmp_path, choice, problem):
    results = tmp_path / "results"
    p = _prefbench(tmp_path / "cache", "run", TINY, "--results", str(results), "--report-to", choice)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "--report-to" in lines[0] and problem in lines[0], p.stderr
    assert not results.exists()


@pytest.mark.parametrize("choice", ["wandb", "mlflow"])
def test_a_tracker_that_is_not_installed_is_one_line_before_anything(tmp_path, choice):
    if importlib.util.find_spec(choice) is not None:
        pytest.skip(f"{choice} is installed here")
    results = tmp_path / "results"
    p = _prefbench(tmp_path / "cache", "run", TINY, "--results", str(results), "--report-to", choice)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and f"the {choice} package is not installed" in lines[0], p.stderr
    assert not results.exists()


def test_tensorboard_receives_curves_and_final_metrics_by_run_id(tmp_path, monkeypatch):
    from harness.core import tracking

    monkeypatch.setenv("PREFBENCH_REPORT_TO", "tensorboard")
    monkeypatch.setenv("PREFBENCH_TRACKING_DIR", str(tmp_path))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    tracking.start("suite", "run-a", {"algorithm": "dpo", "hyperparameters": {"beta": 0.1}})
    for step in (1, 2, 3):
        tracking.log(step, {"loss": 1.0 / step, "note": "text", "flag": True, "bad": float("nan")})
    tracking.log(2, {"win_rate": 0.25}, prefix="eval/")
    tracking.finish("ok", {"win_rate": 0.5, "kl": 1.5})
    got = _scalars(tmp_path / "tensorboard" / "suite" / "run-a")
    assert set(got) == {"train/loss", "eval/win_rate", "final/win_rate", "final/kl"}  # numbers only
    assert [s for s, _ in got["train/loss"]] == [1, 2, 3]
    assert [v for _, v in got["train/loss"]] == pytest.approx([1.0, 0.5, 1 / 3])
    assert got["final/win_rate"][0][1] == pytest.approx(0.5)
    # tracking is off without the variable, and a non-main process of a data-parallel run never tracks
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    tracking.start("suite", "run-b", {})
    tracking.log(1, {"loss": 1.0})
    tracking.finish("ok", {})
    assert not (tmp_path / "tensorboard" / "suite" / "run-b").exists()


@pytest.mark.slow
def test_a_run_with_report_to_tensorboard_tracks_every_run_and_changes_no_result(tmp_path):
    cache = tmp_path / "cache"
    args = ["run", TINY, "--algorithms", "dpo", "--seeds", "0", "--set", "dpo.batch_size=2",
            "--eval-checkpoints", "1"]
    plain = _prefbench(cache, *args, "--results", str(tmp_path / "plain"))
    assert plain.returncode == 0, plain.stderr[-3000:]
    tracked = _prefbench(cache, *args, "--results", str(tmp_path / "tracked"), "--report-to", "tensorboard")
    assert tracked.returncode == 0, tracked.stderr[-3000:]
    assert tracked.stdout == plain.stdout
    runs = sorted(p for p in (tmp_path / "tracked" / "tiny").iterdir() if not p.name.startswith("."))
    assert [r.name.split("-")[0] for r in runs] == ["dpo", "reference"]
    for run in runs:
        same = tmp_path / "plain" / "tiny" / run.name
        assert sorted(f.name for f in run.iterdir()) == sorted(f.name for f in same.iterdir())  # nothing added
        for name in ("samples.parquet", "train_log.jsonl"):
            assert (run / name).read_bytes() == (same / name).read_bytes()
        a, b = ((re.sub(r'"timing": \{[^{}]*\}', "", (d / "metrics.json").read_text())) for d in (run, same))
        assert a == b
        got = _scalars(tmp_path / "tracked" / "_tracking" / "tensorboard" / "tiny" / run.name)
        metrics = json.loads((run / "metrics.json").read_text())
        for k, v in metrics["metrics"].items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                assert got[f"final/{k}"][0][1] == pytest.approx(v, rel=1e-6, abs=1e-6), k
        log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
        if run.name.startswith("dpo"):
            assert len(log) >= 2 and len(metrics["trajectory"]) == 1
            assert [s for s, _ in got["train/loss"]] == [row["step"] for row in log]
            assert [v for _, v in got["train/loss"]] == pytest.approx([row["loss"] for row in log], rel=1e-6)
            assert [s for s, _ in got["eval/win_rate"]] == [metrics["trajectory"][0]["step"]]
