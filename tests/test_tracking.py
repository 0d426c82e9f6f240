"""Live tracking (``prefbench run --report-to``, harness/core/tracking.py), tested offline with the real
libraries: TensorBoard (event files), W&B (``WANDB_MODE=offline``, read back from the run's ``.wandb``
log with ``wandb leet inspect --json``) and MLflow (a file store in the test's folder, read back with
``MlflowClient``). Every run's training curves (native and TRL-backed algorithms) and final metrics reach
the tracker under its run id, equal to what the run folder records; the run folders stay the record
(nothing of the tracker in them, the same files as without tracking); bad choices are one line, exit 2,
before anything is written."""
from __future__ import annotations

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


@pytest.mark.parametrize("choice", ["tensorboard", "wandb", "mlflow"])
def test_a_tracker_that_is_not_installed_is_one_line(monkeypatch, choice):
    """The preflight check (run before anything is computed or written): a missing package is named with
    how to install it. The packages are requirements, so their absence is simulated."""
    import importlib.util

    from harness.core import tracking
    from harness.core.errors import UserError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == choice else real(name, *a))
    with pytest.raises(UserError) as e:
        tracking.check(choice)
    assert str(e.value) == f"--report-to: {choice}: the {choice} package is not installed (pip install {choice})"
    monkeypatch.setattr(importlib.util, "find_spec", real)
    tracking.check(choice)  # installed: nothing to say


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


def _wandb_run(wandb_dir: Path, run_id: str) -> dict:
    """What W&B stored for a run, from its offline transaction log: run facts, history by step, the
    summary and the config (``wandb leet inspect --json``: wandb's own reader of the .wandb file)."""
    found = sorted((wandb_dir / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(found) == 1, found
    p = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(found[0])],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    out = {"history": [], "summary": {}, "config": {}, "run": None, "exit": None}
    for line in p.stdout.splitlines():
        rec = json.loads(line)
        kind = rec.get("type")
        if kind == "run":
            out["run"] = rec["run"]
            out["config"].update(rec["run"].get("config", {}).get("update", {}))
        elif kind == "history":  # one row per log call; prefbench's step is the metric "step"
            out["history"].append(rec["history"]["item"])
        elif kind == "summary":
            out["summary"].update(rec["summary"].get("update", {}))
        elif kind == "exit":
            out["exit"] = rec["exit"].get("exit_code", 0)
    return out


def _mlflow_run(uri: str, run_id: str):
    """(the MLflow run named ``run_id``, a function giving a metric's history as [(step, value)])."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("prefbench")
    runs = client.search_runs([exp.experiment_id], filter_string=f"attributes.run_name = '{run_id}'")
    assert len(runs) == 1, [r.info.run_name for r in runs]
    run = runs[0]
    return run, lambda key: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))


def _curves_and_finals(tracker: str, where: Path, run_id: str) -> tuple[dict, dict]:
    """({"train/loss": [(step, value), ...], ...}, {"final/win_rate": value, ...}) as the tracker holds them."""
    if tracker == "tensorboard":
        got = _scalars(where / "tensorboard" / "tiny" / run_id)
        return ({k: v for k, v in got.items() if not k.startswith("final/")},
                {k: v[0][1] for k, v in got.items() if k.startswith("final/")})
    if tracker == "wandb":
        run = _wandb_run(where, run_id)
        assert run["run"]["run_id"] == run["run"]["display_name"] == run_id and run["run"]["run_group"] == "tiny"
        curves: dict = {}
        for row in run["history"]:
            for k, v in row.items():
                if not k.startswith("_") and k != "step":
                    curves.setdefault(k, []).append((row["step"], v))
        return curves, {k: v for k, v in run["summary"].items() if k.startswith("final/")}
    run, history = _mlflow_run(where.as_uri(), run_id)
    assert run.info.run_name == run.data.tags["prefbench.run_id"] == run_id and run.info.status == "FINISHED"
    keys = [k for k in run.data.metrics if not k.startswith("final/")]
    return {k: history(k) for k in keys}, {k: v for k, v in run.data.metrics.items() if k.startswith("final/")}


@pytest.mark.parametrize("tracker", ["wandb", "mlflow"])
def test_wandb_and_mlflow_receive_curves_and_final_metrics_by_run_id_offline(tmp_path, monkeypatch, tracker):
    from harness.core import tracking

    monkeypatch.setenv("PREFBENCH_REPORT_TO", tracker)
    monkeypatch.setenv("PREFBENCH_TRACKING_DIR", str(tmp_path / "tracking"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    for k in ("WORLD_SIZE", "RANK", "MLFLOW_TRACKING_URI", "WANDB_PROJECT", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "")  # then unset: prefbench opts in for its own file store,
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")      # and the variable is removed again after the test
    said = []
    monkeypatch.setattr("harness.core.progress.say", said.append)
    tracking.start("tiny", "dpo-s0-0123456789", {"algorithm": "dpo", "hyperparameters": {"beta": 0.1}})
    for step in (1, 2, 3):
        tracking.log(step, {"loss": 1.0 / step, "note": "text", "flag": True, "bad": float("nan"),
                            "trl/clip_ratio(x)": 0.5})
    tracking.log(2, {"win_rate": 0.25}, prefix="eval/")
    tracking.finish("ok", {"win_rate": 0.5, "kl": 1.5})
    assert said == []  # no tracker error
    where = tmp_path / "wandb-dir" if tracker == "wandb" else tmp_path / "tracking" / "mlruns"
    curves, finals = _curves_and_finals(tracker, where, "dpo-s0-0123456789")
    assert curves["train/loss"] == [(1, 1.0), (2, 0.5), (3, pytest.approx(1 / 3))]
    assert curves["eval/win_rate"] == [(2, 0.25)]
    assert not any("note" in k or "flag" in k or "bad" in k for k in curves)  # numbers only
    assert any(k.startswith("train/trl/clip_ratio") for k in curves)  # a name MLflow would refuse is kept, cleaned
    assert finals == {"final/win_rate": 0.5, "final/kl": 1.5}
    if tracker == "wandb":
        run = _wandb_run(tmp_path / "wandb-dir", "dpo-s0-0123456789")
        assert run["config"]["algorithm"] == "dpo" and run["config"]["hyperparameters.beta"] == 0.1
        assert run["summary"]["status"] == "ok" and run["exit"] == 0
    else:
        run, _ = _mlflow_run((tmp_path / "tracking" / "mlruns").as_uri(), "dpo-s0-0123456789")
        assert run.data.params["hyperparameters.beta"] == "0.1" and run.data.tags["prefbench.status"] == "ok"


ARGS = ["run", TINY, "--algorithms", "dpo,grpo", "--seeds", "0", "--set", "dpo.batch_size=2", "--eval-checkpoints", "1",
        "--set", "grpo.reward=gold", "--set", "grpo.steps=2", "--set", "grpo.prompts_per_step=2",
        "--set", "grpo.num_generations=2"]


@pytest.fixture(scope="module")
def untracked(tmp_path_factory):
    """The same runs without tracking: a native algorithm (dpo) and a TRL-backed one (grpo, gold reward)."""
    tmp = tmp_path_factory.mktemp("untracked")
    plain = _prefbench(tmp / "cache", *ARGS, "--results", str(tmp / "plain"))
    assert plain.returncode == 0, plain.stderr[-3000:]
    return tmp, plain


@pytest.mark.slow
@pytest.mark.parametrize("tracker", ["tensorboard", "wandb", "mlflow"])
def test_a_run_with_report_to_tracks_every_run_and_changes_no_result(untracked, tmp_path, tracker, monkeypatch):
    tmp, plain = untracked
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    for k in ("MLFLOW_TRACKING_URI", "WANDB_PROJECT", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(k, raising=False)
    tracked = _prefbench(tmp / "cache", *ARGS, "--results", str(tmp_path / "tracked"), "--report-to", tracker)
    assert tracked.returncode == 0, tracked.stderr[-3000:]
    assert "tracking (" not in tracked.stderr  # no tracker error
    assert tracked.stdout == plain.stdout
    runs = sorted(p for p in (tmp_path / "tracked" / "tiny").iterdir() if not p.name.startswith("."))
    assert [r.name.split("-")[0] for r in runs] == ["dpo", "grpo", "reference"]
    where = {"tensorboard": tmp_path / "tracked" / "_tracking", "wandb": tmp_path / "wandb-dir",
             "mlflow": tmp_path / "tracked" / "_tracking" / "mlruns"}[tracker]
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # for this process's reader (prefbench set it for its own)
    for run in runs:
        same = tmp / "plain" / "tiny" / run.name
        assert sorted(f.name for f in run.iterdir()) == sorted(f.name for f in same.iterdir())  # nothing added
        assert (run / "samples.parquet").read_bytes() == (same / "samples.parquet").read_bytes()
        # byte for byte but for TRL's wall-clock step time (a timing, like metrics.json's "timing")
        a, b = (re.sub(r', "trl/step_time": [0-9.e-]+', "", (d / "train_log.jsonl").read_text()) for d in (run, same))
        assert a == b
        a, b = ((re.sub(r'"timing": \{[^{}]*\}', "", (d / "metrics.json").read_text())) for d in (run, same))
        assert a == b
        curves, finals = _curves_and_finals(tracker, where, run.name)
        metrics = json.loads((run / "metrics.json").read_text())
        numbers = {k: v for k, v in metrics["metrics"].items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        assert len(numbers) > 5 and set(finals) == {f"final/{k}" for k in numbers}
        for k, v in numbers.items():
            assert finals[f"final/{k}"] == pytest.approx(v, rel=1e-6, abs=1e-6), k
        if run.name.startswith("reference"):
            continue
        log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
        assert len(log) >= 2 and len(metrics["trajectory"]) == 1
        key = "loss" if run.name.startswith("dpo") else "reward"  # grpo: TRL's logs through the adapters' bridge
        assert [s for s, _ in curves[f"train/{key}"]] == [row["step"] for row in log]
        assert [v for _, v in curves[f"train/{key}"]] == pytest.approx([row[key] for row in log], rel=1e-6)
        assert [s for s, _ in curves["eval/win_rate"]] == [metrics["trajectory"][0]["step"]]
        assert curves["eval/win_rate"][0][1] == pytest.approx(metrics["trajectory"][0]["win_rate"], rel=1e-6)
