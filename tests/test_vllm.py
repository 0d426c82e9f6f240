"""The vLLM sampler against the HF sampler and the scored policy (skipped where vLLM is not installed;
CI installs the CPU extra, requirements-vllm.txt).

One engine per model for the whole module (the sampler caches it), in-process on CPU. vLLM's CPU
attention needs a head size of at least 32, so the 5-token model here is wider than conftest's.
"""
import itertools
import random

import numpy as np
import pytest
import torch

from harness.evaluation.sampling import AUTO_VLLM_MIN_TOKENS, get_sampler, resolve_auto
from harness.evaluation.sampling.base import GenerationSettings, PolicyHandle
from harness.evaluation.sampling.hf import HFSampler

EOS, T = 4, 4
PROMPTS = [[EOS, 0], [EOS, 2, 1, 3]]


def test_get_sampler_names_and_auto(monkeypatch):
    from harness.core.errors import UserError

    assert get_sampler("hf").name == "hf"
    assert get_sampler("auto").name == "hf"          # no job size: never worth an engine start
    assert resolve_auto(AUTO_VLLM_MIN_TOKENS - 1) == "hf"
    monkeypatch.setattr("harness.evaluation.sampling.vllm_available", lambda: True)
    assert resolve_auto(AUTO_VLLM_MIN_TOKENS) == "vllm"
    monkeypatch.setattr("harness.evaluation.sampling.vllm_available", lambda: False)
    assert resolve_auto(10 ** 9) == "hf"
    with pytest.raises(UserError, match="--sampler"):
        get_sampler("vllm")
    with pytest.raises(UserError, match="unknown sampler"):
        get_sampler("nope")


@pytest.fixture(scope="module")
def vllm_sampler():
    pytest.importorskip("vllm")
    from harness.evaluation.sampling.vllm import VLLMSampler

    s = VLLMSampler()
    yield s
    s.close()


@pytest.fixture(scope="module")
def five_token():
    """tokens a b c d + EOS (4): every completion of <= 4 tokens can be enumerated and scored."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from harness.training.models import neutral_generation_config

    tk = Tokenizer(models.WordLevel({"a": 0, "b": 1, "c": 2, "d": 3, "<|endoftext|>": 4}, unk_token="<|endoftext|>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                  pad_token="<|endoftext|>")
    torch.manual_seed(3)
    m = GPT2LMHeadModel(GPT2Config(vocab_size=5, n_positions=16, n_embd=32, n_layer=1, n_head=1,
                                   bos_token_id=4, eos_token_id=4, pad_token_id=4))
    with torch.no_grad():
        m.lm_head.weight.mul_(3.0)
    neutral_generation_config(m)
    return m.eval(), tok


def _enumerate(model, prompt):
    from harness.training.logprobs import batched_sequence_logps

    comps = [list(s) + [EOS] for k in range(T) for s in itertools.product(range(4), repeat=k)]
    comps += [list(s) for s in itertools.product(range(4), repeat=T)]
    logp = batched_sequence_logps(model, [prompt] * len(comps), comps, EOS, batch_size=512).double().numpy()
    return comps, np.exp(logp)


def _chisq_p(token_ids, comps, probs):
    from scipy import stats

    index = {tuple(c): i for i, c in enumerate(comps)}
    counts = np.zeros(len(comps))
    for t in token_ids:
        counts[index[tuple(t)]] += 1
    expected = probs * len(token_ids)
    big = expected >= 5  # pool rare outcomes so the chi-square approximation holds
    obs, exp = np.append(counts[big], counts[~big].sum()), np.append(expected[big], expected[~big].sum())
    return stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue


def test_vllm_samples_the_scored_policy_and_matches_hf(vllm_sampler, five_token):
    """Chi-square of vLLM's samples against π(y) from prefbench's fp32 scoring pass, for both prompts;
    a two-sample test against HF's samples; and a temperature-2 run that must fail (the test has power)."""
    from scipy import stats

    model, tok = five_token
    n = 3000
    rng = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    out = vllm_sampler.sample(PolicyHandle(tok, model), PROMPTS, n, GenerationSettings(T, 1.0, 256), seed=0)
    # in-process vLLM reseeds the global generators: the sampler must give the caller's state back
    assert random.getstate() == rng[0] and torch.equal(torch.get_rng_state(), rng[2])
    assert (np.random.get_state()[1] == rng[1][1]).all()
    assert out.engine == "vllm" and len(out.token_ids) == 2 * n
    assert all(f == (t[-1] == EOS) for f, t in zip(out.finished, out.token_ids))
    assert all(len(t) <= T and EOS not in t[:-1] for t in out.token_ids)
    hf = HFSampler().sample(PolicyHandle(tok, model), PROMPTS, n, GenerationSettings(T, 1.0, 1500), seed=0)
    for j, prompt in enumerate(PROMPTS):
        comps, probs = _enumerate(model, prompt)
        rows = [out.token_ids[k] for k in np.flatnonzero(out.prompt_index == j)]
        assert _chisq_p(rows, comps, probs) > 1e-4, prompt
        # vLLM vs HF, two samples: lengths 1..4 x finished
        cats = lambda ts: [len(t) * 2 + (t[-1] == EOS) for t in ts]  # noqa: E731
        a = np.bincount(cats(rows), minlength=10)
        b = np.bincount(cats([hf.token_ids[k] for k in np.flatnonzero(hf.prompt_index == j)]), minlength=10)
        keep = (a + b) > 0
        assert stats.chi2_contingency(np.stack([a[keep], b[keep]])).pvalue > 1e-4, prompt
    hot = vllm_sampler.sample(PolicyHandle(tok, model), [PROMPTS[0]], n, GenerationSettings(T, 2.0, 256), seed=0)
    comps, probs = _enumerate(model, PROMPTS[0])
    assert _chisq_p(hot.token_ids, comps, probs) < 1e-6
    assert vllm_sampler.engine_starts == 1  # same weights: the engine is reused across calls


def test_vllm_is_seeded_per_prompt(vllm_sampler, five_token):
    model, tok = five_token
    h = PolicyHandle(tok, model)
    s = GenerationSettings(T, 1.0, 64)
    a = vllm_sampler.sample(h, PROMPTS, 8, s, seed=5)
    b = vllm_sampler.sample(h, PROMPTS, 8, s, seed=5)
    c = vllm_sampler.sample(h, PROMPTS, 8, s, seed=6)
    assert a.token_ids == b.token_ids and a.token_ids != c.token_ids
    # a prompt's samples do not depend on the batch around it (per-request seeds)
    alone = vllm_sampler.sample(h, PROMPTS[:1], 8, s, seed=5)
    assert alone.token_ids == a.token_ids[:8]
    assert len(set(map(tuple, a.token_ids[:8]))) > 1  # the n samples of a prompt differ


def test_greedy_vllm_equals_greedy_hf_on_the_suite_model(vllm_sampler):
    """The sentiment suite's architecture (4-layer GPT-2, width 128, byte-level BPE), fp32: greedy
    decoding through vLLM and through HF generate gives the same token sequences."""
    from harness.suites.reviews import generate_reviews
    from harness.training.models import build_model, train_bpe_tokenizer
    from harness.suites.spec import PolicySpec

    texts = generate_reviews(300, seed=0)
    tok = train_bpe_tokenizer(texts, 400)
    model = build_model(PolicySpec(), tok, seed=0).eval()
    with torch.no_grad():  # a sharper random model: greedy choices are far from ties
        model.lm_head.weight.mul_(4.0)
    prompts = [tok(t)["input_ids"][: 3 + i % 4] for i, t in enumerate(texts[:6])]
    out = vllm_sampler.sample(PolicyHandle(tok, model), prompts, 1, GenerationSettings(24, 0.0, 64), seed=0)
    for p, got in zip(prompts, out.token_ids):
        ref = model.generate(input_ids=torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                             do_sample=False, max_new_tokens=24, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id)[0, len(p):].tolist()
        if tok.eos_token_id in ref:
            ref = ref[: ref.index(tok.eos_token_id) + 1]
        assert got == ref


def test_lora_adapter_through_vllm_and_merged_fallback(tmp_path):
    """A PEFT LoRA adapter on a tiny Llama is sampled through vLLM's LoRA support (no merge) with
    ``lora="adapter"`` and merged into the base with ``lora="merge"``; on GPT-2, which vLLM cannot serve
    with LoRA, the sampler always merges. Greedy output equals HF's PeftModel every way."""
    pytest.importorskip("vllm")
    from peft import LoraConfig, PeftModel, get_peft_model
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from harness.evaluation.sampling.vllm import VLLMSampler

    vocab = {f"w{i}": i for i in range(31)} | {"<|endoftext|>": 31}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                  pad_token="<|endoftext|>")
    prompts = [[31, 3, 7], [31, 12], [31, 5, 5, 9]]
    settings = GenerationSettings(12, 0.0, 16)
    builds = {
        "llama": (lambda: LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=64, intermediate_size=128,
                                                      num_hidden_layers=1, num_attention_heads=2,
                                                      num_key_value_heads=2, max_position_embeddings=64,
                                                      bos_token_id=31, eos_token_id=31, pad_token_id=31)),
                  ["q_proj", "v_proj", "o_proj", "down_proj"], True),
        "gpt2": (lambda: GPT2LMHeadModel(GPT2Config(vocab_size=32, n_positions=64, n_embd=64, n_layer=1, n_head=2,
                                                    bos_token_id=31, eos_token_id=31, pad_token_id=31)),
                 ["c_attn", "c_proj"], False),
    }
    for arch, (build, targets, native) in builds.items():
        torch.manual_seed(0)
        base = build().eval()
        with torch.no_grad():
            base.lm_head.weight.mul_(4.0)
        base.save_pretrained(tmp_path / arch)
        tok.save_pretrained(tmp_path / arch)
        peft = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=targets, init_lora_weights=False))
        with torch.no_grad():  # a strong adapter, so that it visibly changes greedy decoding
            for name, w in peft.named_parameters():
                if "lora_B" in name:
                    w.mul_(30.0)
        peft.save_pretrained(tmp_path / f"{arch}-lora")
        base = type(base).from_pretrained(tmp_path / arch).eval()
        tuned = PeftModel.from_pretrained(type(base).from_pretrained(tmp_path / arch), tmp_path / f"{arch}-lora").eval()

        def greedy(model, p):
            out = model.generate(input_ids=torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                                 do_sample=False, max_new_tokens=12, eos_token_id=31, pad_token_id=31)[0, len(p):].tolist()
            return out[: out.index(31) + 1] if 31 in out else out

        want = [greedy(tuned, p) for p in prompts]
        assert want != [greedy(base, p) for p in prompts]  # the adapter changes the policy
        for mode in ("adapter", "merge"):  # an adapter of the base's engine, or merged into its weights
            s = VLLMSampler(lora=mode)
            try:
                got = s.sample(PolicyHandle(tok, None, tmp_path / arch, adapter_path=tmp_path / f"{arch}-lora"),
                               prompts, 1, settings, seed=0)
            finally:
                s.close()
            assert got.info["lora"] is (native and mode == "adapter"), (arch, mode)
            assert got.token_ids == want, (arch, mode)


def _tiny_pair(tmp_path, arch: str):
    """Two models of one configuration (tied input and output embeddings, as GPT-2 and SmolLM2 have)
    saved as folders ``A`` and ``B``, a word-level tokenizer, and for Llama two LoRA adapters on A."""
    from peft import LoraConfig, get_peft_model
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(31)} | {"<|endoftext|>": 31}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                  pad_token="<|endoftext|>")
    if arch == "llama":
        def build():
            return LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                                num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                                                tie_word_embeddings=True, bos_token_id=31, eos_token_id=31, pad_token_id=31))
    else:
        def build():
            return GPT2LMHeadModel(GPT2Config(vocab_size=32, n_positions=64, n_embd=64, n_layer=1, n_head=2,
                                              bos_token_id=31, eos_token_id=31, pad_token_id=31))
    models_ = {}
    for name, seed in (("A", 0), ("B", 1)):
        torch.manual_seed(seed)
        m = build().eval()
        with torch.no_grad():  # sharper distributions: the last norm's gain scales the logits
            (m.transformer.ln_f if arch == "gpt2" else m.model.norm).weight.mul_(30.0)
            if arch == "llama":  # else the tied head mostly repeats the input token
                m.model.layers[0].mlp.down_proj.weight.mul_(50.0)
        m.save_pretrained(tmp_path / name)
        tok.save_pretrained(tmp_path / name)
        models_[name] = m
    if arch == "llama":
        for k in (1, 2):
            torch.manual_seed(10 + k)
            peft = get_peft_model(build().eval(), LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"],
                                                             init_lora_weights=False))
            with torch.no_grad():
                for name, w in peft.named_parameters():
                    if "lora_B" in name:
                        w.mul_(30.0)
            peft.save_pretrained(tmp_path / f"L{k}")
    return tok, models_


@pytest.mark.slow  # six engine starts of tiny models (about a minute on 2 cores)
def test_one_engine_takes_new_weights_and_adapters_and_samples_like_a_fresh_one(tmp_path):
    """One sampler, many policies: a model of the same configuration is loaded into the running engine
    (no new engine) and a LoRA policy is an adapter of its base's engine; each samples token for token
    what a fresh engine samples for the same seed. GPT-2 and Llama tie their output layer to the input
    embedding, the case vLLM's in-place reload alone gets wrong."""
    pytest.importorskip("vllm")
    from harness.evaluation.sampling.vllm import VLLMSampler

    settings = GenerationSettings(12, 1.0, 64)
    prompts = [[31, 3, 7], [31, 12], [31, 5, 5, 9], [31, 1]]

    def fresh(handle):
        s = VLLMSampler(lora="adapter")
        try:
            return s.sample(handle, prompts, 4, settings, seed=5).token_ids
        finally:
            s.close()

    for arch in ("gpt2", "llama"):
        tok, m = _tiny_pair(tmp_path / arch, arch)
        A, B = PolicyHandle(tok, path=tmp_path / arch / "A"), PolicyHandle(tok, m["B"])  # B from memory
        s = VLLMSampler(lora="adapter")
        try:
            a1 = s.sample(A, prompts, 4, settings, seed=5).token_ids
            b1 = s.sample(B, prompts, 4, settings, seed=5).token_ids
            assert (s.engine_starts, s.weight_reloads) == (1, 1), arch
            assert b1 != a1, arch  # the second model really is another policy
            if arch == "llama":  # adapters: one restart with LoRA, then every adapter and the base on it
                lora = [PolicyHandle(tok, path=tmp_path / arch / "A", adapter_path=tmp_path / arch / f"L{k}")
                        for k in (1, 2)]
                l1 = s.sample(lora[0], prompts, 4, settings, seed=5).token_ids
                l2 = s.sample(lora[1], prompts, 4, settings, seed=5).token_ids
                a2 = s.sample(A, prompts, 4, settings, seed=5).token_ids
                assert s.engine_starts == 2 and len({str(a1), str(l1), str(l2)}) == 3
                assert a2 == a1  # the base served by a LoRA engine samples as without LoRA
            b2 = s.sample(B, prompts, 4, settings, seed=5).token_ids
            assert b2 == b1, arch
        finally:
            s.close()  # before a fresh engine: vLLM runs one in-process engine at a time
        assert fresh(B) == b1, arch  # loaded into an engine of A's = a fresh engine of B's
        if arch == "llama":
            assert fresh(lora[1]) == l2  # an adapter after another one: as on its own engine


# ---------------------------------------------------------------------------------------------- process hygiene
# A fresh process: vLLM's logging is configured when it is first imported, and the in-process engine
# replaces torch.set_num_threads, so only a process that has not met vLLM before shows both defects.
_ENGINE_SCRIPT = r'''
import json, sys
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from harness.evaluation.sampling.base import GenerationSettings, PolicyHandle
from harness.evaluation.sampling.vllm import VLLMSampler

tk = Tokenizer(models.WordLevel({"a": 0, "b": 1, "c": 2, "d": 3, "<|endoftext|>": 4}, unk_token="<|endoftext|>"))
tk.pre_tokenizer = pre_tokenizers.Whitespace()
tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                              pad_token="<|endoftext|>")
torch.manual_seed(3)
model = GPT2LMHeadModel(GPT2Config(vocab_size=5, n_positions=16, n_embd=32, n_layer=1, n_head=1,
                                   bos_token_id=4, eos_token_id=4, pad_token_id=4)).eval()
setter = torch.set_num_threads
torch.set_num_threads(1)                       # what the user asked for (PREFBENCH_THREADS)
s = VLLMSampler()
s.sample(PolicyHandle(tok, model), [[4, 0]], 4, GenerationSettings(4, 1.0, 8), seed=0)   # engine start + sampling
facts = {"after_start": torch.get_num_threads(), "same_setter": torch.set_num_threads is setter}
torch.set_num_threads(2)                       # the user changes it later: it must take effect
facts["set_later"] = torch.get_num_threads()
s.sample(PolicyHandle(tok, model), [[4, 1]], 4, GenerationSettings(4, 1.0, 8), seed=0)   # sampling only
facts["after_sampling"] = torch.get_num_threads()
facts["engine_starts"] = s.engine_starts
s.close()
print(json.dumps(facts))
'''


def _clean_env(**extra) -> dict:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "PREFBENCH_VLLM"))}
    env.update(PREFBENCH_QUIET="1", **extra)
    return env


@pytest.mark.slow  # starts a vLLM engine in a subprocess (20-40 s)
def test_engine_logs_go_to_stderr_and_the_thread_count_is_kept(tmp_path):
    """Issue #17.5: an in-process engine writes nothing to stdout (its logs go to stderr), and it
    leaves torch's thread count, and the power to change it, with the caller."""
    pytest.importorskip("vllm")
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    r = subprocess.run([sys.executable, "-c", _ENGINE_SCRIPT], capture_output=True, text=True, cwd=root,
                       env=_clean_env(PYTHONPATH=str(root)), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    facts = json.loads(lines[-1])
    assert facts == {"after_start": 1, "same_setter": True, "set_later": 2, "after_sampling": 2,
                     "engine_starts": 1}
    assert len(lines) == 1, r.stdout[:2000]           # stdout holds the script's own line only
    assert "LLM engine" in r.stderr                    # vLLM still logs, on stderr


@pytest.mark.slow  # starts a vLLM engine in a subprocess (20-40 s)
def test_vllm_logs_move_to_stderr_when_vllm_configured_them_first():
    """vLLM sets its log handler up when an engine is created (on stdout by default), and not again
    for the same config: where that happened before the sampler set ``VLLM_LOGGING_STREAM``, the sampler
    moves the handler to stderr itself."""
    pytest.importorskip("vllm")
    import subprocess
    import sys
    from pathlib import Path

    code = ("import logging\n"
            "from vllm.config.logging import LoggingConfig\n"
            "from vllm.logger import configure_logging\n"
            "configure_logging(LoggingConfig())   # what creating an engine does first\n"
            "from harness.evaluation.sampling import vllm as v\n"
            "logging.getLogger('vllm.prefbench').warning('BEFORE-MARK')\n"
            "v.configure_environment(); v._logs_to_stderr()\n"
            "logging.getLogger('vllm.prefbench').warning('AFTER-MARK')\n")
    root = Path(__file__).resolve().parent.parent
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root,
                       env=_clean_env(PYTHONPATH=str(root)), timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "BEFORE-MARK" in r.stdout                   # vLLM's own default, on import
    assert "AFTER-MARK" in r.stderr and "AFTER-MARK" not in r.stdout


@pytest.mark.slow
def test_prefbench_run_with_vllm_one_engine_per_sweep_and_only_the_table_on_stdout(tmp_path):
    """`prefbench run --sampler vllm` on the tiny suite (one attention head: vLLM's CPU attention needs a
    head size of at least 32). One engine serves the whole sweep (π_SFT's baseline and every run's
    evaluation, from the sampling server); a run's samples do not depend on what the engine served
    before (the same DPO run in a sweep of its own samples the same tokens); stdout is exactly the
    comparison table, every engine log is on stderr."""
    pytest.importorskip("vllm")
    import json
    import subprocess
    import sys
    from pathlib import Path

    import pandas as pd

    from harness.analysis import headline
    from harness.execution.results import ResultsStore

    root = Path(__file__).resolve().parent.parent
    suite = tmp_path / "tiny.yaml"
    text = (root / "tests" / "data" / "tiny.yaml").read_text()
    assert "n_head: 2" in text
    suite.write_text(text.replace("n_head: 2", "n_head: 1"))

    def run(algorithms, results):
        r = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(suite), "--algorithms", algorithms,
                            "--seeds", "0", "--sampler", "vllm", "--results", str(results)], capture_output=True,
                           text=True, cwd=root, timeout=900,
                           env=_clean_env(PREFBENCH_CACHE=str(tmp_path / "cache"), PREFBENCH_THREADS="1"))
        assert r.returncode == 0, r.stderr[-3000:]
        return r

    r = run("sft,dpo", tmp_path / "sweep")
    assert "LLM engine" in r.stderr
    assert r.stderr.count("vLLM engine started") == 1  # baseline + reference row + sft + dpo: one engine
    runs = list(ResultsStore(tmp_path / "sweep").iter_runs("tiny"))
    assert len(runs) == 3 and all(json.loads((p / "config.json").read_text())["sampler"] == "vllm" for p in runs)
    assert r.stdout == headline(tmp_path / "sweep", "tiny", {p.name for p in runs}, "md")

    run("dpo", tmp_path / "alone")  # the engine serves the reference row, then DPO (no SFT before it)
    dpo = {}
    for name in ("sweep", "alone"):
        folder = next(q for q in ResultsStore(tmp_path / name).iter_runs("tiny") if q.name.startswith("dpo-"))
        dpo[name] = pd.read_parquet(folder / "samples.parquet")
    assert [list(x) for x in dpo["sweep"].completion_ids] == [list(x) for x in dpo["alone"].completion_ids]
