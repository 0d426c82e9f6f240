"""The KL routine against exact enumeration of every completion of a 5-token model, and the HF
sampler's samples against the enumerated policy distribution; at temperature 1 and at T ≠ 1, where
the KL must be KL(π_T‖π_ref,T) between the tempered policies the samples come from."""
import itertools
import math
from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from harness.evaluation.kl import sequence_kl
from harness.training.logprobs import batched_sequence_logps
from harness.evaluation.sampling.base import GenerationSettings, PolicyHandle
from harness.evaluation.sampling.hf import HFSampler

EOS, T = 4, 4
PROMPTS = [[EOS, 0], [EOS, 2, 1, 3]]  # two lengths, so generation uses left padding


def all_completions():
    """Every completion of at most T tokens: EOS-terminated ones, plus truncated ones of length T."""
    out = [list(s) + [EOS] for k in range(T) for s in itertools.product(range(4), repeat=k)]
    out += [list(s) for s in itertools.product(range(4), repeat=T)]
    return out


def enumerate_policy(model, reference, prompt):
    comps = all_completions()
    prompts = [prompt] * len(comps)
    logp = batched_sequence_logps(model, prompts, comps, EOS, batch_size=512).double().numpy()
    logq = batched_sequence_logps(reference, prompts, comps, EOS, batch_size=512).double().numpy()
    return comps, logp, logq


def enumerate_tempered(model, prompt, temperature):
    """log π_T(y|x) of every completion from per-step softmax(logits/T), computed here on its own: one
    unpadded forward pass per completion length, float64 after the logits (not the scoring code path)."""
    comps = all_completions()
    out = np.zeros(len(comps))
    by_length = defaultdict(list)
    for i, c in enumerate(comps):
        by_length[len(c)].append(i)
    with torch.no_grad():
        for idx in by_length.values():
            ids = torch.tensor([list(prompt) + comps[i] for i in idx])
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, len(prompt) - 1:-1]
            logits = logits.double() / temperature
            steps = torch.log_softmax(logits, -1).gather(-1, ids[:, len(prompt):, None]).squeeze(-1)
            out[idx] = steps.sum(-1).numpy()
    return comps, out


def chisq_p(token_ids, comps, logp):
    """Chi-square p-value of sampled completions against the enumerated distribution exp(logp)."""
    from scipy import stats

    index = {tuple(c): i for i, c in enumerate(comps)}
    counts = np.zeros(len(comps))
    for t in token_ids:
        counts[index[tuple(t)]] += 1
    expected = np.exp(logp) * len(token_ids)
    big = expected >= 5  # pool rare outcomes so the chi-square approximation holds
    obs, exp = np.append(counts[big], counts[~big].sum()), np.append(expected[big], expected[~big].sum())
    return stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue


@pytest.mark.parametrize("prompt", PROMPTS)
def test_enumerated_distribution_sums_to_one(tiny_lm, prompt):
    make, _ = tiny_lm
    _, logp, _ = enumerate_policy(make(1), make(2), prompt)
    assert abs(np.exp(logp).sum() - 1) < 1e-6  # fp32 scoring


@pytest.mark.parametrize("prompt", PROMPTS)
def test_kl_estimators_have_the_exact_sequence_kl_as_expectation(tiny_lm, prompt):
    make, _ = tiny_lm
    pi, ref = make(1), make(2)
    comps, logp, logq = enumerate_policy(pi, ref, prompt)
    w = np.exp(logp)
    true_kl = float((w * (logp - logq)).sum())
    assert true_kl > 0.05
    est = sequence_kl(pi, ref, [prompt] * len(comps), comps, EOS, batch_size=512)
    for key in ("kl", "kl_k1", "kl_k3"):  # E_π[estimator] = KL(π‖π_ref) exactly, by enumeration
        assert abs(float((w * est[key]).sum()) - true_kl) < 1e-5 * max(1, true_kl), key
    assert (est["kl"] >= -1e-9).all() and (est["kl_k3"] >= -1e-9).all()
    np.testing.assert_allclose(est["policy_logp"], logp, atol=1e-5)


@pytest.mark.parametrize("temperature", [0.7, 1.5])
@pytest.mark.parametrize("prompt", PROMPTS)
def test_tempered_kl_is_exactly_the_kl_between_the_tempered_policies(tiny_lm, prompt, temperature):
    """Samples drawn at temperature T come from π_T; every KL column scored at T has expectation
    KL(π_T‖π_ref,T) under π_T, by enumeration of all 341 completions with tempered per-step softmaxes.
    Scoring the same samples on untempered logits (the old behaviour) fails this check."""
    make, _ = tiny_lm
    pi, ref = make(1), make(2)
    comps, logp = enumerate_tempered(pi, prompt, temperature)
    _, logq = enumerate_tempered(ref, prompt, temperature)
    w = np.exp(logp)  # π_T(y): the sampling distribution at T
    assert abs(w.sum() - 1) < 1e-6 and abs(np.exp(logq).sum() - 1) < 1e-6
    true_kl = float((w * (logp - logq)).sum())  # KL(π_T‖π_ref,T)
    _, logp1 = enumerate_tempered(pi, prompt, 1.0)
    _, logq1 = enumerate_tempered(ref, prompt, 1.0)
    untempered_kl = float((np.exp(logp1) * (logp1 - logq1)).sum())  # KL(π‖π_ref): a different number
    assert abs(true_kl - untempered_kl) > 0.02  # (tolerance below: 1e-5)
    rows = [prompt] * len(comps)
    est = sequence_kl(pi, ref, rows, comps, EOS, batch_size=512, temperature=temperature)
    for key in ("kl", "kl_k1", "kl_k3"):
        assert abs(float((w * est[key]).sum()) - true_kl) < 1e-5 * max(1, true_kl), key
    assert (est["kl"] >= -1e-9).all() and (est["kl_k3"] >= -1e-9).all()
    np.testing.assert_allclose(est["policy_logp"], logp, atol=1e-5)
    np.testing.assert_allclose(est["ref_logp"], logq, atol=1e-5)
    # the test has power: the samples of π_T scored on untempered logits miss KL(π_T‖π_ref,T)
    old = sequence_kl(pi, ref, rows, comps, EOS, batch_size=512)
    assert abs(float((w * old["kl"]).sum()) - true_kl) > 0.02


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_kl_of_a_policy_against_itself_is_exactly_zero(tiny_lm, temperature):
    make, _ = tiny_lm
    a, b = make(1), make(1)
    comps = all_completions()
    est = sequence_kl(a, b, [PROMPTS[1]] * len(comps), comps, EOS, temperature=temperature)
    for key in ("kl", "kl_k1", "kl_k3"):
        assert np.all(est[key] == 0.0), key


def test_hf_sampler_draws_from_the_scored_policy(tiny_lm):
    """Chi-square of sampled completions against π(y) from the scoring pass: fails if temperature,
    truncation (top-k/top-p), left padding or EOS handling made sampling differ from scoring."""
    from scipy import stats

    make, tok = tiny_lm
    pi = make(3)
    n = 3000
    out = HFSampler().sample(PolicyHandle(tok, pi), PROMPTS, n, GenerationSettings(T, 1.0, 1500), seed=0)
    assert out.token_ids[0] and len(out.token_ids) == 2 * n
    assert all(f == (t[-1] == EOS) for f, t in zip(out.finished, out.token_ids))
    for j, prompt in enumerate(PROMPTS):
        comps, logp, _ = enumerate_policy(pi, pi, prompt)
        index = {tuple(c): i for i, c in enumerate(comps)}
        counts = np.zeros(len(comps))
        for k in np.flatnonzero(out.prompt_index == j):
            counts[index[tuple(out.token_ids[k])]] += 1
        expected = np.exp(logp) * n
        # pool rare outcomes so the chi-square approximation holds
        big = expected >= 5
        obs = np.append(counts[big], counts[~big].sum())
        exp = np.append(expected[big], expected[~big].sum())
        p = stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue
        assert p > 1e-4, (prompt, p)
    # a sampler at temperature 2 must fail the same test (the test has power)
    hot = HFSampler().sample(PolicyHandle(tok, pi), [PROMPTS[0]], n, GenerationSettings(T, 2.0, 1500), seed=0)
    comps, logp, _ = enumerate_policy(pi, pi, PROMPTS[0])
    index = {tuple(c): i for i, c in enumerate(comps)}
    counts = np.zeros(len(comps))
    for t in hot.token_ids:
        counts[index[tuple(t)]] += 1
    expected = np.exp(logp) * n
    big = expected >= 5
    obs, exp = np.append(counts[big], counts[~big].sum()), np.append(expected[big], expected[~big].sum())
    assert stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue < 1e-6


def test_hf_sampler_at_a_temperature_draws_from_the_tempered_policy_the_kl_is_scored_on(tiny_lm):
    """At T = 0.7 the HF sampler's completions follow π_T (chi-square against the enumeration; the
    untempered π is rejected), and the mean exact KL over those samples, scored at T, agrees with the
    enumerated KL(π_T‖π_ref,T) within Monte-Carlo error, while scoring them untempered does not."""
    make, tok = tiny_lm
    pi, ref = make(3), make(1)
    temp, n = 0.7, 3000
    out = HFSampler().sample(PolicyHandle(tok, pi), PROMPTS, n, GenerationSettings(T, temp, 1500), seed=1)
    for j, prompt in enumerate(PROMPTS):
        rows = [out.token_ids[k] for k in np.flatnonzero(out.prompt_index == j)]
        comps, logp = enumerate_tempered(pi, prompt, temp)
        _, logq = enumerate_tempered(ref, prompt, temp)
        assert chisq_p(rows, comps, logp) > 1e-4, prompt
        _, logp1 = enumerate_tempered(pi, prompt, 1.0)
        assert chisq_p(rows, comps, logp1) < 1e-6, prompt  # power: T was applied
        true_kl = float((np.exp(logp) * (logp - logq)).sum())
        est = sequence_kl(pi, ref, [prompt] * len(rows), rows, EOS, batch_size=1024, temperature=temp)["kl"]
        se = est.std(ddof=1) / math.sqrt(len(est))
        assert abs(est.mean() - true_kl) < 4 * se, (prompt, est.mean(), true_kl, se)
        old = sequence_kl(pi, ref, [prompt] * len(rows), rows, EOS, batch_size=1024)["kl"]
        assert abs(old.mean() - true_kl) > 10 * se, (prompt, old.mean(), true_kl, se)


class _LengthJudge:
    identity = {"judge": "length"}

    def score(self, prompts, texts):
        return np.array([float(len(t)) for t in texts])


def fake_artifacts(tok, reference, temperature, samples_per_prompt=4):
    """The parts of SuiteArtifacts that evaluate_policy reads, around the tiny model."""
    from harness.suites.spec import EvalSpec

    ev = EvalSpec(max_new_tokens=T, temperature=temperature, samples_per_prompt=samples_per_prompt, batch_size=64)
    n = len(PROMPTS) * samples_per_prompt
    baseline = pd.DataFrame({"prompt_index": np.arange(n) // samples_per_prompt,
                             "sample_index": np.arange(n) % samples_per_prompt, "completion": ["a"] * n,
                             "length": np.ones(n, dtype=int), "finished": np.ones(n, dtype=bool),
                             "gold_reward": np.full(n, 3.0)})
    return SimpleNamespace(suite=SimpleNamespace(evaluation=ev, policy=SimpleNamespace(max_length=None)),
                           sampler=HFSampler(), tokenizer=tok, reference_model=reference, reference_dir=None,
                           eval_prompts=["p0", "p1"], eval_prompt_ids=PROMPTS, judge=_LengthJudge(),
                           baseline=baseline)


def test_evaluation_scores_kl_at_the_suite_temperature_and_records_what_the_kl_is(tiny_lm):
    from harness.evaluation.evaluate import evaluate_policy

    make, tok = tiny_lm
    pi, ref = make(3), make(1)
    art = fake_artifacts(tok, ref, temperature=0.7)
    samples, met = evaluate_policy(pi, art, seed=0, n_resamples=50)
    assert met["kl_kind"] == "exact" and met["kl_temperature"] == 0.7
    rows = [PROMPTS[i] for i in samples.prompt_index]
    ids = [list(t) for t in samples.completion_ids]
    at_t = sequence_kl(pi, ref, rows, ids, EOS, temperature=0.7)
    for key in ("kl", "kl_k1", "kl_k3", "policy_logp", "ref_logp"):
        np.testing.assert_allclose(samples[key].to_numpy(), at_t[key], rtol=1e-6, atol=1e-9, err_msg=key)
    assert met["kl"] == pytest.approx(at_t["kl"].mean())
    untempered = sequence_kl(pi, ref, rows, ids, EOS)["kl"]
    assert np.abs(samples.kl.to_numpy() - untempered).max() > 0.1
    # the reference row: π_ref against itself at T is exactly 0 in every column
    _, met_ref = evaluate_policy(ref, art, seed=0, n_resamples=50)
    assert met_ref["kl"] == met_ref["kl_k1"] == met_ref["kl_k3"] == 0.0
    assert met_ref["kl_kind"] == "exact" and met_ref["kl_temperature"] == 0.7


def test_hf_sampler_is_seeded(tiny_lm):
    make, tok = tiny_lm
    pi = make(3)
    s = HFSampler()
    a = s.sample(PolicyHandle(tok, pi), PROMPTS, 8, GenerationSettings(T, 1.0, 64), seed=5)
    b = s.sample(PolicyHandle(tok, pi), PROMPTS, 8, GenerationSettings(T, 1.0, 64), seed=5)
    c = s.sample(PolicyHandle(tok, pi), PROMPTS, 8, GenerationSettings(T, 1.0, 64), seed=6)
    assert a.token_ids == b.token_ids
    assert a.token_ids != c.token_ids
