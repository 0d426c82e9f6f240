"""Training plumbing shared by every native algorithm: seeded data order, AdamW with linear warm-up
and decay, gradient clipping, divergence guards, step logs and evaluation checkpoints."""
from __future__ import annotations

import math
from typing import Callable, Iterator

import numpy as np
import torch

from harness.training.hparams import OptimConfig
from harness.core import faults
from harness.training import resume
from harness.core.errors import Diverged
from harness.core.progress import progress


def total_steps(n_items: int, batch_size: int, epochs: float) -> int:
    """Optimizer steps of ``epochs`` passes over ``n_items`` in batches (the plan bounds this before any
    compute: see ``harness.execution.plan.MAX_TRAIN_STEPS``)."""
    steps = n_items * epochs / batch_size
    if not math.isfinite(steps) or n_items < 0 or batch_size < 1:
        raise ValueError(f"no finite step count for {n_items} items, batch size {batch_size}, {epochs} epochs")
    return max(1, math.ceil(steps))


def seeded_batches(n_items: int, batch_size: int, epochs: float, seed: int) -> Iterator[np.ndarray]:
    """Index batches over a fresh seeded permutation per epoch; a fractional last epoch is cut short.

    Lazy: one permutation is drawn when the previous one runs out (a batch may span two), so memory
    is O(n_items + batch_size) whatever the number of epochs; the batches are the same as those of
    one long concatenation of per-epoch permutations drawn in order from ``seed``."""
    rng = np.random.default_rng(seed)
    steps = total_steps(n_items, batch_size, epochs)
    left = math.ceil(epochs) + 1  # permutations in the sequence (the last batches may come out short)
    buf, pos = np.empty(0, dtype=np.int64), 0
    for _ in range(steps):
        parts, need = [], batch_size
        while need:
            if pos == len(buf):
                if not left or not n_items:
                    break
                buf, pos, left = rng.permutation(n_items), 0, left - 1
            take = min(need, len(buf) - pos)
            parts.append(buf[pos:pos + take])
            pos, need = pos + take, need - take
        yield parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


def make_optimizer(model, cfg: OptimConfig, steps: int):
    # fused: one kernel over all parameters instead of a Python loop over tensors (TRL's default too)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)

    def schedule(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / (cfg.warmup_steps + 1)
        return max(0.0, (steps - step) / max(1, steps - cfg.warmup_steps))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, schedule)


def train_loop(model, batches: list[np.ndarray], step_fn: Callable[[np.ndarray], tuple[torch.Tensor, dict]],
               cfg: OptimConfig, ctx, desc: str) -> None:
    """Run ``step_fn`` over ``batches``; ``step_fn(indices) -> (loss, metrics)``.

    Logs every step through ``ctx.log``, evaluates at ``ctx.checkpoint_steps`` through
    ``ctx.checkpoint``, and raises :class:`Diverged` on a non-finite loss or an exploding gradient.
    """
    steps = len(batches)
    opt, sched = make_optimizer(model, cfg, steps)
    checkpoints = set(ctx.checkpoint_steps(steps))
    start = resume.load(ctx.resume_dir, model, opt, sched, ctx) if ctx.resume_dir else 0
    if start:
        ctx.say(f"resumed from the checkpoint at step {start}/{steps}")
    ctx.record(train_steps=steps)
    bar = progress(total=steps, initial=start, desc=desc, unit="step")
    for step, idx in enumerate(batches, start=1):
        if step <= start:
            continue
        model.train()
        loss, metrics = step_fn(idx)
        if not torch.isfinite(loss):
            raise Diverged(step, f"non-finite loss ({loss.item()})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm))
        if not math.isfinite(grad_norm) or grad_norm > cfg.divergence_grad_norm:
            raise Diverged(step, f"gradient norm {grad_norm:.3g} above bound {cfg.divergence_grad_norm:g}")
        opt.step()
        sched.step()
        ctx.log(step, loss=float(loss.detach()), grad_norm=grad_norm, lr=sched.get_last_lr()[0], **metrics)
        bar.update(1)
        bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        if step in checkpoints and step != steps:
            ctx.checkpoint(step, model)
        if ctx.resume_dir and ctx.save_every and step % ctx.save_every == 0 and step != steps:
            resume.save(ctx.resume_dir, step, model, opt, sched, ctx)
        faults.point("train:step")
    bar.close()


def disable_dropout(model) -> None:
    """Fine-tuning runs without dropout (as TRL does for DPO): with it, log π_θ in train mode differs
    from the cached log π_ref even at step 0, which biases implicit rewards and the first gradients."""
    import torch

    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    for key in ("resid_pdrop", "embd_pdrop", "attn_pdrop", "attention_dropout", "hidden_dropout", "dropout"):
        if hasattr(model.config, key):
            setattr(model.config, key, 0.0)
