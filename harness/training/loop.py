"""Training plumbing shared by every native algorithm: seeded data order, AdamW with linear warm-up
and decay, gradient clipping, divergence guards, step logs and evaluation checkpoints."""
from __future__ import annotations

import math
from typing import Callable, Iterator

import numpy as np
import torch

from harness.training.hparams import OptimConfig
from harness.core import faults, interrupt
from harness.training import distributed, resume
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
               cfg: OptimConfig, ctx, desc: str, weight_fn: Callable[[np.ndarray], float] | None = None) -> None:
    """Run ``step_fn`` over ``batches``; ``step_fn(indices) -> (loss, metrics)``.

    Logs every step through ``ctx.log``, evaluates at ``ctx.checkpoint_steps`` through
    ``ctx.checkpoint``, and raises :class:`Diverged` on a non-finite loss or an exploding gradient.

    Gradient accumulation: with a micro-batch size (``--micro-batch-size``, a resource setting, see
    :mod:`harness.training.device`) smaller than the batch, ``step_fn`` sees consecutive micro-batches of
    the step's indices and their gradients are summed with weights w_k = weight(micro_k) / weight(batch)
    before the one optimizer step, so the update is the full batch's: ``loss`` must be a mean over the
    micro-batch of what ``weight_fn`` counts (default: examples; SFT's token mean passes its token counts).
    Logged metrics are the same weighted means (exact for means; approximate for quantiles).
    """
    from harness.training.device import current, micro_batches

    micro = current().micro_batch_size
    steps = len(batches)
    opt, sched = make_optimizer(model, cfg, steps)
    checkpoints = set(ctx.checkpoint_steps(steps))
    start = resume.load(ctx.resume_dir, model, opt, sched, ctx) if ctx.resume_dir else 0
    if start:
        ctx.say(f"resumed from the checkpoint at step {start}/{steps}")
    ctx.record(train_steps=steps)
    bar = progress(total=steps, initial=start, desc=desc, unit="step")
    with interrupt.deferred():  # Ctrl-C / SIGTERM: finish the step, save it, stop (harness.core.interrupt)
        _steps(model, batches, step_fn, cfg, ctx, opt, sched, checkpoints, start, bar, micro, weight_fn)
    bar.close()


def _steps(model, batches, step_fn, cfg, ctx, opt, sched, checkpoints, start, bar, micro, weight_fn) -> None:
    """The optimizer steps of :func:`train_loop` after ``start`` (the body of its stop-deferred block)."""
    from harness.training.device import micro_batches

    steps = len(batches)

    def save_now(step):
        if ctx.resume_dir:
            resume.save(ctx.resume_dir, step, model, opt, sched, ctx)

    interrupt.check(start if ctx.resume_dir and start else None, what="training")
    for step, idx in enumerate(batches, start=1):
        if step <= start:
            continue
        model.train()
        opt.zero_grad(set_to_none=True)
        idx, share = distributed.share(idx, weight_fn)  # data parallel: this process's part (alone: all)
        chunks = micro_batches(idx, micro)
        if len(chunks) == 1:
            loss, metrics = step_fn(idx)
            if not torch.isfinite(loss):
                raise Diverged(step, f"non-finite loss ({loss.item()})")
            loss.backward()
        else:
            loss, metrics = _accumulate(step_fn, chunks, idx, weight_fn, step)
        loss, metrics = distributed.reduce(model, loss, metrics, share)  # the global batch's gradient
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
            save_now(step)
        faults.point("train:step")
        interrupt.check(step if ctx.resume_dir else None, save=lambda: save_now(step), what="training")


def _accumulate(step_fn, chunks, idx, weight_fn, step: int) -> tuple[torch.Tensor, dict]:
    """Backward over micro-batches with weights summing to 1; (the batch's loss, weighted metrics)."""
    count = weight_fn or len
    total = float(count(idx))
    loss_sum, sums = 0.0, {}
    for chunk in chunks:
        loss, metrics = step_fn(chunk)
        if not torch.isfinite(loss):
            raise Diverged(step, f"non-finite loss ({loss.item()})")
        w = float(count(chunk)) / total if total else 1.0 / len(chunks)
        (loss * w).backward()
        loss_sum += float(loss.detach()) * w
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                sums[k] = sums.get(k, 0.0) + float(v) * w
            else:
                sums.setdefault(k, v)
    return torch.tensor(loss_sum), sums


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
