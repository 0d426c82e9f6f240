"""Preferred-FT: supervised fine-tuning of π_ref on the chosen responses (the DPO paper's baseline)."""
from __future__ import annotations

from dataclasses import dataclass

from harness.core.config import hp
from harness.registry import Algorithm, register
from harness.training.hparams import OptimConfig


@dataclass
class SFTConfig(OptimConfig):
    lr: float = hp(1e-4, "peak learning rate (AdamW)", gt=0)


@register("sft", "Preferred-FT: fine-tune π_ref on the chosen responses (token-mean NLL of the completion)",
          SFTConfig)
class SFT(Algorithm):
    def train(self, ctx):
        from harness.training.logprobs import score
        from harness.training.loop import seeded_batches, train_loop

        cfg = self.config
        model = ctx.init_policy()
        pairs = ctx.train_pairs
        P, C = pairs.prompt_ids.tolist(), pairs.chosen_ids.tolist()
        pad = ctx.tokenizer.pad_token_id

        L = ctx.max_length
        # completion tokens each example contributes (after the context cut): the token-mean NLL of a
        # batch split into micro-batches is their token-weighted sum (harness.training.loop)
        tokens = [min(len(c), max(0, L - len(p))) if L is not None else len(c) for p, c in zip(P, C)]

        def step(idx):
            lp, n_tokens = score(model, [P[i] for i in idx], [C[i] for i in idx], pad, L)
            nll = -(lp.sum() / n_tokens.sum())
            return nll, {"nll_per_token": float(nll.detach())}

        batches = list(seeded_batches(len(pairs), cfg.batch_size, cfg.epochs, ctx.data_seed))
        train_loop(model, batches, step, cfg, ctx, desc=f"sft seed {ctx.seed}",
                   weight_fn=lambda idx: sum(tokens[i] for i in idx))
        return model
