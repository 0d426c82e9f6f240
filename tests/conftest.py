"""Shared fixtures. Tests run offline on locally built tiny models and the project's own data."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFBENCH_QUIET", "1")


@pytest.fixture(scope="session")
def tiny_lm():
    """A 5-token causal LM family small enough to enumerate every completion: tokens a, b, c, d and
    EOS (id 4, also BOS and padding). Returns (make_model(seed), tokenizer)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    vocab = {"a": 0, "b": 1, "c": 2, "d": 3, "<|endoftext|>": 4}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                  pad_token="<|endoftext|>")

    def make(seed: int, scale: float = 3.0):
        torch.manual_seed(seed)
        cfg = GPT2Config(vocab_size=5, n_positions=16, n_embd=16, n_layer=1, n_head=2, bos_token_id=4,
                         eos_token_id=4, pad_token_id=4)
        m = GPT2LMHeadModel(cfg)
        with torch.no_grad():  # sharpen the random init so the two policies differ visibly
            m.lm_head.weight.mul_(scale)
        from harness.training.models import neutral_generation_config

        neutral_generation_config(m)
        return m.eval()

    return make, tok


@pytest.fixture(scope="session")
def smoke_cache(tmp_path_factory):
    """One artifact cache for every end-to-end test in the session, so π_SFT, the pairs and the
    baseline of the sentiment smoke preset are built once. PREFBENCH_TEST_CACHE reuses a folder
    across sessions (handy locally; CI builds from nothing)."""
    path = os.environ.get("PREFBENCH_TEST_CACHE") or str(tmp_path_factory.mktemp("artifact-cache"))
    old = os.environ.get("PREFBENCH_CACHE")
    os.environ["PREFBENCH_CACHE"] = path
    yield Path(path)
    if old is None:
        os.environ.pop("PREFBENCH_CACHE", None)
    else:
        os.environ["PREFBENCH_CACHE"] = old


@pytest.fixture(scope="session")
def smoke_results(smoke_cache, tmp_path_factory):
    """The issue's acceptance run: sentiment, smoke preset, sft and dpo, seed 0 (one per session)."""
    from harness.cli import main

    results = tmp_path_factory.mktemp("results")
    code = main(["run", "sentiment", "--preset", "smoke", "--algorithms", "sft,dpo", "--seeds", "0",
                 "--results", str(results)])
    assert code == 0
    return results
