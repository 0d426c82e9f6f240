"""Evaluation prompts never repeat a training (pair) prompt: the prompt split is by prompt text.

Every shipped suite and every preset in it is checked, plus the tiny test suite, without training
anything: only the corpus is generated (once per suite in this module) and the prompts drawn from it.
"""
from __future__ import annotations

import copy
import dataclasses
import json
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.core.errors import UserError
from harness.execution.artifacts import (
    PROMPT_SPLIT,
    SuiteArtifacts,
    load_corpus,
    prompt_key,
    prompt_pool,
    prompt_side,
    split_corpus,
)
from harness.suites.spec import PairSpec, load_suite_file, suite_files

TINY = Path(__file__).resolve().parent / "data" / "tiny.yaml"
SUITE_PATHS = [*suite_files().values(), TINY]
CASES = [pytest.param(path, preset, id=f"{path.stem}-{preset}")
         for path in SUITE_PATHS for preset in load_suite_file(path).presets]


@lru_cache(maxsize=None)
def corpus_of(path: Path) -> tuple[list[str], list[str]]:
    """(training documents, held-out documents) of a suite file, generated once per module."""
    suite = load_suite_file(path)
    return split_corpus(load_corpus(suite), suite)


def artifacts(suite, preset: str, tmp_path: Path) -> SuiteArtifacts:
    art = SuiteArtifacts(suite, preset, tmp_path / "cache", sampler=SimpleNamespace(name="hf"))
    art.corpus = corpus_of(Path(suite.path))  # cached_property: an instance value takes its place
    return art


def needs_corpus(suite) -> None:
    if suite.data.kind in ("hf_dataset", "preference_chosen") or suite.pairs.kind == "dataset":
        pytest.skip("hub datasets need the hub (tests/test_datasets.py runs them on exact-schema fixtures)")


@pytest.mark.parametrize("path,preset", CASES)
def test_eval_prompts_share_no_text_with_pair_prompts(path, preset, tmp_path):
    suite = load_suite_file(path)
    needs_corpus(suite)
    art = artifacts(suite, preset, tmp_path)
    art.check_prompts()
    spec = suite.presets[preset]
    ev, pair = art.eval_prompts, art.pair_prompts
    assert len(ev) == spec.eval_prompts and len({prompt_key(p) for p in ev}) == len(ev)
    assert not {prompt_key(p) for p in ev} & {prompt_key(p) for p in pair}
    if suite.pairs.kind == "sampled":
        assert len(pair) == spec.train_prompts and len({prompt_key(p) for p in pair}) == len(pair)
    held_out = set(art.corpus[1])
    for p in ev[:20]:  # evaluation prompts are prefixes of held-out documents
        assert any(d.startswith(p) for d in held_out), p
    assert not (tmp_path / "cache").exists()  # drawing prompts computes and writes nothing


@pytest.mark.parametrize("path", SUITE_PATHS, ids=lambda p: p.stem)
def test_no_prompt_text_is_on_both_sides_across_presets(path, tmp_path):
    """Any preset's evaluation prompts against every preset's pair prompts, and the evaluation set of
    a smaller preset is the start of a larger one's (it never depends on the training-set size)."""
    suite = load_suite_file(path)
    needs_corpus(suite)
    arts = [artifacts(suite, p, tmp_path) for p in suite.presets]
    evals = {prompt_key(p) for a in arts for p in a.eval_prompts}
    pairs = {prompt_key(p) for a in arts for p in a.pair_prompts}
    assert not evals & pairs
    assert all(prompt_side(p, suite.seed) == "eval" for a in arts for p in a.eval_prompts)
    by_size = sorted((a.eval_prompts for a in arts), key=len)
    for small, large in zip(by_size, by_size[1:]):
        assert large[:len(small)] == small


def test_eval_prompts_do_not_depend_on_the_training_prompt_count(tmp_path):
    suite = load_suite_file(TINY)
    before = artifacts(suite, "smoke", tmp_path).eval_prompts
    bigger = copy.deepcopy(suite)
    bigger.presets["smoke"] = dataclasses.replace(bigger.presets["smoke"], train_prompts=150)
    assert artifacts(bigger, "smoke", tmp_path).eval_prompts == before


def test_prompt_side_ignores_whitespace_and_case():
    for seed in (0, 7):
        sides = {prompt_side(p, seed) for p in ("I watched this", "  i   WATCHED\tthis ", "I Watched This")}
        assert len(sides) == 1
    assert prompt_key(" The  Film\n") == "the film"
    texts = [f"prompt number {i}" for i in range(2000)]
    share = sum(prompt_side(t, 0) == "eval" for t in texts) / len(texts)
    assert 0.35 < share < 0.45


def _with_pairs_file(tmp_path: Path, rows: list[dict]):
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    suite = copy.deepcopy(load_suite_file(TINY))
    suite.pairs = PairSpec(kind="file", path=str(path))
    return suite, path


def test_pairs_file_prompts_are_excluded_from_evaluation(tmp_path):
    sampled_eval = artifacts(load_suite_file(TINY), "smoke", tmp_path).eval_prompts
    taken = sampled_eval[:6]
    # the same texts with other spacing and case still count as the same prompt
    variants = [f"  {p.upper()} " if i % 2 else p.replace(" ", "  ") for i, p in enumerate(taken)]
    rows = [{"prompt": p, "chosen": "good", "rejected": "bad"} for p in variants + ["Some other prompt"]]
    suite, path = _with_pairs_file(tmp_path, rows)
    art = artifacts(suite, "smoke", tmp_path)
    ev = art.eval_prompts
    assert len(ev) == suite.presets["smoke"].eval_prompts
    assert not {prompt_key(p) for p in ev} & {prompt_key(p) for p in taken}
    assert art.pair_prompts == list(dict.fromkeys(r["prompt"] for r in rows))
    # the baseline (evaluated on these prompts) is keyed by the file's content
    key = art.baseline_key
    assert key["prompt_split"] == PROMPT_SPLIT and key["pairs_file"]
    path.write_text(path.read_text() + json.dumps({"prompt": "x", "chosen": "a", "rejected": "b"}) + "\n")
    assert artifacts(suite, "smoke", tmp_path).baseline_key["pairs_file"] != key["pairs_file"]


def test_pairs_file_leaving_too_few_eval_prompts_is_refused(tmp_path):
    suite = load_suite_file(TINY)
    held_out = corpus_of(TINY)[1]
    pool = prompt_pool(held_out, suite, "eval")
    keep = suite.presets["smoke"].eval_prompts - 1
    rows = [{"prompt": p, "chosen": "good", "rejected": "bad"} for p in pool[keep:]]
    suite, path = _with_pairs_file(tmp_path, rows)
    with pytest.raises(UserError) as e:
        artifacts(suite, "smoke", tmp_path).check_prompts()
    assert e.value.where == f"{suite.path}: pairs.path" and e.value.field == str(path)
    assert f"only {keep} held-out prompts" in e.value.problem


@pytest.mark.parametrize("field", ["train_prompts", "eval_prompts"])
def test_preset_asking_more_than_the_corpus_gives_is_refused_before_compute(field, tmp_path):
    suite = copy.deepcopy(load_suite_file(TINY))
    suite.presets["smoke"] = dataclasses.replace(suite.presets["smoke"], **{field: 10_000})
    art = artifacts(suite, "smoke", tmp_path)
    with pytest.raises(UserError) as e:
        art.reference_dir  # π_SFT would be trained here; the prompt check comes first
    assert e.value.where == suite.path and e.value.field == f"presets.smoke.{field}"
    assert "asked for 10000" in e.value.problem
    assert not (tmp_path / "cache").exists()
