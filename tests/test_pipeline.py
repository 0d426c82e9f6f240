"""End to end on the embedded suite's smoke preset: the science as properties, the results format,
and reuse of finished runs and cached artifacts."""
import json

import pandas as pd
import pytest

from harness.cli import main
from harness.analysis import comparison
from harness.execution.results import ResultsStore

pytestmark = pytest.mark.slow


def _rows(results):
    t = comparison(results, "sentiment")
    return {r.algorithm: r for r in t.itertuples()}


def test_dpo_beats_the_reference_and_the_reference_has_zero_kl(smoke_results):
    rows = _rows(smoke_results)
    ref, dpo, sft = rows["reference"], rows["dpo"], rows["sft"]
    assert ref.kl == 0.0 and ref.kl_k1 == 0.0 and ref.kl_k3 == 0.0
    assert dpo.gold_reward > ref.gold_reward
    assert dpo.win_rate > 0.5
    assert dpo.kl > 0 and dpo.kl_k3 > 0
    assert sft.kl > 0
    # a fresh π_SFT sample set against the baseline set: a null comparison whose CI covers ½
    assert ref.win_rate_ci_low < 0.5 < ref.win_rate_ci_high
    for r in rows.values():
        assert r.win_rate_ci_low <= r.win_rate <= r.win_rate_ci_high
        assert r.n_seeds == 1 and 0 <= r.truncation_rate <= 1 and r.length > 0


def test_run_folders_hold_config_log_samples_and_metrics(smoke_results):
    paths = [str(p) for p in ResultsStore(smoke_results).iter_runs("sentiment")]
    algos = {json.load(open(p + "/metrics.json"))["algorithm"]: p for p in paths}
    assert set(algos) == {"reference", "sft", "dpo"}
    for path in paths:
        cfg = json.load(open(path + "/config.json"))
        assert cfg["library_versions"]["torch"].startswith("2.13")
        assert cfg["variant"] in ("reference", "sft", "dpo") and "hyperparameters" in cfg
        samples = pd.read_parquet(path + "/samples.parquet")
        assert {"prompt", "completion", "gold_reward", "win", "kl", "kl_k1", "kl_k3", "length"} <= set(samples.columns)
        metrics = json.load(open(path + "/metrics.json"))
        assert metrics["status"] == "ok" and metrics["metrics"]["n_prompts"] == len(samples)
    dpo_log = [json.loads(l) for l in open(algos["dpo"] + "/train_log.jsonl")]
    assert dpo_log and {"loss", "rewards/margin", "rewards/accuracy", "grad_norm"} <= set(dpo_log[-1])


def test_second_run_reuses_everything(smoke_results, capsys):
    before = {p: (p / "metrics.json").stat().st_mtime_ns for p in (smoke_results / "sentiment").iterdir()
              if not p.name.startswith((".", "_"))}
    code = main(["run", "sentiment", "--preset", "smoke", "--algorithms", "sft,dpo", "--seeds", "0",
                 "--results", str(smoke_results)])
    err = capsys.readouterr().err
    assert code == 0
    assert err.count("finished earlier, reused") == 3 and "suite artifacts reused from the cache" in err
    after = {p: (p / "metrics.json").stat().st_mtime_ns for p in before}
    assert after == before


def test_report_formats(smoke_results, tmp_path):
    for fmt in ("md", "latex", "csv"):
        out = tmp_path / f"table.{fmt}"
        assert main(["report", "--results", str(smoke_results), "--format", fmt, "--out", str(out)]) == 0
        text = out.read_text()
        assert "dpo" in text and "reference" in text
    csv = pd.read_csv(tmp_path / "table.csv")
    for col in ("suite", "algorithm", "n_seeds", "gold_reward", "win_rate", "win_rate_ci_low", "win_rate_ci_high", "kl"):
        assert col in csv.columns
    assert r"\toprule" in (tmp_path / "table.latex").read_text()
