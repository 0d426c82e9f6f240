"""Best-of-n: at evaluation time, draw n completions from π_SFT and return the one the learned reward
model scores highest. No training (the reward model is the RLHF pipeline's, shared with ``ppo`` for
equal ``rm_*`` settings and seed).

KL(π_bon‖π_SFT). With F(y) = P_{Y~π_SFT}(r(Y) ≤ r(y)), π_bon(y)/π_SFT(y) ≤ n·F(y)^(n−1), with equality
when π_SFT has no atoms (no two candidates equal); the expectation under π_bon of the log of that is
the analytic value log n − (n−1)/n, an upper bound on the KL (docs/metrics.md §3.6). The measured KL
per evaluation sample y is :func:`rank_kl_estimate`: log n + (n−1)·log F̂(y), where
F̂(y) = (1 + #{j: r(Y_j) ≤ r(y)})/(M+1) ranks y among M fresh π_SFT samples Y_j of the same prompt
(``kl_samples``; drawn with the candidates, never used for selection). It is a Monte-Carlo estimate of
that bound's integrand: it counts ties as ≤, so it errs upwards like the bound, and the +1 makes it
slightly conservative for small M (about +0.03 nats at n = 4, M = 16 for an atomless π_SFT).

So best-of-n's ``kl`` is the analytic value (docs/metrics.md §3.6): exact when no two candidates of a
draw tie in reward-model score (``kl_kind = "analytic"``), an upper bound on the true KL when some do
(repeated completions; ``kl_kind = "bound"``, and the number of tied draws is recorded). The rank-based
estimate only adds noise and an upward bias to a value known in closed form, so it is kept as a
diagnostic (``kl_rank_estimate``), never as the ``kl`` column; best-of-1 is π_SFT, KL exactly 0. At an
evaluation temperature T ≠ 1 the candidates and the fresh samples come from π_SFT at T, so both are
about KL(π_bon‖π_SFT,T). There is no per-token policy, so the k1/k3 columns are NaN; ``ref_logp`` is
exact (log π_SFT,T) and ``policy_logp`` is ref_logp plus the per-sample rank estimate of the log-ratio.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from harness.core.config import hp
from harness.registry import Algorithm, register
from harness.training.reward_model import RewardModelFields


@dataclass
class BestOfNFields:
    n: int = hp(4, "candidates drawn from π_SFT per evaluation sample; the reward model picks one", ge=1)
    kl_samples: int = hp(16, "extra π_SFT samples per prompt for the rank-based KL diagnostic (0 = none)", ge=0)


@dataclass
class BestOfNConfig(RewardModelFields, BestOfNFields):
    pass


def analytic_kl(n: int) -> float:
    """log n − (n−1)/n: KL(π_bon‖π_SFT) for an atomless π_SFT, an upper bound otherwise."""
    return math.log(n) - (n - 1) / n


def rank_kl_estimate(chosen, fresh, n: int):
    """Per-sample estimate of log π_bon(y)/π_SFT(y) for best-of-``n`` picks y (the module docstring).

    ``chosen``: [N] reward-model scores of the picked completions. ``fresh``: [N, M] scores of M fresh
    π_SFT samples of each pick's prompt (not its candidates). Returns [N] float64:
    log n + (n−1)·log((1 + #{j: fresh_j ≤ chosen})/(M+1)); exactly 0 for n = 1 (best-of-1 is π_SFT),
    NaN for n > 1 and M = 0 (nothing to rank against).
    """
    import numpy as np

    chosen, fresh = np.asarray(chosen), np.asarray(fresh)
    if chosen.ndim != 1 or fresh.ndim != 2 or len(fresh) != len(chosen):
        raise ValueError(f"chosen must be [N] and fresh [N, M], got {chosen.shape} and {fresh.shape}")
    if n == 1:
        return np.zeros(len(chosen))
    m = fresh.shape[1]
    if m == 0:
        return np.full(len(chosen), np.nan)
    at_most = (fresh <= chosen[:, None]).sum(1)
    return math.log(n) + (n - 1) * np.log((1.0 + at_most) / (m + 1))


class BestOfNPolicy:
    """Implements the evaluation hooks of :func:`harness.evaluation.evaluate.evaluate_policy`."""

    def __init__(self, reward_model, n: int, kl_samples: int):
        self.rm, self.n, self.m = reward_model, n, kl_samples

    tied_draws = 0  # candidate sets whose top score is shared (set by sample_for_evaluation)

    @property
    def kl_kind(self) -> str:
        """What :meth:`sequence_kl`'s ``kl`` is (evaluation records it as ``kl_kind``): exactly 0 for
        n = 1 (π_bon = π_SFT); the analytic value, exact without ties and an upper bound with them."""
        if self.n == 1:
            return "exact"
        return "bound" if self.tied_draws else "analytic"

    def sample_for_evaluation(self, art, prompt_ids, n_samples: int, settings, seed: int):
        import numpy as np

        from harness.core import seeds
        from harness.evaluation.sampling.base import Completions, PolicyHandle

        n, m = self.n, self.m
        k = n_samples * n + m
        raw = art.sampler.sample(PolicyHandle(art.tokenizer, art.reference_model, art.reference_dir), prompt_ids, k,
                                 settings, seed=seeds.derive(seed, "best-of-n"), desc=f"best-of-{n}: sampling π_SFT")
        rows = [prompt_ids[i] for i in raw.prompt_index]
        scores = self.rm.score(rows, raw.token_ids, batch_size=settings.batch_size)
        pick, fresh = [], []
        self.tied_draws = 0
        for p in range(len(prompt_ids)):
            base = p * k
            for j in range(n_samples):
                cand = scores[base + j * n: base + (j + 1) * n]
                self.tied_draws += int(len(np.unique(cand)) < len(cand))
                pick.append(base + j * n + int(np.argmax(cand)))
                fresh.append(scores[base + n_samples * n: base + k])  # shared by the prompt's picks
        pick = np.array(pick)
        N = len(pick)
        return Completions(
            prompt_index=np.arange(N) // n_samples, sample_index=np.arange(N) % n_samples,
            token_ids=[raw.token_ids[i] for i in pick], texts=[raw.texts[i] for i in pick],
            finished=raw.finished[pick], engine=raw.engine,
            info={"kl_estimate": rank_kl_estimate(scores[pick], np.array(fresh).reshape(N, m), n),
                  "rm_score": scores[pick],
                  "rm_score_sft": float(scores.reshape(len(prompt_ids), k)[:, :n_samples * n].mean())})

    def sequence_kl(self, art, prompt_rows, comp):
        import numpy as np

        from harness.training.logprobs import batched_sequence_logps

        ev = art.suite.evaluation
        # the candidates were sampled from π_SFT at the evaluation temperature: log π_SFT,T(y)
        ref = batched_sequence_logps(art.reference_model, prompt_rows, comp.token_ids, art.tokenizer.pad_token_id,
                                     ev.batch_size, art.suite.policy.max_length,
                                     temperature=ev.temperature).double().numpy()
        log_ratio = comp.info["kl_estimate"]
        nan = np.full(len(ref), np.nan)
        self._last = {"rm_score": float(np.mean(comp.info["rm_score"])), "rm_score_sft": comp.info["rm_score_sft"]}
        self._estimate = float(np.mean(log_ratio)) if len(log_ratio) else float("nan")
        analytic = np.full(len(ref), 0.0 if self.n == 1 else analytic_kl(self.n))
        return {"kl": analytic, "kl_rank_estimate": log_ratio, "kl_k1": nan, "kl_k3": nan,
                "policy_logp": ref + log_ratio, "ref_logp": ref}

    def evaluation_metrics(self) -> dict:
        out = {"best_of_n": self.n, "kl_upper_bound": analytic_kl(self.n), "kl_upper_bound_kind": "bound",
               "kl_samples": self.m, "kl_rank_estimate": getattr(self, "_estimate", float("nan")),
               "kl_tied_draws": self.tied_draws,
               "kl_estimator": f"rank among {self.m} fresh π_SFT samples (best_of_n module docstring)"
               if self.m else "not measured (kl_samples=0)"}
        out.update({f"best_of_n_{k}": v for k, v in getattr(self, "_last", {}).items()})
        return out


@register("best-of-n", "Best-of-n: n samples from π_SFT, the learned reward model picks one (no training); "
                       "KL is the analytic log n − (n−1)/n (exact without ties), a rank estimate kept as a diagnostic", BestOfNConfig)
class BestOfN(Algorithm):
    def variant(self) -> str:
        return f"best-of-{self.config.n}"

    def train(self, ctx):
        from harness.training.reward_model import get_reward_model, record_reward_model, rm_settings

        rm, built = get_reward_model(ctx.art, ctx.seed, rm_settings(self.config))
        record_reward_model(ctx, rm, built)
        ctx.record(best_of_n=self.config.n, kl_upper_bound=analytic_kl(self.config.n))
        return BestOfNPolicy(rm, self.config.n, self.config.kl_samples)
