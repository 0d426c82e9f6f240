"""Causal-LM training of π_SFT on a suite's corpus (pre-training from scratch for tiny models)."""
from __future__ import annotations

import numpy as np
import torch

from harness.core.progress import progress
from harness.suites.spec import ReferenceSpec


def train_causal_lm(model, tokenizer, docs: list[str], spec: ReferenceSpec, steps: int, max_length: int,
                    seed: int) -> list[dict]:
    """Next-token training on ``<eos> doc <eos>`` sequences so the model learns to start and to stop.
    Returns the step log (loss per step)."""
    from harness.training.hparams import OptimConfig
    from harness.training.loop import make_optimizer

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    eos = tokenizer.eos_token_id
    enc = tokenizer(docs, add_special_tokens=False)["input_ids"]
    seqs = [([eos] + ids + [eos])[:max_length] for ids in enc]
    opt, sched = make_optimizer(model, OptimConfig(lr=spec.lr, warmup_steps=spec.warmup_steps), steps)
    log = []
    bar = progress(total=steps, desc="training π_SFT on the corpus", unit="step")
    model.train()
    for step in range(1, steps + 1):
        idx = rng.integers(0, len(seqs), spec.batch_size)
        batch = [seqs[i] for i in idx]
        L = max(len(b) for b in batch)
        ids = torch.full((len(batch), L), eos, dtype=torch.long)
        att = torch.zeros((len(batch), L), dtype=torch.long)
        for i, b in enumerate(batch):
            ids[i, : len(b)] = torch.tensor(b)
            att[i, : len(b)] = 1
        labels = ids.masked_fill(att == 0, -100)
        loss = model(input_ids=ids, attention_mask=att, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        log.append({"step": step, "loss": float(loss.detach())})
        bar.update(1)
        bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
    bar.close()
    model.eval()
    return log
