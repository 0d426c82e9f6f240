"""One base for offline pairwise preference methods (DPO and its relatives).

A method is a hyperparameter dataclass (an :class:`~harness.training.hparams.OptimConfig`) and a
subclass of :class:`PairwiseAlgorithm` with one pure function of log-probabilities:

- ``loss(lp) -> losses`` (``[B]``, one per pair; or ``(losses, {name: [B] tensor})`` to log more);
- optionally ``reward(lp) -> (r_w, r_l)``, the method's implicit reward of the chosen and the
  rejected response (DPO: β·log π_θ/π_ref). A method that defines it gets the implicit-reward
  diagnostics below for free.

``lp`` is a :class:`PairLogps`: per-sequence log-probabilities of the chosen and rejected responses
under π_θ (summed over completion tokens, with gradient) and under π_ref (cached once per suite), and
the completion lengths, hence per-token means. Everything else comes from here: the seeded batches,
the scoring forward (one forward over ``[chosen; rejected]``, or, when prompts are long, each prompt
forwarded once and both completions continued from its key/value cache: :func:`use_prefix_sharing`),
the optimizer, clipping and divergence guards, step logs,
evaluations along training and resumable checkpoints (:func:`harness.training.loop.train_loop`), and
batches placed on the policy's device. The policy is ``ctx.init_policy()``: whatever the harness
hands out (device, adapters) every pairwise method trains alike.

Diagnostics, for every method with an implicit reward (the DPO paper's lens):

- per step, in ``train_log.jsonl``: ``rewards/*`` (chosen, rejected, margin, accuracy) and the
  distribution of the per-example gradient weight ``gradweight/{mean,p10,p50,p90,ess}``. The weight
  is w = −∂ℓ/∂r̂_w: how strongly a pair still pushes its chosen response up, in units of the implicit
  reward. For DPO it is σ(r̂_l − r̂_w) (the DPO paper, §4), 0.5 at π_ref and → 0 once a pair is ranked
  with a wide margin; ``ess`` = (Σ|w|)² / (B·Σw²) is the share of the batch that effectively teaches
  (1: all pairs weigh alike). Computed by autograd on the loss and reward functions, so a new method
  needs no formula of its own;
- along training, in ``metrics.json`` → ``extra.implicit_reward``: on the suite's held-out preference
  pairs (``split == "valid"``, never trained on), the accuracy of the implicit reward at ranking each
  pair (ties ½), its accuracy against the gold ordering, and the Spearman rank correlation of the
  implicit-reward margin r̂_w − r̂_l with the gold reward difference, at step 0 (π_ref), at
  ``HELDOUT_POINTS`` evenly spaced steps, the last of which is the final one.

No heavy import at module level: the registry lists algorithms without torch.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from harness.registry import Algorithm

HELDOUT_POINTS = 4      # held-out evaluations along training (besides step 0); the last is the final step
HELDOUT_MAX_PAIRS = 1024  # at most this many held-out pairs are scored (the first ones, in pair order)
HELDOUT_BATCH = 64      # pairs per scoring forward (2x sequences)


@dataclass
class PairLogps:
    """Log-probabilities of a batch of preference pairs; every field is a ``[B]`` tensor.

    ``chosen``/``rejected``: log π_θ(y|x) summed over the completion tokens (nats per sequence; they
    carry the gradient). ``ref_chosen``/``ref_rejected``: log π_ref(y|x), the suite's cached values.
    ``chosen_tokens``/``rejected_tokens``: |y|, completion tokens scored (after ``max_length``
    truncation, EOS included), as floats.
    """
    chosen: Any
    rejected: Any
    ref_chosen: Any
    ref_rejected: Any
    chosen_tokens: Any
    rejected_tokens: Any

    @property
    def chosen_mean(self):
        """Per-token mean log π_θ(y_w|x) (SimPO, ORPO)."""
        return self.chosen / self.chosen_tokens

    @property
    def rejected_mean(self):
        return self.rejected / self.rejected_tokens

    @property
    def chosen_ratio(self):
        """log π_θ(y_w|x) − log π_ref(y_w|x)."""
        return self.chosen - self.ref_chosen

    @property
    def rejected_ratio(self):
        return self.rejected - self.ref_rejected

    def replace(self, **fields) -> "PairLogps":
        return dataclasses.replace(self, **fields)


class PairwiseAlgorithm(Algorithm):
    """Base of offline pairwise methods: subclasses write ``loss`` (and ``reward`` if they have one).

    ``config`` must be an :class:`~harness.training.hparams.OptimConfig` (lr, batch_size = pairs per
    step, epochs, warm-up, clipping). Register the subclass with ``@register`` as any algorithm.
    """

    def loss(self, lp: PairLogps):
        """Per-pair losses ``[B]`` (the harness minimises their mean), or ``(losses, metrics)`` with
        extra ``[B]`` tensors to log (their batch means). Pure: no state, no randomness."""
        raise NotImplementedError

    def reward(self, lp: PairLogps):
        """``(r_w, r_l)``: the implicit reward of chosen and rejected, ``[B]`` each, as a function of
        ``lp`` (differentiable); ``None`` when the method has no implicit reward."""
        return None

    def train(self, ctx):
        return train_pairwise(self, ctx)


def split_loss(out):
    """(losses, metrics) from what ``loss`` returned (a tensor, or a (tensor, dict) pair)."""
    if isinstance(out, tuple):
        losses, metrics = out
        return losses, dict(metrics or {})
    return out, {}


def gradient_weight(algo: PairwiseAlgorithm, lp: PairLogps):
    """w = −∂ℓ_i/∂r̂_w,i per pair (``None`` without an implicit reward), by autograd through the
    method's own ``loss`` and ``reward`` on detached copies of ``lp`` (the training graph is not
    touched): (∂ℓ_i/∂ log π(y_w)) / (∂r̂_w,i/∂ log π(y_w)). DPO: σ(r̂_l − r̂_w)."""
    import torch

    with torch.enable_grad():
        chosen = lp.chosen.detach().clone().requires_grad_(True)
        leaf = lp.replace(chosen=chosen, rejected=lp.rejected.detach())
        rewards = algo.reward(leaf)
        if rewards is None:
            return None
        losses, _ = split_loss(algo.loss(leaf))
        (dl,) = torch.autograd.grad(losses.sum(), chosen, retain_graph=True, allow_unused=True)
        (dr,) = torch.autograd.grad(rewards[0].sum(), chosen, allow_unused=True)
    if dl is None:
        dl = torch.zeros_like(chosen)
    if dr is None:
        return None
    return (-dl / dr).detach()


def weight_summary(w) -> dict:
    """The distribution of one batch's gradient weights, as logged per step."""
    import torch

    w = w.double()
    q = torch.quantile(w, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
    a = w.abs()
    ess = float(a.sum() ** 2 / (len(w) * (w * w).sum())) if float((w * w).sum()) > 0 else 0.0
    return {"gradweight/mean": float(w.mean()), "gradweight/p10": float(q[0]), "gradweight/p50": float(q[1]),
            "gradweight/p90": float(q[2]), "gradweight/ess": ess}


def reward_metrics(rc, rr) -> dict:
    """The per-step implicit-reward logs (names as TRL's DPOTrainer logs them, less the plural)."""
    rc, rr = rc.detach(), rr.detach()
    return {"rewards/chosen": float(rc.mean()), "rewards/rejected": float(rr.mean()),
            "rewards/margin": float((rc - rr).mean()), "rewards/accuracy": float((rc > rr).float().mean())}


def model_device(model):
    import torch

    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


#: Scoring path of the pairs: "auto" (the rule of :func:`use_prefix_sharing`), "on" (shared prefix wherever the
#: model supports it) or "off" (the joint forward). A process-wide switch for tests and benchmarks, not a
#: hyperparameter: both paths compute the same log-probabilities within float rounding, so run ids ignore it.
PREFIX_SHARING = "auto"


def use_prefix_sharing(model, prompts, chosen, rejected, max_length: int | None) -> bool:
    """Whether pairs are scored with the prompt forwarded once (:func:`~harness.training.logprobs.shared_prefix_logps`)
    rather than in one forward over [chosen; rejected] (the joint path).

    The rule (``PREFIX_SHARING = "auto"``): the model supports it (plain-head architecture, plain key/value
    cache, no gradient checkpointing) and the pairs' prompts are on average at least as long as their
    completions (mean of chosen and rejected, after ``max_length`` truncation): sharing then removes at least a
    quarter of the tokens a forward processes. Short prompts (the ``sentiment`` suite: 3-8 prompt tokens
    for up to 48 completion tokens) keep the joint path (packed where that saves tokens:
    :func:`~harness.training.logprobs.use_packing`)."""
    from harness.training.logprobs import cut, supports_prefix_sharing, switch

    decided = switch("PREFIX_SHARING", PREFIX_SHARING, bool(len(prompts)) and supports_prefix_sharing(model))
    if decided is not None:
        return decided
    prompt_tokens = sum(len(p) for p in prompts)
    completion_tokens = sum(len(cut(p, c, max_length)) + len(cut(p, r, max_length))
                            for p, c, r in zip(prompts, chosen, rejected)) / 2
    return prompt_tokens >= completion_tokens


def pair_logps(model, prompts, chosen, rejected, ref_c, ref_r, pad: int, max_length: int | None,
               shared: bool = False) -> PairLogps:
    """π_θ's log-probabilities of a batch of pairs: one forward over [chosen; rejected] (the joint path,
    packed without padding where :func:`~harness.training.logprobs.use_packing` says so), or
    with ``shared`` each prompt forwarded once and both completions continued from its key/value cache
    (see :func:`use_prefix_sharing`); the two agree within float rounding."""
    from harness.training.logprobs import score, shared_prefix_logps

    n = len(prompts)
    device = model_device(model)
    if shared:
        logps, tokens = shared_prefix_logps(model, prompts, [chosen, rejected], pad, max_length)
    else:  # chosen and rejected rows in one batch, packed when that saves enough (logprobs.use_packing)
        logps, tokens = score(model, list(prompts) + list(prompts), list(chosen) + list(rejected), pad, max_length)
    return PairLogps(logps[:n], logps[n:], ref_c.to(device), ref_r.to(device), tokens[:n], tokens[n:])


def pairwise_step(algo: "PairwiseAlgorithm", model, ctx, shared: bool | None = None):
    """The training step of ``algo`` on ``ctx.train_pairs``: ``step(indices) -> (mean loss, metrics)``, what
    :func:`~harness.training.loop.train_loop` calls per (micro-)batch. ``shared``: the scoring path (None:
    :func:`use_prefix_sharing` on all the training pairs, decided once for the run)."""
    import torch

    pairs = ctx.train_pairs
    P, C, R = pairs.prompt_ids.tolist(), pairs.chosen_ids.tolist(), pairs.rejected_ids.tolist()
    ref_c = torch.tensor(pairs.ref_chosen_logp.to_numpy(), dtype=torch.float32)
    ref_r = torch.tensor(pairs.ref_rejected_logp.to_numpy(), dtype=torch.float32)
    pad = ctx.tokenizer.pad_token_id
    has_reward = type(algo).reward is not PairwiseAlgorithm.reward
    if shared is None:
        shared = use_prefix_sharing(model, P, C, R, ctx.max_length)

    def step(idx):
        lp = pair_logps(model, [P[i] for i in idx], [C[i] for i in idx], [R[i] for i in idx], ref_c[idx], ref_r[idx],
                        pad, ctx.max_length, shared=shared)
        losses, extra = split_loss(algo.loss(lp))
        metrics = {}
        if has_reward:
            rc, rr = algo.reward(lp)
            metrics.update(reward_metrics(rc, rr))
        metrics["logps/chosen"] = float(lp.chosen.detach().mean())
        metrics["logps/rejected"] = float(lp.rejected.detach().mean())
        metrics.update({k: float(v.detach().float().mean()) for k, v in extra.items()})
        if has_reward:
            w = gradient_weight(algo, lp)
            if w is not None:
                metrics.update(weight_summary(w))
        return losses.mean(), metrics

    step.shared = shared
    return step


def train_pairwise(algo: PairwiseAlgorithm, ctx):
    """The training run of every :class:`PairwiseAlgorithm`: returns the trained policy."""
    from harness.training.loop import seeded_batches, train_loop

    cfg = algo.config
    model = ctx.init_policy()
    step = pairwise_step(algo, model, ctx)
    if step.shared:  # recorded only when on, so a joint-path run's metrics.json is as before
        ctx.record(prefix_sharing=True)
    batches = list(seeded_batches(len(ctx.train_pairs), cfg.batch_size, cfg.epochs, ctx.data_seed))
    has_reward = type(algo).reward is not PairwiseAlgorithm.reward
    heldout = HeldOut(ctx, algo.reward if has_reward else None)
    heldout.run(model, batches, step, cfg, ctx, desc=f"{algo.variant()} seed {ctx.seed}", loop=train_loop)
    return model


# ------------------------------------------------------------------------------------ held-out lens
def spearman(x, y) -> float | None:
    """Spearman rank correlation (average ranks for ties); None when undefined (constant or < 3 pairs)."""
    import numpy as np
    import pandas as pd

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 3:
        return None
    rx, ry = pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def ranking_summary(margin, gold_gap) -> dict:
    """Accuracy of implicit-reward margins at ranking pairs (vs the pair labels, and vs the gold
    ordering where gold rewards exist), and their Spearman correlation with the gold reward gap."""
    import numpy as np

    m = np.asarray(margin, dtype=float)
    g = np.asarray(gold_gap, dtype=float)
    out = {"n_pairs": int(len(m)),
           "accuracy": float(np.mean((m > 0) + 0.5 * (m == 0))) if len(m) else None}
    has_gold = np.isfinite(g) & (g != 0)
    if has_gold.any():
        s = np.sign(g[has_gold])
        mm = m[has_gold] * s
        out["gold_accuracy"] = float(np.mean((mm > 0) + 0.5 * (mm == 0)))
        out["spearman_gold_gap"] = spearman(m[has_gold], g[has_gold])
    else:
        out["gold_accuracy"] = None
        out["spearman_gold_gap"] = None
    out["mean_margin"] = float(m.mean()) if len(m) else None
    return out


class HeldOut:
    """Scores the held-out pairs with a method's implicit reward along training (see the module
    docstring) and records the trajectory in ``ctx.extra["implicit_reward"]``. ``reward_fn`` maps a
    :class:`PairLogps` to ``(r_w, r_l)``; with ``None`` (no implicit reward) it does nothing."""

    def __init__(self, ctx, reward_fn, points: int = HELDOUT_POINTS, max_pairs: int = HELDOUT_MAX_PAIRS):
        self.ctx = ctx
        self.reward_fn = reward_fn
        self.points = points
        self.pairs = None
        if reward_fn is None:
            return
        art = getattr(ctx, "art", None)
        all_pairs = getattr(art, "pairs", None)
        if all_pairs is None or "split" not in all_pairs:
            return
        valid = all_pairs[all_pairs.split == "valid"].reset_index(drop=True)
        if len(valid) == 0:
            ctx.record(implicit_reward={"n_pairs": 0, "note": "the suite's pairs have no held-out (valid) pairs"})
            return
        self.pairs = valid.iloc[:max_pairs]

    def steps(self, total: int) -> list[int]:
        k = self.points
        return sorted({max(1, round(total * j / k)) for j in range(1, k + 1)}) if k else []

    def evaluate(self, model, step: int) -> None:
        if self.pairs is None:
            return
        import numpy as np
        import torch

        v, ctx = self.pairs, self.ctx
        entry = {"step": int(step)}
        P, C, R = v.prompt_ids.tolist(), v.chosen_ids.tolist(), v.rejected_ids.tolist()
        ref_c = torch.tensor(v.ref_chosen_logp.to_numpy(), dtype=torch.float32)
        ref_r = torch.tensor(v.ref_rejected_logp.to_numpy(), dtype=torch.float32)
        margins = []
        shared = use_prefix_sharing(model, P, C, R, ctx.max_length)
        with torch.no_grad():
            for i in range(0, len(v), HELDOUT_BATCH):
                s = slice(i, i + HELDOUT_BATCH)
                lp = pair_logps(model, P[s], C[s], R[s], ref_c[s], ref_r[s], ctx.tokenizer.pad_token_id,
                                ctx.max_length, shared=shared)
                rw, rl = self.reward_fn(lp)
                margins.append((rw - rl).double().cpu().numpy())
        gold = (v.chosen_reward - v.rejected_reward).to_numpy(dtype=float)
        entry.update(ranking_summary(np.concatenate(margins), gold))
        rec = dict(ctx.extra.get("implicit_reward") or {})
        traj = [e for e in rec.get("trajectory", []) if e["step"] != step] + [entry]
        rec["trajectory"] = sorted(traj, key=lambda e: e["step"])
        rec["final"] = rec["trajectory"][-1]
        rec["n_pairs"] = entry["n_pairs"]
        rec["what"] = ("implicit reward on held-out preference pairs: accuracy (vs labels, ties 1/2), "
                       "gold_accuracy (vs the gold ordering), spearman_gold_gap (margin vs gold reward gap)")
        ctx.record(implicit_reward=rec)

    def run(self, model, batches, step_fn, cfg, ctx, desc: str, loop) -> None:
        """``loop(model, batches, step_fn, cfg, ctx, desc)`` with held-out evaluations at step 0 and
        after the updates of :meth:`steps` (weights after that step), without touching training."""
        if self.pairs is None:
            loop(model, batches, step_fn, cfg, ctx, desc=desc)
            return
        at = set(self.steps(len(batches)))
        self.evaluate(model, 0)
        outer = self

        class Watch:
            """``ctx`` for the loop: every member is ctx's; ``log`` also scores the held-out pairs at the
            chosen steps (it is called after the step's update)."""

            def __getattr__(self, name):
                return getattr(ctx, name)

            def log(self, step, **metrics):
                ctx.log(step, **metrics)
                if step in at:
                    outer.evaluate(model, step)

        loop(model, batches, step_fn, cfg, Watch(), desc=desc)
