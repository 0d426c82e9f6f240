"""The KL routine against exact enumeration of every completion of a 5-token model, and the HF
sampler's samples against the enumerated policy distribution."""
import itertools
import math

import numpy as np
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


def test_kl_of_a_policy_against_itself_is_exactly_zero(tiny_lm):
    make, _ = tiny_lm
    a, b = make(1), make(1)
    comps = all_completions()
    est = sequence_kl(a, b, [PROMPTS[1]] * len(comps), comps, EOS)
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


def test_hf_sampler_is_seeded(tiny_lm):
    make, tok = tiny_lm
    pi = make(3)
    s = HFSampler()
    a = s.sample(PolicyHandle(tok, pi), PROMPTS, 8, GenerationSettings(T, 1.0, 64), seed=5)
    b = s.sample(PolicyHandle(tok, pi), PROMPTS, 8, GenerationSettings(T, 1.0, 64), seed=5)
    c = s.sample(PolicyHandle(tok, pi), PROMPTS, 8, GenerationSettings(T, 1.0, 64), seed=6)
    assert a.token_ids == b.token_ids
    assert a.token_ids != c.token_ids
