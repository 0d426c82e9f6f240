"""The one scoring code path: (prompt, completion) token ids -> per-token log-probabilities.

Training losses, the cached reference log-probabilities and the KL routine all go through
:func:`collate` and :func:`completion_logits`, so π_θ and π_ref are always scored with the same
padding, attention mask and position ids, in fp32. Sequences are right-padded, so positions are
0..L-1 exactly as in training.

``temperature`` T scores the tempered policy π_T(·|s) = softmax(logits/T), the distribution a sampler
at temperature T draws from (T = 1: the policy itself). Evaluation scores π and π_ref at the same T.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass
class Batch:
    input_ids: torch.Tensor        # [B, L] prompt + completion, right-padded
    attention_mask: torch.Tensor   # [B, L] 1 on real tokens
    target_mask: torch.Tensor      # [B, L-1] 1 where target token t+1 is a completion token (incl. EOS)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device) -> "Batch":
        """The batch on ``device`` (itself when already there)."""
        if self.input_ids.device == torch.device(device):
            return self
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.target_mask.to(device))


def model_device(model) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def collate(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], pad_id: int,
            max_length: int | None = None) -> Batch:
    """Right-padded batch. Completion tokens beyond ``max_length`` are cut (never prompt tokens:
    a prompt that does not fit is a user error raised earlier)."""
    rows, tmask = [], []
    for p, c in zip(prompts, completions):
        p, c = list(p), list(c)
        if max_length is not None:
            c = c[: max(0, max_length - len(p))]
        rows.append(p + c)
        tmask.append([0] * (len(p) - 1) + [1] * len(c))
    L = max(len(r) for r in rows)
    ids = torch.full((len(rows), L), pad_id, dtype=torch.long)
    att = torch.zeros((len(rows), L), dtype=torch.long)
    tgt = torch.zeros((len(rows), max(L - 1, 1)), dtype=torch.float32)
    for i, (r, m) in enumerate(zip(rows, tmask)):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        att[i, : len(r)] = 1
        tgt[i, : len(m)] = torch.tensor(m, dtype=torch.float32)
    return Batch(ids, att, tgt[:, : L - 1])


def _tempered(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """fp32 logits divided by T (the division a sampler at temperature T applies before its softmax)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = logits.float()
    return logits if temperature == 1.0 else logits / temperature


def completion_logits(model, batch: Batch, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-softmax of logits/T over the vocabulary [B, L-1, V] in fp32, target ids [B, L-1]), on the
    model's device; the forward runs in the run's precision, the logits are upcast before the softmax."""
    from harness.training.device import autocast

    batch = batch.to(model_device(model))
    with autocast():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
    return torch.log_softmax(_tempered(logits, temperature), dim=-1), batch.input_ids[:, 1:]


# Architectures whose logits are exactly lm_head(final hidden state): for them the vocabulary
# projection can be restricted to completion positions (no softcapping or logit scaling after it).
_PLAIN_HEAD = {"GPT2LMHeadModel", "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "GPTNeoXForCausalLM"}


def token_logps(model, batch: Batch, temperature: float = 1.0) -> torch.Tensor:
    """log π(y_t | x, y_<t) for every target position [B, L-1]; zero outside the completion
    (log π_T at ``temperature`` T ≠ 1).

    For plain-head architectures only the completion positions go through the vocabulary projection
    (a third of a batch is prompt or padding here); the result equals the full-logits path.
    """
    from harness.training.device import autocast

    batch = batch.to(model_device(model))
    targets = batch.input_ids[:, 1:]
    mask = batch.target_mask
    if hasattr(model, "get_base_model") and hasattr(model, "peft_config"):
        # a PEFT (LoRA) model: its adapters live inside the wrapped model's layers (and follow
        # ``disable_adapter()``), so the wrapped model computes the same function, plain head included
        model = model.get_base_model()
    if type(model).__name__ in _PLAIN_HEAD:
        with autocast():
            hidden = model.base_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
            where = mask.bool()
            head = model.get_output_embeddings()(hidden[:, :-1][where])
        logits = _tempered(head, temperature)
        picked = -torch.nn.functional.cross_entropy(logits, targets[where], reduction="none")
        out = torch.zeros(mask.shape, dtype=picked.dtype, device=picked.device)
        return out.masked_scatter(where, picked)
    with autocast():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
    logits = _tempered(logits, temperature)
    picked = -torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    return picked * mask


def sequence_logps(model, batch: Batch, temperature: float = 1.0) -> torch.Tensor:
    """log π(y|x) (log π_T(y|x) at T ≠ 1) summed over completion tokens, nats per sequence [B]."""
    return token_logps(model, batch, temperature).sum(-1)


@torch.no_grad()
def batched_sequence_logps(model, prompts, completions, pad_id: int, batch_size: int = 64,
                           max_length: int | None = None, temperature: float = 1.0) -> torch.Tensor:
    from harness.training.device import current

    batch_size = min(batch_size, current().micro_batch_size or batch_size)  # --micro-batch-size bounds memory
    model.eval()
    out = []
    for i in range(0, len(prompts), batch_size):
        b = collate(prompts[i:i + batch_size], completions[i:i + batch_size], pad_id, max_length)
        out.append(sequence_logps(model, b, temperature))
    return torch.cat(out).cpu() if out else torch.zeros(0)
