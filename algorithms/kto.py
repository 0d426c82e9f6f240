"""KTO (Ethayarajh et al. 2024): prospect-theoretic alignment from unpaired good/bad examples.

Each example is a prompt with one completion labelled desirable or undesirable. With r = log π_θ(y|x)
− log π_ref(y|x) and the reference point z0 = max(0, mean over the batch of log π_θ(y'|x) − log
π_ref(y'|x)) on mismatched pairs (x_i, y_{i−1}), rotated within the batch as TRL does, detached:

    desirable:   λ_D·(1 − σ(β(r − z0)))        undesirable:   λ_U·(1 − σ(β(z0 − r)))

and the batch loss is their mean. Examples come from the suite's pairs (y_w desirable, y_l
undesirable; ``examples=one`` keeps one seeded side per pair, so no pair survives), or from an unpaired
``.jsonl`` file of ``{"prompt", "completion", "label": true|false}``. Implicit reward: β·r.
TRL: KTOTrainer with loss_type="kto".

Under a launcher (data parallel, :mod:`harness.training.distributed`) z0 is still the global batch's:
each process forms the mismatched pairs of its own positions in the global batch (the completion one
position back, across the boundary to the previous process's share), and the sum and count of their
log-ratios are summed over the processes before z0 is taken, as TRL's KTOTrainer gathers its KL
estimate. The logged desirable/undesirable reward means are global-batch means the same way.
Micro-batches stay refused: the loop hands the step one micro-batch at a time, so z0 of the whole
batch is not known before the first micro-batch's backward pass.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from harness.core.config import hp
from harness.registry import Algorithm, register
from harness.training.hparams import OptimConfig


@dataclass
class KTOConfig(OptimConfig):
    beta: float = hp(0.1, "KL-regularisation strength β", gt=0)
    desirable_weight: float = hp(1.0, "λ_D, weight of desirable examples", gt=0)
    undesirable_weight: float = hp(1.0, "λ_U, weight of undesirable examples", gt=0)
    examples: Literal["both", "one"] = hp("both", "from pairs: both = y_w desirable and y_l undesirable; one = one "
                                                  "seeded side of each pair (unpaired data)")
    unpaired_file: str = hp("", "a .jsonl of {prompt, completion, label} used instead of the suite's pairs "
                                "(its prompts are not checked against the evaluation prompts)")
    batch_size: int = hp(64, "examples per optimizer step (a pair gives two)", ge=2)

    def validate(self):
        if self.unpaired_file and not (Path(self.unpaired_file).is_file() and self.unpaired_file.endswith(".jsonl")):
            return "unpaired_file", f"{self.unpaired_file!r} is not a .jsonl file"


def kto_loss(logps, ref_logps, desirable, kl_logps, kl_ref_logps, beta: float, wd: float, wu: float, z0=None):
    """(losses [B], z0, rewards [B]): per-example KTO losses from summed log-probabilities, the batch's
    reference point from mismatched-pair log-probabilities, and the implicit rewards β·r. ``z0``: the
    reference point when the caller computed it over a larger batch (data parallel); the
    mismatched-pair log-probabilities are then not read."""
    import torch

    if z0 is None:
        z0 = (kl_logps - kl_ref_logps).mean().clamp(min=0).detach()
    r = logps - ref_logps
    good = wd * (1 - torch.sigmoid(beta * (r - z0)))
    bad = wu * (1 - torch.sigmoid(beta * (z0 - r)))
    return torch.where(desirable, good, bad), z0, beta * r


def read_unpaired(path: str, tokenizer, max_length: int):
    """(prompt ids, completion ids, labels) of an unpaired .jsonl, strictly checked (one-line errors)."""
    import json

    from harness.core.errors import UserError

    P, Y, L = [], [], []
    for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(path, f"line {i + 1}", f"invalid JSON: {e.msg}") from None
        if not (isinstance(row, dict) and isinstance(row.get("prompt"), str) and isinstance(row.get("completion"), str)
                and isinstance(row.get("label"), bool)):
            raise UserError(path, f"line {i + 1}", "expected {prompt: str, completion: str, label: true|false}")
        p = [tokenizer.bos_token_id] + tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
        if len(p) >= max_length:
            raise UserError(path, f"line {i + 1}: prompt", f"{len(p)} tokens, longer than the model context")
        P.append(p)
        Y.append(tokenizer(row["completion"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id])
        L.append(row["label"])
    if len(set(L)) < 2:
        raise UserError(path, None, "needs both desirable (true) and undesirable (false) examples")
    return P, Y, L


@register("kto", "KTO: unpaired desirable/undesirable examples, reference point from mismatched pairs", KTOConfig)
class KTO(Algorithm):
    def variant(self) -> str:
        return "kto-file" if self.config.unpaired_file else ("kto-unpaired" if self.config.examples == "one" else "kto")

    def train(self, ctx):
        import numpy as np
        import torch

        from harness.training import distributed
        from harness.training.logprobs import batched_sequence_logps, score
        from harness.training.loop import seeded_batches, train_loop
        from harness.training.pairwise import HeldOut, model_device, weight_summary

        cfg = self.config
        model = ctx.init_policy()
        ref = ctx.init_policy(lora=False).eval()  # frozen π_ref, for the mismatched pairs of z0 (no adapters)
        ref.requires_grad_(False)
        pad, L = ctx.tokenizer.pad_token_id, ctx.max_length
        if cfg.unpaired_file:
            P, Y, lab = read_unpaired(cfg.unpaired_file, ctx.tokenizer, L)
            ref_lp = batched_sequence_logps(ref, P, Y, pad, 128, L).tolist()
        else:
            pairs = ctx.train_pairs
            p, c, r = pairs.prompt_ids.tolist(), pairs.chosen_ids.tolist(), pairs.rejected_ids.tolist()
            rc, rr = pairs.ref_chosen_logp.tolist(), pairs.ref_rejected_logp.tolist()
            if cfg.examples == "both":
                P, Y, lab, ref_lp = p + p, c + r, [True] * len(p) + [False] * len(p), rc + rr
            else:
                keep = np.random.default_rng(ctx.seed_for("kto-unpair")).random(len(p)) < 0.5
                P = p
                Y = [c[i] if keep[i] else r[i] for i in range(len(p))]
                lab = keep.tolist()
                ref_lp = [rc[i] if keep[i] else rr[i] for i in range(len(p))]
        ref_lp = torch.tensor(ref_lp, dtype=torch.float32)
        labels = torch.tensor(lab, dtype=torch.bool)
        device = model_device(model)
        ctx.record(kto_examples={"desirable": int(labels.sum()), "undesirable": int((~labels).sum())})

        def step(idx):
            prompts, comps = [P[i] for i in idx], [Y[i] for i in idx]
            desirable = labels[idx].to(device)
            logps = score(model, prompts, comps, pad, L)[0]
            # mismatched pairs (x_i, y_{i-1}), rotated within the global batch (alone: this batch)
            whole, start = distributed.gather_batch(idx)
            mismatched = [Y[whole[(start + k - 1) % len(whole)]] for k in range(len(idx))]
            with torch.no_grad():
                kl_pol = score(model, prompts, mismatched, pad, L)[0]
                kl_ref = score(ref, prompts, mismatched, pad, L)[0].to(device)
            rw = cfg.beta * (logps.detach() - ref_lp[idx].to(device))  # the implicit rewards
            z0 = None
            if distributed.active():  # z0 and the reward means over the global batch: sums and counts
                diff, d = (kl_pol - kl_ref).double(), desirable
                kl_sum, n, ds, dn, us, un = distributed.all_sum(
                    [diff.sum(), len(diff), rw[d].double().sum(), d.sum(), rw[~d].double().sum(), (~d).sum()])
                z0 = torch.tensor(kl_sum / n, dtype=kl_pol.dtype, device=device).clamp(min=0)
                means = {"rewards/desirable": (ds, dn), "rewards/undesirable": (us, un)}
            else:
                means = {"rewards/desirable": (float(rw[desirable].mean()), 1) if desirable.any() else (0, 0),
                         "rewards/undesirable": (float(rw[~desirable].mean()), 1) if (~desirable).any() else (0, 0)}
            losses, z0, _ = kto_loss(logps, ref_lp[idx].to(device), desirable, kl_pol, kl_ref, cfg.beta,
                                           cfg.desirable_weight, cfg.undesirable_weight, z0=z0)
            with torch.enable_grad():  # weight on each example's reward: −∂ℓ/∂r̂ (desirable), +∂ℓ/∂r̂ (undesirable)
                leaf = logps.detach().clone().requires_grad_(True)
                ll, _, _ = kto_loss(leaf, ref_lp[idx].to(device), desirable, kl_pol, kl_ref, cfg.beta,
                                    cfg.desirable_weight, cfg.undesirable_weight, z0=z0)
                (g,) = torch.autograd.grad(ll.sum(), leaf)
            w = torch.where(desirable, -g, g) / cfg.beta
            m = {"kl": float(z0), "logps/mean": float(logps.detach().mean())}
            for key, (total, count) in means.items():
                if float(count) > 0:
                    m[key] = float(total) / float(count)
            m.update(weight_summary(w))
            return losses.mean(), m

        batches = list(seeded_batches(len(P), cfg.batch_size, cfg.epochs, ctx.data_seed))
        held = HeldOut(ctx, lambda lp: (cfg.beta * lp.chosen_ratio, cfg.beta * lp.rejected_ratio))
        held.run(model, batches, step, cfg, ctx, desc=f"{self.variant()} seed {ctx.seed}", loop=train_loop)
        return model
