"""The committed reference comparisons (results/reference/<name>/): runs and report cannot drift apart.

Each folder holds ``runs/`` (the run folders: JSON, JSON Lines and Parquet only) and ``report/`` (what
``prefbench report --dir`` built from them). This test rebuilds every table from the committed runs and
compares it with the committed one (:func:`harness.analysis.reproduce.compare_reports`: Markdown and
LaTeX byte for byte, CSV numbers within 1e-6 relative). ``make reproduce`` is the slow counterpart: it
recomputes the runs themselves.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.analysis import build_report
from harness.analysis.reproduce import compare_reports

REFERENCE = Path(__file__).resolve().parent.parent / "results" / "reference"
CASES = sorted(p for p in REFERENCE.glob("*") if (p / "runs").is_dir())


def test_there_are_committed_reference_results():
    assert [p.name for p in CASES] == ["instruct-smoke", "sentiment-paper"]


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_committed_report_tables_are_rebuilt_from_the_committed_runs(case, tmp_path):
    build_report(case / "runs", None, tmp_path, plots=False)
    c = compare_reports(case / "report", tmp_path, tables_only=True)
    assert len(c.compared) >= 20 and c.ok, c.differences


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_committed_runs_are_json_and_parquet_and_every_one_finished(case):
    runs = [p for p in (case / "runs").glob("*/*") if p.is_dir()]
    assert runs
    for run in runs:
        assert {f.suffix for f in run.iterdir()} <= {".json", ".jsonl", ".parquet"}, run
        m = json.loads((run / "metrics.json").read_text())
        assert m["status"] == "ok" and m["run_id"] == run.name, run


def test_the_sentiment_grid_is_complete():
    """Every configuration of suites/sweeps/sentiment-paper.yaml, each with seeds 0, 1 and 2."""
    import yaml

    sweep = yaml.safe_load((REFERENCE.parent.parent / "suites" / "sweeps" / "sentiment-paper.yaml").read_text())
    seeds: dict[tuple, set] = {}
    for run in (REFERENCE / "sentiment-paper" / "runs" / "sentiment").iterdir():
        m = json.loads((run / "metrics.json").read_text())
        assert m["preset"] == sweep["preset"]
        swept = {k.split(".", 1)[1]: m["hyperparameters"][k.split(".", 1)[1]]
                 for k in sweep["sweep"] if k.split(".", 1)[0] == m["algorithm"]}
        seeds.setdefault((m["algorithm"], tuple(sorted(swept.items()))), set()).add(m["seed"])
    expected = {"reference"} | set(sweep["algorithms"])
    assert {a for a, _ in seeds} == expected
    for key in sweep["sweep"]:
        algo, name = key.split(".", 1)
        assert sorted(dict(hp)[name] for a, hp in seeds if a == algo) == sorted(sweep["sweep"][key])
    assert all(s == set(sweep["seeds"]) for s in seeds.values()), seeds
