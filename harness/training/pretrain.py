"""Causal-LM training of π_SFT on a suite's corpus (pre-training from scratch for tiny models)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from harness.core.progress import progress
from harness.suites.spec import ReferenceSpec


def train_causal_lm(model, tokenizer, docs: list[str], spec: ReferenceSpec, steps: int, max_length: int,
                    seed: int, resume_dir: Path | None = None, save_every: int = 100) -> list[dict]:
    """Next-token training on ``<eos> doc <eos>`` sequences so the model learns to start and to stop.
    Returns the step log (loss per step).

    With ``resume_dir``, the state is saved there every ``save_every`` steps and when a stop is
    requested (Ctrl-C, SIGTERM: :mod:`harness.core.interrupt`), and a later call continues from it with
    the same batches and dropout masks as an uninterrupted one."""
    from harness.core import interrupt
    from harness.core.progress import say
    from harness.training import resume
    from harness.training.hparams import OptimConfig
    from harness.training.loop import make_optimizer

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    eos = tokenizer.eos_token_id
    enc = tokenizer(docs, add_special_tokens=False)["input_ids"]
    seqs = [([eos] + ids + [eos])[:max_length] for ids in enc]
    opt, sched = make_optimizer(model, OptimConfig(lr=spec.lr, warmup_steps=spec.warmup_steps), steps)
    start, log = resume.load_pretraining(resume_dir, model, opt, sched, rng) if resume_dir else (0, [])
    if start:
        say(f"  π_SFT pre-training resumed from its checkpoint at step {start}/{steps}")
    bar = progress(total=steps, initial=start, desc="training π_SFT on the corpus", unit="step")
    model.train()
    with interrupt.deferred():
        _steps(model, seqs, eos, spec, opt, sched, rng, log, start, steps, bar, resume_dir, save_every)
    bar.close()
    model.eval()
    return log


def _steps(model, seqs, eos, spec, opt, sched, rng, log, start, steps, bar, resume_dir, save_every) -> None:
    from harness.core import faults, interrupt
    from harness.training import resume

    def save(step):
        if resume_dir:
            resume.save_pretraining(resume_dir, step, model, opt, sched, rng, log)

    for step in range(start + 1, steps + 1):
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
        if save_every and step % save_every == 0 and step != steps:
            save(step)
        faults.point("pretrain:step")
        interrupt.check(step if resume_dir else None, save=lambda: save(step), what="π_SFT pre-training")
