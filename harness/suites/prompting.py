"""Prompt text to token ids, and the tokens a completion stops at: one rule for every consumer.

Pairs, training, evaluation and every sampler take prompt ids from :func:`encode_prompts`, so they all
see the same text: with ``prompts.chat_template`` the prompt is one user turn of the tokenizer's chat
template followed by the assistant header (``add_generation_prompt``), tokenised as rendered (the
template writes its own BOS where it has one); without it, BOS (when the tokenizer has one) + the text.

A completion ends at the first of :func:`stop_token_ids`: EOS, and the chat template's end-of-turn token
when the tokenizer has a template and that token differs from EOS (e.g. ``<|eot_id|>``, ``<end_of_turn>``).
The stop token is kept as the completion's last token, so scoring and KL cover it exactly as sampled.
"""
from __future__ import annotations

from typing import Sequence

_SENTINEL = "Zq7Xv3"  # a reply text that no template contains, to find what the template writes after a reply


def chat_text(tokenizer, prompt: str) -> str:
    """``prompt`` as one user turn of the tokenizer's chat template, ready for the assistant's reply."""
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                         tokenize=False)


def encode_prompts(tokenizer, prompts: Sequence[str], chat_template: bool) -> list[list[int]]:
    """Token ids of each prompt as the policy sees it (see the module docstring)."""
    if chat_template:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("the tokenizer has no chat template")  # the preflight reports this as a UserError
        return [list(tokenizer(chat_text(tokenizer, p), add_special_tokens=False)["input_ids"]) for p in prompts]
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    return [bos + list(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]


def end_of_turn_id(tokenizer) -> int | None:
    """The special token the chat template writes right after an assistant reply, or None (no template,
    or the template closes a reply with plain text)."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"},
                                              {"role": "assistant", "content": _SENTINEL}], tokenize=False)
    except Exception:  # noqa: BLE001 - templates that refuse this conversation shape: EOS alone stops
        return None
    if _SENTINEL not in text:
        return None
    tail = text[text.rindex(_SENTINEL) + len(_SENTINEL):]
    ids = tokenizer(tail, add_special_tokens=False)["input_ids"] if tail else []
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    special.update(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    return int(ids[0]) if ids and ids[0] in special else None


def stop_token_ids(tokenizer) -> list[int]:
    """EOS first, then the chat template's end-of-turn token when it differs."""
    cached = getattr(tokenizer, "_prefbench_stop_ids", None)
    if cached is not None:
        return list(cached)
    out = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    eot = end_of_turn_id(tokenizer)
    if eot is not None and eot not in out:
        out.append(eot)
    try:
        tokenizer._prefbench_stop_ids = tuple(out)
    except AttributeError:
        pass
    return out


def reply_end_id(tokenizer, chat_template: bool) -> int:
    """The token that ends a reply written into the training data (a pairs file's responses): the
    end-of-turn token under a chat template, else EOS."""
    eot = end_of_turn_id(tokenizer) if chat_template else None
    return eot if eot is not None else tokenizer.eos_token_id
