"""The one scoring code path: (prompt, completion) token ids -> per-token log-probabilities.

Training losses, the cached reference log-probabilities and the KL routine all go through
:func:`collate` and :func:`completion_logits`, so π_θ and π_ref are always scored with the same
padding, attention mask and position ids, in fp32. Sequences are right-padded, so positions are
0..L-1 exactly as in training. :func:`shared_prefix_logps` is the same scoring with each prompt forwarded
once for several completions (pairwise training on long prompts), and :func:`packed_sequence_logps` the
same scoring with several sequences packed into one row (no padding); both agree with the joint path within
float rounding (tests/test_prefix_sharing.py, tests/test_packing.py).

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


def cut(prompt: Sequence[int], completion: Sequence[int], max_length: int | None) -> list[int]:
    """``completion`` cut so that prompt + completion fits in ``max_length`` tokens (prompt tokens are never
    cut): the one truncation rule of every scoring path."""
    c = list(completion)
    return c if max_length is None else c[: max(0, max_length - len(prompt))]


def collate(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], pad_id: int,
            max_length: int | None = None) -> Batch:
    """Right-padded batch. Completion tokens beyond ``max_length`` are cut (never prompt tokens:
    a prompt that does not fit is a user error raised earlier)."""
    rows, tmask = [], []
    for p, c in zip(prompts, completions):
        p, c = list(p), cut(p, c, max_length)
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


def score(model, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], pad_id: int,
          max_length: int | None = None, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(log π(y|x) summed over completion tokens [n], completion tokens scored [n]) for one batch of
    (prompt, completion) sequences, on the model's device: packed into rows without padding when
    :func:`use_packing` says so (:func:`packed_sequence_logps`), else the padded batch of :func:`collate`.
    The two agree within float rounding. Every caller that scores whole sequences goes through here."""
    if use_packing(model, prompts, completions, max_length):
        return packed_sequence_logps(model, prompts, completions, pad_id, max_length, temperature)
    batch = collate(prompts, completions, pad_id, max_length).to(model_device(model))
    return sequence_logps(model, batch, temperature), batch.target_mask.sum(-1)


@torch.no_grad()
def batched_sequence_logps(model, prompts, completions, pad_id: int, batch_size: int = 64,
                           max_length: int | None = None, temperature: float = 1.0) -> torch.Tensor:
    from harness.training.device import current

    batch_size = min(batch_size, current().micro_batch_size or batch_size)  # --micro-batch-size bounds memory
    model.eval()
    out = []
    for i in range(0, len(prompts), batch_size):
        out.append(score(model, prompts[i:i + batch_size], completions[i:i + batch_size], pad_id, max_length,
                         temperature)[0])
    return torch.cat(out).cpu() if out else torch.zeros(0)


# ----------------------------------------------------------------------------- prefix sharing
# A pair's chosen and rejected responses follow the same prompt. The shared-prefix path forwards each
# prompt once with ``use_cache=True`` and continues every completion from a copy of the prompt's key/value
# cache (selected rows of it: autograd carries the completions' gradients back into the prompt forward),
# instead of forwarding the prompt once per completion. Scoring is the joint path's: the first completion
# token is predicted from the prompt's last position (taken from the prompt forward), token j+1 from
# completion position j (the continuation, whose input is the completion less its last token, which
# predicts nothing). Sequences are right-padded; a continuation's position ids start at its own prompt's
# length, and its attention mask covers its prompt's real tokens (the prompt padding is masked out).
#
# No compute on padding: prompts are bucketed by length, and within a bucket the continuations by length
# (:func:`length_buckets`), so a forward pads each sequence only up to the longest of its bucket. Buckets
# cut inside one (micro-)batch: the pairs of a step and their order are the same; results are reassembled
# in the input order.

#: Cost of one extra forward + backward, in padded tokens, for :func:`length_buckets`: a new bucket is
#: opened only when it saves more padding than this. Measured on this project's 2-core CPU (one thread)
#: with SmolLM2-135M + LoRA r 16 on all linear layers: a forward + backward costs ~230 ms of CPU whatever
#: its length (mostly streaming the weights) plus ~10 ms per token, so one call ~ 24 tokens. Not measured on
#: a GPU, where a small call is relatively dearer: 256 there.
CALL_COST_TOKENS = {"cpu": 24, "cuda": 256}


def length_buckets(lengths: Sequence[int], call_cost: int) -> list[list[int]]:
    """Indices of ``lengths`` cut into buckets that minimise Σ_b |b|·max(b) + call_cost·(number of buckets):
    the tokens forwarded when each bucket is padded to its longest, plus a fixed cost per forward. Items
    are sorted by length (ties by index) and cut into contiguous runs (exact: dynamic programming). Items of
    length 0 need no forward and are left out."""
    order = sorted((i for i, n in enumerate(lengths) if n > 0), key=lambda i: (lengths[i], i))
    m = len(order)
    best, cut = [0.0] + [float("inf")] * m, [0] * (m + 1)
    for j in range(1, m + 1):
        top = lengths[order[j - 1]]
        for i in range(j):
            cost = best[i] + (j - i) * top + call_cost
            if cost < best[j]:
                best[j], cut[j] = cost, i
    out, j = [], m
    while j > 0:
        out.append(order[cut[j]:j])
        j = cut[j]
    return out[::-1]


def _plain_lm(model):
    """(the causal LM whose head is ``get_output_embeddings()``, its body) or None when the architecture is
    not a plain-head one (PEFT models: their wrapped model, adapters included)."""
    if hasattr(model, "get_base_model") and hasattr(model, "peft_config"):
        model = model.get_base_model()
    if type(model).__name__ not in _PLAIN_HEAD:
        return None
    return model, model.base_model


def supports_prefix_sharing(model) -> bool:
    """Whether :func:`shared_prefix_logps` can score ``model``: a plain-head architecture with a plain
    key/value cache (every layer a full-attention ``DynamicLayer``: no sliding window, no linear attention),
    and no gradient checkpointing (which turns the cache off in training)."""
    lm = _plain_lm(model)
    if lm is None or getattr(lm[0], "is_gradient_checkpointing", False):
        return False
    try:
        from transformers.cache_utils import DynamicCache, DynamicLayer
    except ImportError:  # transformers < 4.56: no cache layers
        return False
    try:
        cache = DynamicCache(config=lm[0].config)
    except Exception:  # noqa: BLE001 - a config the cache cannot read: the joint path
        return False
    return all(type(layer) is DynamicLayer for layer in cache.layers)


def _right_padded(rows: Sequence[Sequence[int]], width: int, pad_id: int, device):
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    att = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, : len(r)] = torch.tensor(list(r), dtype=torch.long)
            att[i, : len(r)] = 1
    return ids.to(device), att.to(device)


def shared_prefix_logps(model, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[Sequence[int]]],
                        pad_id: int, max_length: int | None = None,
                        call_cost: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """log π(y|x) summed over completion tokens and the number of tokens scored, for ``k`` completions of
    each of ``n`` prompts (``completions[s][i]`` follows ``prompts[i]``), each prompt forwarded once:
    ``([k·n] log-probs, [k·n] token counts)`` ordered as ``completions`` (set 0's n rows first), equal to
    :func:`collate` + :func:`sequence_logps` of the k·n rows within float rounding. ``max_length`` cuts
    completions as :func:`collate` does. Requires :func:`supports_prefix_sharing`."""
    from transformers.cache_utils import DynamicCache

    from harness.training.device import autocast

    lm, body = _plain_lm(model)
    device = model_device(model)
    if call_cost is None:
        call_cost = CALL_COST_TOKENS.get(device.type, CALL_COST_TOKENS["cuda"])
    n, k = len(prompts), len(completions)
    P = [list(p) for p in prompts]
    comps = []  # (row in the output, prompt index, completion ids)
    for s, cs in enumerate(completions):
        if len(cs) != n:
            raise ValueError(f"completion set {s} has {len(cs)} rows for {n} prompts")
        for i, c in enumerate(cs):
            comps.append((s * n + i, i, cut(P[i], c, max_length)))
    by_prompt: list[list[tuple]] = [[] for _ in range(n)]
    for row in comps:
        by_prompt[row[1]].append(row)
    hidden, targets, owner = [], [], []
    head = lm.get_output_embeddings()
    with autocast():
        for group in length_buckets([len(p) if by_prompt[i] and any(r[2] for r in by_prompt[i]) else 0
                                     for i, p in enumerate(P)], call_cost):
            lp = [len(P[i]) for i in group]
            ids, att = _right_padded([P[i] for i in group], max(lp), pad_id, device)
            out = body(input_ids=ids, attention_mask=att, use_cache=True)
            kv = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
            last = out.last_hidden_state[torch.arange(len(group), device=device), torch.tensor(lp, device=device) - 1]
            rows = [(g, r) for g, i in enumerate(group) for r in by_prompt[i] if r[2]]
            # the first completion token is predicted from the prompt's last position
            hidden.append(last[torch.tensor([g for g, _ in rows], device=device)])
            targets += [r[2][0] for _, r in rows]
            owner += [r[0] for _, r in rows]
            for bucket in length_buckets([len(r[2]) - 1 for _, r in rows], call_cost):
                sel = [rows[b][0] for b in bucket]
                conts = [rows[b][1][2][:-1] for b in bucket]
                width = max(len(c) for c in conts)
                cids, catt = _right_padded(conts, width, pad_id, device)
                index = torch.tensor(sel, device=device)
                start = torch.tensor([lp[g] for g in sel], device=device)
                pos = torch.where(catt.bool(), start[:, None] + torch.arange(width, device=device)[None], 0)
                cache = DynamicCache()
                for layer, (keys, values) in enumerate(kv):
                    cache.update(keys[index], values[index], layer)
                out2 = body(input_ids=cids, attention_mask=torch.cat([att[index], catt], dim=1), position_ids=pos,
                            past_key_values=cache, use_cache=True)
                hidden.append(out2.last_hidden_state[catt.bool()])
                for b, c in zip(bucket, conts):
                    targets += rows[b][1][2][1:]
                    owner += [rows[b][1][0]] * len(c)
        h = torch.cat(hidden) if hidden else torch.zeros((0, head.in_features), device=device)
        logits = head(h)
    picked = -torch.nn.functional.cross_entropy(logits.float(), torch.tensor(targets, dtype=torch.long, device=device),
                                                reduction="none")
    logps = torch.zeros(k * n, dtype=picked.dtype, device=device).index_add(0, torch.tensor(owner, dtype=torch.long,
                                                                                             device=device), picked)
    tokens = torch.tensor([0.0] * (k * n), device=device)
    for row, _, c in comps:
        tokens[row] = float(len(c))
    return logps, tokens


# ----------------------------------------------------------------------------- packed sequences
# Padding-free scoring: the (prompt + completion) sequences of a batch are packed end to end into rows, each
# sequence's position ids restarting at 0, and the model is called with position ids and no attention mask.
# transformers reads the restarts as sequence boundaries and builds a block-diagonal causal mask (sdpa and
# eager attention), so no token attends across sequences and no linear layer computes on padding. Rows are
# as wide as the batch's longest sequence (first-fit decreasing), so a dense attention kernel does no more
# work per row than on the padded batch, on fewer rows. The last row's unused tail is filled with pad tokens
# whose positions restart at 0 too: a sequence of its own, which no real token attends to.

#: Attention implementations whose masks transformers builds from restarting position ids, checked by
#: tests/test_packing.py. Flash-attention's variable-length kernels read the same position ids but are not
#: tested here (no GPU in this project's CI), so packing stays off with them.
PACKABLE_ATTENTION = ("sdpa", "eager")


#: Whether batches are packed: "auto" (the rule of :func:`use_packing`), "on" (wherever the model supports
#: it) or "off" (always the padded batch). A process-wide switch for tests and benchmarks, not a
#: hyperparameter: both paths compute the same log-probabilities within float rounding, so run ids ignore it.
PACKING = "auto"

#: ``auto`` packs a batch when packing removes at least this fraction of the tokens its padded form forwards.
#: Measured on this project's 2-core CPU (one thread, forward + backward): the sentiment toy's GPT-2 on 64
#: sequences, 36 % fewer tokens, ran 1.53x faster packed; SmolLM2-135M + LoRA on 16 short-prompt sequences,
#: 19 % fewer tokens, 1.20x. Below a tenth the saving is not worth the mask transformers builds per call.
PACK_MIN_SAVING = 0.1


def switch(name: str, mode: str, possible: bool) -> bool | None:
    """What a process-wide ``auto|on|off`` switch of a faster scoring form decides before any rule runs:
    False when it is off or the form is not ``possible`` here, True when on, None when ``auto`` leaves it to
    the rule. ``name`` is the switch's, for the error on any other value."""
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"{name} must be auto, on or off, not {mode!r}")
    if mode == "off" or not possible:
        return False
    return True if mode == "on" else None


def use_packing(model, prompts, completions, max_length: int | None) -> bool:
    """Whether :func:`score` packs this batch: the model supports it (:func:`supports_packing`) and, under
    ``PACKING = "auto"``, packing saves at least :data:`PACK_MIN_SAVING` of the padded batch's tokens."""
    decided = switch("PACKING", PACKING, bool(len(prompts)) and supports_packing(model))
    if decided is not None:
        return decided
    padded, packed = packed_tokens(prompts, completions, max_length)
    return packed <= (1 - PACK_MIN_SAVING) * padded


def supports_packing(model) -> bool:
    """Whether :func:`packed_sequence_logps` can score ``model``: a plain-head architecture whose attention
    implementation is one of :data:`PACKABLE_ATTENTION`."""
    lm = _plain_lm(model)
    return lm is not None and getattr(lm[0].config, "_attn_implementation", None) in PACKABLE_ATTENTION


def pack_rows(lengths: Sequence[int], width: int) -> list[list[int]]:
    """Indices of ``lengths`` packed into rows of at most ``width`` tokens, first-fit decreasing (ties by
    index; deterministic). Items of length 0 are left out; an item longer than ``width`` is a ValueError."""
    rows: list[list[int]] = []
    free: list[int] = []
    for i in sorted((i for i, n in enumerate(lengths) if n > 0), key=lambda i: (-lengths[i], i)):
        if lengths[i] > width:
            raise ValueError(f"sequence {i} has {lengths[i]} tokens, more than the row width {width}")
        for r, room in enumerate(free):
            if lengths[i] <= room:
                rows[r].append(i)
                free[r] -= lengths[i]
                break
        else:
            rows.append([i])
            free.append(width - lengths[i])
    return rows


def packed_tokens(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]],
                  max_length: int | None = None) -> tuple[int, int]:
    """(tokens a padded batch forwards, tokens the packed rows forward) for these sequences, cut as
    :func:`collate` cuts them: the padding :func:`packed_sequence_logps` saves."""
    lengths = [len(p) + len(cut(p, c, max_length)) for p, c in zip(prompts, completions)]
    if not lengths:
        return 0, 0
    width = max(lengths)
    return width * len(lengths), width * len(pack_rows(lengths, width))


def packed_sequence_logps(model, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]],
                          pad_id: int, max_length: int | None = None,
                          temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(log π(y|x) summed over completion tokens [n], completion tokens scored [n]) for ``n`` (prompt,
    completion) sequences packed into rows without padding; equal to :func:`collate` + :func:`sequence_logps`
    within float rounding. ``max_length`` cuts completions as :func:`collate` does. Requires
    :func:`supports_packing`."""
    from harness.training.device import autocast

    lm, body = _plain_lm(model)
    device = model_device(model)
    n = len(prompts)
    seqs, cuts = [], []
    for p, c in zip(prompts, completions):
        seqs.append(list(p) + cut(p, c, max_length))
        cuts.append(len(p))
    counts = torch.tensor([float(len(s) - k) for s, k in zip(seqs, cuts)], device=device)
    lengths = [len(s) if len(s) > k else 0 for s, k in zip(seqs, cuts)]  # nothing to score: not forwarded
    if not any(lengths):
        return torch.zeros(n, device=device), counts
    width = max(lengths)
    rows = pack_rows(lengths, width)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    pos = torch.zeros((len(rows), width), dtype=torch.long)
    at_row, at_col, targets, owner = [], [], [], []
    for r, members in enumerate(rows):
        o = 0
        for i in members:
            s, k = seqs[i], cuts[i]
            ids[r, o:o + len(s)] = torch.tensor(s, dtype=torch.long)
            pos[r, o:o + len(s)] = torch.arange(len(s))
            # completion token t (t >= k) is predicted from position t - 1 of its sequence
            at_row += [r] * (len(s) - k)
            at_col += range(o + k - 1, o + len(s) - 1)
            targets += s[k:]
            owner += [i] * (len(s) - k)
            o += len(s)
        pos[r, o:] = torch.arange(width - o)
    with autocast():
        hidden = body(input_ids=ids.to(device), position_ids=pos.to(device), use_cache=False).last_hidden_state
        logits = lm.get_output_embeddings()(hidden[torch.tensor(at_row, device=device),
                                                   torch.tensor(at_col, device=device)])
    picked = -torch.nn.functional.cross_entropy(_tempered(logits, temperature),
                                                torch.tensor(targets, dtype=torch.long, device=device),
                                                reduction="none")
    logps = torch.zeros(n, dtype=picked.dtype, device=device).index_add(
        0, torch.tensor(owner, dtype=torch.long, device=device), picked)
    return logps, counts
