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
        from harness.training.logprobs import collate, token_logps
        from harness.training.loop import seeded_batches, train_loop

        cfg = self.config
        model = ctx.init_policy()
        pairs = ctx.train_pairs
        P, C = pairs.prompt_ids.tolist(), pairs.chosen_ids.tolist()
        pad = ctx.tokenizer.pad_token_id

        def step(idx):
            batch = collate([P[i] for i in idx], [C[i] for i in idx], pad, ctx.max_length)
            nll = -(token_logps(model, batch).sum() / batch.target_mask.sum())
            return nll, {"nll_per_token": float(nll.detach())}

        batches = list(seeded_batches(len(pairs), cfg.batch_size, cfg.epochs, ctx.data_seed))
        train_loop(model, batches, step, cfg, ctx, desc=f"sft seed {ctx.seed}")
        return model
