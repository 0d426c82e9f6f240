"""Tables that cannot mislead: one block per comparable configuration, run identity, selection split."""
import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from harness.analysis import collect_blocks, comparison, headline
from harness.analysis.collect import restrict, split_halves
from harness.analysis.fake import FakeGroup, default_groups, write_fake_sweep
from harness.cli import main
from harness.execution.plan import plan_runs
from harness.suites.spec import load_suite

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "data" / "tiny.yaml"


def _groups(gain):
    return [FakeGroup("reference", {}), FakeGroup("dpo", {"beta": 0.1}, gain=gain, kl=2.0)]


def test_presets_and_artifacts_never_share_a_row(tmp_path):
    # the README's workflow: a smoke sweep, then a full one, into the same results folder
    write_fake_sweep(tmp_path, _groups(0.3), seeds=(0,), n_prompts=64, preset="smoke")
    write_fake_sweep(tmp_path, _groups(-0.3), seeds=(0,), n_prompts=200, preset="full", seed=1)
    # and a third sweep with the smoke preset but another π_SFT (e.g. the suite file changed)
    write_fake_sweep(tmp_path, _groups(0.0), seeds=(1,), n_prompts=64, preset="smoke", seed=2,
                     artifacts={"reference": "ref1", "baseline": "base1", "pairs": "pairs1"})
    blocks = collect_blocks(tmp_path)
    assert len(blocks) == 3
    assert sorted(len(b.prompts) for b in blocks) == [64, 64, 200]
    for b in blocks:  # every row of a block holds one run per seed, all with the block's identity
        assert b.runs.groupby("group").seed.nunique().max() == 1
        assert len({json.loads(a)["reference"] for a in b.runs.artifacts_json}) == 1
    t = comparison(tmp_path, n_resamples=100)
    dpo = t[t.algorithm == "dpo"]
    assert len(dpo) == 3 and (dpo.n_seeds == 1).all()  # never "2 seeds" over incomparable runs
    assert sorted(dpo.block.unique()) == sorted(b.key for b in blocks)
    text = headline(tmp_path, n_resamples=100)
    assert text.count("| dpo |") == 3
    # the two smoke blocks are told apart, and the title says what differs
    assert "differs from the other toy/smoke block(s) in: artifacts_json" in text


def test_sampler_and_judge_split_blocks(tmp_path):
    paths = write_fake_sweep(tmp_path, _groups(0.2), seeds=(0, 1), n_prompts=32)
    cfg_path = paths[-1] / "config.json"  # dpo seed 1 sampled by another engine
    cfg = json.loads(cfg_path.read_text())
    cfg["sampler"] = "vllm"
    cfg_path.write_text(json.dumps(cfg))
    blocks = collect_blocks(tmp_path)
    assert sorted(b.identity["sampler"] for b in blocks) == ["hf", "vllm"]
    cfg["sampler"], cfg["judge"] = "hf", {"kind": "llm_pairwise", "model": "m"}
    cfg_path.write_text(json.dumps(cfg))
    assert len(collect_blocks(tmp_path)) == 2


def test_select_split_uses_disjoint_halves(tmp_path):
    write_fake_sweep(tmp_path, default_groups(betas=(0.1, 0.5)), seeds=(0, 1), n_prompts=40)
    block, = collect_blocks(tmp_path)
    sel, rep = split_halves(block)
    assert sel.sum() == rep.sum() == 20 and not (sel & rep).any()
    half = restrict(block, rep)
    assert half.per_prompt["win"].shape == (len(block.runs), 20)
    assert set(half.samples["prompt"].tolist()) == set(range(20))
    whole = comparison(tmp_path, n_resamples=100)
    split = comparison(tmp_path, n_resamples=100, select_split=True)
    assert (whole.win_rate != split.win_rate).any()  # reported on half the prompts: other numbers
    text = headline(tmp_path, n_resamples=100, select_split=True)
    assert "reported half" in text and "chosen on one half of the evaluation prompts" in text
    assert "winner's curse" in headline(tmp_path, n_resamples=100)


def test_kl_estimates_and_temperature_are_labelled(tmp_path):
    paths = write_fake_sweep(tmp_path, _groups(0.2) + [FakeGroup("best-of-n", {"n": 4}, gain=0.1, kl=0.6)],
                             seeds=(0,), n_prompts=32)
    for p in paths:
        m = json.loads((p / "metrics.json").read_text())
        if m["algorithm"] == "best-of-n":
            m["metrics"]["kl_kind"] = "estimate"
            m["extra"]["kl_upper_bound"] = 0.636
            (p / "metrics.json").write_text(json.dumps(m))
    text = headline(tmp_path, n_resamples=100)
    row = next(line for line in text.splitlines() if line.startswith("| best-of-n"))
    assert "≈" in row and "0.636" in row
    assert "≈: an estimate" in text
    assert "KL(π‖π_ref)" in text
    for p in paths:
        c = json.loads((p / "config.json").read_text())
        c["suite"]["evaluation"]["temperature"] = 0.7
        (p / "config.json").write_text(json.dumps(c))
    assert "KL(π_T‖π_ref,T), T=0.7" in headline(tmp_path, n_resamples=100)


# ----------------------------------------------------------------------------- run identity

def _suite_with(tmp_path, edit) -> object:
    data = yaml.safe_load(TINY.read_text())
    edit(data)
    path = tmp_path / f"tiny-{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_suite(str(path))


def _ids(suite) -> dict:
    return {(r.algorithm, r.seed): r.run_id for r in plan_runs(suite, "smoke", ["sft", "dpo"], [0], {}, "hf")}


def test_run_id_ignores_other_algorithms_preset_values(tmp_path):
    base = _ids(_suite_with(tmp_path, lambda d: None))
    other = _ids(_suite_with(tmp_path, lambda d: d["presets"]["smoke"]["algorithms"]["sft"].update(lr=3e-4)))
    assert other[("dpo", 0)] == base[("dpo", 0)] and other[("reference", 0)] == base[("reference", 0)]
    assert other[("sft", 0)] != base[("sft", 0)]


def test_run_id_ignores_a_default_written_out(tmp_path):
    from harness import registry

    beta = dataclasses.asdict(registry.get("dpo").make_config({}, "test"))["beta"]
    base = _ids(_suite_with(tmp_path, lambda d: None))
    explicit = _ids(_suite_with(tmp_path, lambda d: d["presets"]["smoke"]["algorithms"]["dpo"].update(beta=beta)))
    assert explicit == base


def test_run_id_follows_the_runs_own_config(tmp_path):
    base = _ids(_suite_with(tmp_path, lambda d: None))
    own = _ids(_suite_with(tmp_path, lambda d: d["presets"]["smoke"]["algorithms"]["dpo"].update(beta=0.7)))
    assert own[("dpo", 0)] != base[("dpo", 0)] and own[("sft", 0)] == base[("sft", 0)]
    suite_change = _ids(_suite_with(tmp_path, lambda d: d["evaluation"].update(max_new_tokens=12)))
    assert all(suite_change[k] != base[k] for k in base)  # a suite field every run depends on
    sampler = {(r.algorithm, r.seed): r.run_id
               for r in plan_runs(_suite_with(tmp_path, lambda d: None), "smoke", ["sft", "dpo"], [0], {}, "vllm")}
    assert all(sampler[k] != base[k] for k in base)


# ----------------------------------------------------------------------------- end to end

@pytest.mark.slow
def test_smoke_then_full_in_one_folder_gives_two_blocks(tmp_path, capsys):
    results = tmp_path / "results"
    common = ["--algorithms", "dpo", "--seeds", "0", "--results", str(results), "--checkpoint-every", "0"]
    assert main(["run", str(TINY), "--preset", "smoke", *common]) == 0
    assert main(["run", str(TINY), "--preset", "full", *common]) == 0
    capsys.readouterr()
    assert main(["report", "--results", str(results), "--format", "csv", "--resamples", "200"]) == 0
    t = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    assert sorted(t.preset.unique()) == ["full", "smoke"]
    dpo = t[t.algorithm == "dpo"]
    assert len(dpo) == 2 and (dpo.n_seeds == 1).all()
    assert main(["report", "--results", str(results), "--resamples", "200"]) == 0
    out = capsys.readouterr().out
    assert "tiny v1/smoke" in out and "tiny v1/full" in out
