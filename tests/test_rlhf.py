"""The RLHF baselines: PPO with a learned reward model, PPO-GT, RLOO, GRPO and best-of-n.

Fast tests check the trainer-side vocabulary trick (a distinct padding token that must not change
the policy) and the listing. One slow session run trains every new algorithm end to end on the
sentiment smoke preset with small budgets (``--set``), plus a PPO-GT run whose KL bound is set so
low that it must end as ``diverged``, and the tests read its results.
"""
from __future__ import annotations

import json
import math

import pytest
import torch


# ------------------------------------------------------------------------------------------ fast
def test_trainer_vocabulary_leaves_the_policy_unchanged_and_is_removed_exactly(tiny_lm):
    from harness.adapters import MASKED_LOGIT, extend_vocab, shrink_vocab, suite_view, trainer_tokenizer

    make, tok = tiny_lm
    original, model = make(3), make(3)
    ext = trainer_tokenizer(tok)
    assert ext.pad_token_id == len(tok) == 5 and ext.eos_token_id == tok.eos_token_id
    ids = torch.tensor([[4, 0, 2, 1, 3, 4]])
    with torch.no_grad():
        want = torch.log_softmax(original(input_ids=ids).logits, -1)
        extend_vocab(model, ext)
        logits = model(input_ids=ids).logits
        got = torch.log_softmax(logits, -1)
    assert logits.shape[-1] == 6 and (logits[..., 5] == MASKED_LOGIT).all()
    torch.testing.assert_close(got[..., :5], want, rtol=0, atol=1e-6)  # the pad has probability 0
    assert torch.exp(got[..., 5]).max().item() == 0.0
    view = suite_view(model, tok)  # checkpoints evaluate this copy
    assert model.get_output_embeddings().weight.shape[0] == 6  # the original is untouched
    shrink_vocab(model, tok)
    for m in (view, model):
        assert m.config.vocab_size == 5 and m.config.pad_token_id == tok.pad_token_id
        with torch.no_grad():
            torch.testing.assert_close(torch.log_softmax(m(input_ids=ids).logits, -1), want, rtol=0, atol=1e-6)
        for (name, p), q in zip(m.named_parameters(), original.parameters()):
            assert torch.equal(p, q), name


def test_a_model_with_spare_embedding_rows_keeps_its_size(tiny_lm):
    from transformers import GPT2Config, GPT2LMHeadModel

    from harness.adapters import extend_vocab, shrink_vocab, trainer_tokenizer

    _, tok = tiny_lm
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=8, n_positions=16, n_embd=16, n_layer=1, n_head=2)).eval()
    ids = torch.tensor([[4, 0, 2, 1]])
    with torch.no_grad():
        want = model(input_ids=ids).logits
        ext = trainer_tokenizer(tok)  # pad id 5: an unused row of this model
        extend_vocab(model, ext)
        got = model(input_ids=ids).logits
        assert got.shape[-1] == 8 and (got[..., 5] < -1e8).all()
        keep = [0, 1, 2, 3, 4, 6, 7]
        torch.testing.assert_close(got[..., keep], want[..., keep])
        shrink_vocab(model, tok)
        assert model.get_input_embeddings().weight.shape[0] == 8
        torch.testing.assert_close(model(input_ids=ids).logits, want)


def test_position_hook_makes_a_left_padded_forward_match_the_unpadded_one(tiny_lm):
    from harness.adapters import positions_from_attention_mask, shrink_vocab

    make, tok = tiny_lm
    model = make(5)
    seq = torch.tensor([[4, 1, 2, 3]])
    padded = torch.tensor([[4, 4, 4, 1, 2, 3]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1]])
    with torch.no_grad():
        want = model(input_ids=seq).logits[0]
        before = model(input_ids=padded, attention_mask=mask).logits[0, 2:]
        positions_from_attention_mask(model)
        after = model(input_ids=padded, attention_mask=mask).logits[0, 2:]
    assert not torch.allclose(before, want, atol=1e-4)  # GPT-2 alone counts positions from the pad
    torch.testing.assert_close(after, want, rtol=0, atol=1e-5)
    shrink_vocab(model, tok)  # also removes the hook
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=padded, attention_mask=mask).logits[0, 2:], before)


def test_best_of_n_kl_estimate_is_near_the_analytic_value_for_an_atomless_reference():
    import numpy as np

    from algorithms.best_of_n import analytic_kl

    rng = np.random.default_rng(0)
    n, m, prompts = 4, 16, 20000
    r = rng.normal(size=(prompts, n + m))  # continuous rewards of π_SFT samples: no atoms
    best = r[:, :n].max(1)
    rank = (r[:, n:] <= best[:, None]).sum(1)
    est = np.log(n) + (n - 1) * np.log((1 + rank) / (m + 1))
    assert analytic_kl(n) == pytest.approx(math.log(4) - 0.75)
    assert 0 < est.mean() - analytic_kl(n) < 0.06  # conservative by a little, as documented
    assert est.max() <= math.log(n) + 1e-12


def test_list_algorithms_shows_each_rlhf_algorithm_with_its_hyperparameters(capsys):
    from harness.cli import main

    assert main(["list", "algorithms"]) == 0
    out = capsys.readouterr().out
    blocks = {}
    for line in out.splitlines():
        if not line.startswith(" "):
            name = line.split(":", 1)[0]
            blocks[name] = [line]
        else:
            blocks[name].append(line)
    expect = {"ppo": ["kl_coef", "lr", "total_episodes", "response_length", "ppo_epochs", "num_mini_batches",
                      "rm_lr", "rm_epochs"],
              "ppo-gt": ["kl_coef", "lr", "total_episodes", "response_length", "ppo_epochs", "num_mini_batches"],
              "rloo": ["beta", "reward", "num_generations", "rm_lr"], "grpo": ["beta", "loss_type", "reward"],
              "best-of-n": ["n", "kl_samples", "rm_lr"]}
    for name, keys in expect.items():
        assert name in blocks, name
        assert len(blocks[name][0]) > len(name) + 10  # a one-line description
        listed = {line.split("=")[0].strip() for line in blocks[name][1:]}
        assert set(keys) <= listed, (name, set(keys) - listed)
    assert "rm_lr" not in {line.split("=")[0].strip() for line in blocks["ppo-gt"][1:]}


# ------------------------------------------------------------------------------------------ slow
RM = ["rm_epochs=0.5"]  # one reward model for all four users (equal settings share the cached model)
SETS = {
    "ppo": ["total_episodes=32", "batch_size=16"] + RM,
    "ppo-gt": ["total_episodes=48", "batch_size=16", "kl_estimator=k3"],
    "rloo": ["steps=3", "prompts_per_step=4"] + RM,
    "grpo": ["steps=3", "prompts_per_step=4"] + RM,
    "best-of-n": ["n=2", "kl_samples=4"] + RM,
}


@pytest.fixture(scope="module")
def rlhf_results(smoke_cache, tmp_path_factory):
    from harness.cli import main

    results = tmp_path_factory.mktemp("rlhf-results")
    args = ["run", "sentiment", "--preset", "smoke", "--algorithms", ",".join(SETS), "--seeds", "0",
            "--results", str(results), "--eval-checkpoints", "1",
            # the second PPO-GT run must hit its KL bound (k3 > 0 once the policy moved): a diverged run
            "--sweep", "ppo-gt.max_kl=100,0.000001"]
    for algo, items in SETS.items():
        for item in items:
            args += ["--set", f"{algo}.{item}"]
    assert main(args) == 0
    runs = {}
    for path in (results / "sentiment").iterdir():
        if path.is_dir() and not path.name.startswith("."):
            m = json.loads((path / "metrics.json").read_text())
            runs[(m["algorithm"], m["hyperparameters"].get("max_kl"))] = (path, m)
    return results, runs


def _ok(runs, algo):
    (path, m), = [v for (a, _), v in runs.items() if a == algo and v[1]["status"] == "ok"]
    return path, m


@pytest.mark.slow
def test_every_rlhf_algorithm_runs_end_to_end_and_reports_a_row(rlhf_results):
    from harness.analysis.report import load_runs, summary_table

    results, runs = rlhf_results
    for algo in SETS:
        path, m = _ok(runs, algo)
        met = m["metrics"]
        assert met["n_prompts"] == 128 and math.isfinite(met["gold_reward"]) and 0 <= met["win_rate"] <= 1
        assert math.isfinite(met["kl"]) and met["kl"] > -1e-6, algo
        assert (path / "samples.parquet").exists()
    table = summary_table(load_runs(results, "sentiment"), n_resamples=200)
    assert set(SETS) | {"reference"} <= set(table.algorithm)


@pytest.mark.slow
def test_learned_reward_model_ranks_held_out_chosen_above_rejected(rlhf_results):
    _, runs = rlhf_results
    facts = {algo: _ok(runs, algo)[1]["extra"] for algo in ("ppo", "rloo", "grpo", "best-of-n")}
    assert len({f["rm_artifact"] for f in facts.values()}) == 1  # trained once, shared
    assert sum(f["rm_built_by_this_run"] for f in facts.values()) <= 1
    acc = facts["ppo"]["rm_valid_accuracy"]
    assert facts["ppo"]["rm_valid_pairs"] > 100 and acc > 0.5, acc


@pytest.mark.slow
def test_trl_training_logs_and_checkpoints_are_recorded(rlhf_results):
    _, runs = rlhf_results
    for algo, steps in (("ppo", 2), ("ppo-gt", 3), ("rloo", 3), ("grpo", 3)):
        path, m = _ok(runs, algo)
        log = [json.loads(line) for line in (path / "train_log.jsonl").read_text().splitlines()]
        assert [r["step"] for r in log] == list(range(1, steps + 1)), algo
        for key in ("reward", "kl", "entropy", "clip_fraction"):
            assert all(key in r for r in log), (algo, key)
        assert m["extra"]["train_steps"] == steps
        assert len(m["trajectory"]) == 1 and "gold_reward" in m["trajectory"][0], algo  # --eval-checkpoints 1


@pytest.mark.slow
def test_a_run_past_its_kl_bound_is_recorded_as_diverged(rlhf_results):
    _, runs = rlhf_results
    _, m = runs[("ppo-gt", 1e-6)]
    assert m["status"] == "diverged", m.get("failure")
    assert m["failure"]["step"] >= 1 and "KL" in m["failure"]["reason"]
    assert runs[("ppo-gt", 100.0)][1]["status"] == "ok"  # the sweep went on


@pytest.mark.slow
def test_best_of_n_reports_measured_kl_beside_the_analytic_bound(rlhf_results):
    import pandas as pd

    _, runs = rlhf_results
    path, m = _ok(runs, "best-of-n")
    met = m["metrics"]
    assert met["best_of_n"] == 2 and met["kl_upper_bound"] == pytest.approx(math.log(2) - 0.5)
    s = pd.read_parquet(path / "samples.parquet")
    assert s.kl.between(-1e9, math.log(2) + 1e-9).all() and s.kl_k1.isna().all()
    assert met["best_of_n_rm_score"] >= met["best_of_n_rm_score_sft"]  # the ranker picked higher-scored samples
