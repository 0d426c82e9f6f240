"""The RLHF baselines: PPO with a learned reward model, PPO-GT, RLOO, GRPO and best-of-n.

Fast tests check the trainer-side vocabulary trick (a distinct padding token that must not change
the policy) and the listing. One slow session run trains every new algorithm end to end on the
sentiment smoke preset with small budgets (``--set``), plus a PPO-GT run whose KL bound is set so
low that it must end as ``diverged``, and the tests read its results.
"""
from __future__ import annotations

import json
import math

import numpy as np
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


@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_best_of_n_analytic_kl_is_the_exact_kl_over_an_atomless_reference(n):
    """With scores U ~ Uniform(0, 1) under π_SFT (no atoms) the best of n has density n·u^(n−1), so
    KL(π_bon‖π_SFT) = ∫ n u^(n−1) log(n u^(n−1)) du, integrated numerically here."""
    from scipy import integrate

    from algorithms.best_of_n import analytic_kl

    exact, err = integrate.quad(lambda u: n * u ** (n - 1) * math.log(n * u ** (n - 1)), 0, 1)
    assert err < 1e-7 and analytic_kl(n) == pytest.approx(exact, abs=1e-7)


def _best_of_n_draws(rng, draws, n, m):
    """Scores of one best-of-n pick and of m fresh π_SFT samples per draw, uniform (atomless), and the
    true log density ratio of each pick, log n + (n−1)·log U (its mean over picks is the exact KL)."""
    chosen = rng.random((draws, n)).max(1)
    fresh = rng.random((draws, m))
    return chosen, fresh, math.log(n) + (n - 1) * np.log(chosen)


def test_rank_kl_estimate_has_the_expectation_derived_for_it_and_converges_to_the_exact_kl():
    """The production estimator, on best-of-4 over an atomless π_SFT where the KL is known exactly.
    Each draw is compared with the true log-ratio of the same pick (paired: the pick-to-pick variance
    cancels, so the tolerances are tight). M = 16 (the default): the mean error is the estimator's
    known bias, E[est] − KL = (n−1)·E[log((1+R)/(M+1)) − log U] with R ~ BetaBinomial(M, n, 1)
    (R | U ~ Binomial(M, U), U ~ Beta(n, 1)): +0.0304 nats, the documented "about +0.03".
    M = 1024: estimate and true log-ratio agree pick by pick, and the mean is the exact KL."""
    from scipy import stats

    from algorithms.best_of_n import analytic_kl, rank_kl_estimate

    rng = np.random.default_rng(0)
    n = 4
    r = np.arange(17)
    bias_16 = (n - 1) * (stats.betabinom(16, n, 1).pmf(r) * np.log((1 + r) / 17)).sum() + (n - 1) / n
    chosen, fresh, true_lr = _best_of_n_draws(rng, 200_000, n, 16)
    est = rank_kl_estimate(chosen, fresh, n)
    assert abs(true_lr.mean() - analytic_kl(n)) < 0.01  # the paired target's mean is the exact KL (s.e. 0.002)
    err = est - true_lr
    se = err.std(ddof=1) / math.sqrt(len(err))
    assert abs(err.mean() - bias_16) < 4 * se, (err.mean(), bias_16, se)
    chosen, fresh, true_lr = _best_of_n_draws(rng, 10_000, n, 1024)
    est = rank_kl_estimate(chosen, fresh, n)
    err = est - true_lr
    assert np.sqrt((err ** 2).mean()) < 0.1  # per pick: F̂(y) → F(y)
    assert abs(est.mean() - true_lr.mean()) < 0.003  # bias 0.0005 at M = 1024, paired s.e. ≈ 0.0005
    assert abs(est.mean() - analytic_kl(n)) < 4 * est.std(ddof=1) / math.sqrt(len(est))


def test_rank_kl_estimate_counts_ties_as_at_most_and_handles_n_1_and_no_fresh_samples():
    from algorithms.best_of_n import rank_kl_estimate

    chosen = np.array([1.0, 1.0, -5.0, 9.0])
    fresh = np.array([[0.0, 1.0, 1.0, 2.0],   # 3 of 4 at most 1.0 (two ties): F̂ = 4/5
                      [2.0, 2.0, 3.0, 4.0],   # none: F̂ = 1/5
                      [-5.0, -5.0, -5.0, -5.0],  # all tied: F̂ = 1
                      [0.0, 1.0, 2.0, 3.0]])  # all below: F̂ = 1
    want = math.log(3) + 2 * np.log(np.array([4, 1, 5, 5]) / 5)
    np.testing.assert_allclose(rank_kl_estimate(chosen, fresh, 3), want, rtol=0, atol=1e-12)
    assert np.array_equal(rank_kl_estimate(chosen, fresh, 1), np.zeros(4))  # best-of-1 is π_SFT
    assert np.isnan(rank_kl_estimate(chosen, np.zeros((4, 0)), 3)).all()  # kl_samples = 0: not measured
    with pytest.raises(ValueError):
        rank_kl_estimate(chosen, fresh[:3], 3)


def test_best_of_n_evaluation_picks_the_top_candidate_and_reports_the_analytic_kl(tiny_lm):
    """Through evaluate_policy at T = 0.7 on the tiny model, with a reward model that scores token ids:
    each evaluation sample is its group's top-scored candidate; its KL is the analytic
    log n − (n−1)/n, "analytic" without tied candidates and "bound" with them; the rank-based estimate
    against the prompt's fresh samples (never the candidates) is kept as a diagnostic; ref_logp is
    log π_SFT at T."""
    from types import SimpleNamespace

    import pandas as pd

    from algorithms.best_of_n import BestOfNPolicy, analytic_kl, rank_kl_estimate
    from harness.evaluation.evaluate import evaluate_policy
    from harness.evaluation.sampling.hf import HFSampler
    from harness.suites.spec import EvalSpec
    from harness.training.logprobs import batched_sequence_logps

    make, tok = tiny_lm
    ref = make(3)
    prompts = [[4, 0], [4, 2, 1, 3]]

    class TokenRM:  # distinct completions score differently; equal ones tie
        def score(self, rows, token_ids, batch_size=64):
            return np.array([sum((t + 1) * 6.0 ** -i for i, t in enumerate(ids)) for ids in token_ids])

    class RecordingSampler(HFSampler):
        def sample(self, *args, **kwargs):
            self.last = super().sample(*args, **kwargs)
            return self.last

    def run(n, m, spp=3):
        ev = EvalSpec(max_new_tokens=4, temperature=0.7, samples_per_prompt=spp, batch_size=64)
        rows = len(prompts) * spp
        baseline = pd.DataFrame({"prompt_index": np.arange(rows) // spp, "sample_index": np.arange(rows) % spp,
                                 "completion": ["a"] * rows, "length": np.ones(rows, dtype=int),
                                 "gold_reward": np.zeros(rows)})
        art = SimpleNamespace(suite=SimpleNamespace(evaluation=ev, policy=SimpleNamespace(max_length=None)),
                              sampler=RecordingSampler(), tokenizer=tok, reference_model=ref, reference_dir=None,
                              eval_prompts=["p0", "p1"], eval_prompt_ids=prompts, baseline=baseline,
                              judge=SimpleNamespace(identity={"judge": "len"},
                                                    score=lambda p, texts: np.array([len(t) for t in texts], float)))
        policy = BestOfNPolicy(TokenRM(), n, m)
        samples, met = evaluate_policy(policy, art, seed=0, n_resamples=50)
        return art.sampler.last, samples, met, policy

    n, m, spp = 4, 8, 3
    raw, samples, met, policy = run(n, m, spp)
    scores = TokenRM().score(None, raw.token_ids)
    k = spp * n + m
    pick = np.array([p * k + j * n + int(np.argmax(scores[p * k + j * n: p * k + (j + 1) * n]))
                     for p in range(len(prompts)) for j in range(spp)])
    assert [list(t) for t in samples.completion_ids] == [raw.token_ids[i] for i in pick]
    fresh = np.stack([scores[p * k + spp * n: (p + 1) * k] for p in range(len(prompts)) for _ in range(spp)])
    est = rank_kl_estimate(scores[pick], fresh, n)
    np.testing.assert_array_equal(samples.kl_rank_estimate.to_numpy(), est)
    assert met["kl_rank_estimate"] == pytest.approx(est.mean())
    np.testing.assert_array_equal(samples.kl.to_numpy(), np.full(len(pick), analytic_kl(n)))
    tied = sum(len(set(scores[p * k + j * n: p * k + (j + 1) * n])) < n for p in range(len(prompts)) for j in range(spp))
    assert met["kl_tied_draws"] == tied
    assert samples.kl_k1.isna().all() and samples.kl_k3.isna().all()
    ref_t = batched_sequence_logps(ref, [prompts[i] for i in samples.prompt_index],
                                   [raw.token_ids[i] for i in pick], tok.pad_token_id, temperature=0.7).double().numpy()
    np.testing.assert_allclose(samples.ref_logp.to_numpy(), ref_t, rtol=0, atol=1e-9)
    assert met["kl_kind"] == ("bound" if tied else "analytic") and met["kl_temperature"] == 0.7
    assert met["kl_upper_bound"] == analytic_kl(n) and met["kl_upper_bound_kind"] == "bound"
    policy.tied_draws = 0
    assert policy.kl_kind == "analytic"
    policy.tied_draws = 2
    assert policy.kl_kind == "bound"
    _, samples1, met1, _ = run(1, 0)  # best-of-1 is π_SFT: its KL of 0 is exact
    assert (samples1.kl == 0).all() and met1["kl_kind"] == "exact"


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
RM = []  # the preset's reward model (2 epochs), one for all four users (equal settings share the cached model)
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
    from harness.analysis import comparison

    results, runs = rlhf_results
    for algo in SETS:
        path, m = _ok(runs, algo)
        met = m["metrics"]
        assert met["n_prompts"] == 128 and math.isfinite(met["gold_reward"]) and 0 <= met["win_rate"] <= 1
        assert math.isfinite(met["kl"]) and met["kl"] > -1e-6, algo
        assert (path / "samples.parquet").exists()
    table = comparison(results, "sentiment", n_resamples=200)
    assert set(SETS) | {"reference"} <= set(table.algorithm)


@pytest.mark.slow
def test_learned_reward_model_ranks_held_out_chosen_above_rejected(rlhf_results):
    _, runs = rlhf_results
    facts = {algo: _ok(runs, algo)[1]["extra"] for algo in ("ppo", "rloo", "grpo", "best-of-n")}
    assert len({f["rm_artifact"] for f in facts.values()}) == 1  # trained once, shared
    assert sum(f["rm_built_by_this_run"] for f in facts.values()) <= 1
    acc = facts["ppo"]["rm_valid_accuracy"]
    assert facts["ppo"]["rm_valid_pairs"] > 100 and acc > 0.6, acc  # well above chance on held-out prompts


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
def test_best_of_n_reports_the_analytic_kl_and_the_rank_estimate_as_a_diagnostic(rlhf_results):
    import pandas as pd

    _, runs = rlhf_results
    path, m = _ok(runs, "best-of-n")
    met = m["metrics"]
    assert met["best_of_n"] == 2 and met["kl_upper_bound"] == pytest.approx(math.log(2) - 0.5)
    assert met["kl_kind"] in ("analytic", "bound") and met["kl_temperature"] == 1.0
    assert (met["kl_kind"] == "bound") == (met["kl_tied_draws"] > 0)
    assert met["kl"] == pytest.approx(math.log(2) - 0.5) and math.isfinite(met["kl_rank_estimate"])
    s = pd.read_parquet(path / "samples.parquet")
    assert s.kl_rank_estimate.between(-1e9, math.log(2) + 1e-9).all() and s.kl_k1.isna().all()
    assert met["best_of_n_rm_score"] >= met["best_of_n_rm_score_sft"]  # the ranker picked higher-scored samples
