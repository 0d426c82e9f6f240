"""Building, saving and loading policies and tokenizers.

Tiny models are built from a config and trained from scratch (the embedded suites); real ones load
from the Hugging Face hub or a local folder. Weights are always written and read as safetensors, and
``trust_remote_code`` stays off unless the suite opts in.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from harness.suites.spec import PolicySpec, TokenizerSpec

EOS = "<|endoftext|>"

ARCH_DEFAULTS = {
    "gpt2": dict(n_layer=4, n_embd=128, n_head=4),
    "llama": dict(num_hidden_layers=4, hidden_size=128, intermediate_size=384, num_attention_heads=4,
                  num_key_value_heads=4),
}


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int):
    """A byte-level BPE trained on ``texts``; ``<|endoftext|>`` is BOS, EOS and padding."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=EOS,
                                   unk_token=None, model_max_length=1_000_000)


def load_tokenizer(spec: TokenizerSpec, trust_remote_code: bool = False, source: dict | None = None):
    """A pretrained tokenizer. ``source``: :func:`harness.suites.sources.tokenizer_source` (a checked local
    folder, cached hub snapshot or GGUF file); without it, ``spec.name_or_path`` as given."""
    from transformers import AutoTokenizer

    src = dict(source or {"path": spec.name_or_path})
    tok = AutoTokenizer.from_pretrained(src.pop("path"), trust_remote_code=trust_remote_code, **src)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_gguf_model(folder: str, gguf_file: str):
    """A GGUF checkpoint dequantised to fp32, as a plain model of its architecture: transformers marks a
    GGUF-loaded model as quantized and refuses to save it, so the weights move into a fresh model built
    from the same config (every key matches; the logits are identical)."""
    import torch
    from transformers import AutoModelForCausalLM

    import contextlib
    import io
    import os

    # transformers' GGUF reader draws a raw tqdm bar that its progress-bar switch does not reach
    hide = os.environ.get("PREFBENCH_VERBOSE") != "1"
    with contextlib.redirect_stderr(io.StringIO()) if hide else contextlib.nullcontext():
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = type(loaded)(config)
    plain.load_state_dict(loaded.state_dict(), strict=True)
    return plain


def build_model(spec: PolicySpec, tokenizer, seed: int, source: dict | None = None):
    """A causal LM for ``spec``: randomly initialised from a config (seeded) or loaded. ``source``:
    :func:`harness.suites.sources.model_source` (checked local folder, cached hub snapshot or GGUF file)."""
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    src = dict(source or {"path": spec.name_or_path})
    if spec.kind == "gguf":
        model = load_gguf_model(src["path"], src["gguf_file"])
    elif spec.kind == "pretrained":
        model = AutoModelForCausalLM.from_pretrained(src.pop("path"), trust_remote_code=spec.trust_remote_code,
                                                     use_safetensors=True, dtype=torch.float32, **src)
    else:
        torch.manual_seed(seed)
        kwargs = dict(ARCH_DEFAULTS[spec.architecture])
        kwargs.update(spec.config)
        ids = dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                   eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        if spec.architecture == "gpt2":
            model = GPT2LMHeadModel(GPT2Config(n_positions=spec.max_length, **ids, **kwargs))
        else:
            model = LlamaForCausalLM(LlamaConfig(max_position_embeddings=spec.max_length, **ids, **kwargs))
    model.config.pad_token_id = tokenizer.pad_token_id
    neutral_generation_config(model)
    return model


def neutral_generation_config(model) -> None:
    """Pure ancestral sampling unless a caller asks otherwise: hub configs often carry top_k=50 or
    top_p<1, which would make evaluation samples come from a truncated policy and bias the KL."""
    gc = model.generation_config
    gc.top_k, gc.top_p, gc.temperature, gc.do_sample = None, None, None, None
    gc.repetition_penalty = None


def save_policy(model, tokenizer, path: Path) -> None:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)


def load_policy(path: Path, trust_remote_code: bool = False):
    """(model, tokenizer) from a folder written by :func:`save_policy` (safetensors only), in fp32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(path), use_safetensors=True, dtype=torch.float32,
                                                 trust_remote_code=trust_remote_code)
    tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    neutral_generation_config(model)
    model.eval()
    return model, tok
