"""Chat templates and a user's own model (policy.kind pretrained + name_or_path).

A tiny Llama is built from a config and saved to tmp_path with a ChatML template whose end-of-turn
token (<|im_end|>) differs from EOS, so every check below can tell the two stop tokens apart. Its
word-level vocabulary holds sentiment words, so VADER separates its random completions and sampled
pairs exist."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
WORDS = ("the it was is and very not quite a bit so this that place thing one good great lovely happy nice "
         "fine bad awful sad poor terrible boring ugly love hate enjoy like dislike best worst calm warm cold "
         "user assistant write review short").split()


def chat_tokenizer(template: bool = True):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<unk>", "<|im_start|>", "<|im_end|>"]
    vocab = {t: i for i, t in enumerate(specials + WORDS)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                  pad_token="<|endoftext|>", unk_token="<unk>",
                                  additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    if template:
        tok.chat_template = CHATML
    return tok


def save_chat_llama(folder: Path, template: bool = True, uniform: bool = False, hidden: int = 32) -> Path:
    """A ~30k-parameter Llama + tokenizer saved as a user would (save_pretrained, safetensors).
    ``hidden=64``: heads of 32, the least vLLM's CPU attention takes."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = chat_tokenizer(template)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    if uniform:  # every token equally likely: stops at both stop tokens are frequent
        with torch.no_grad():
            model.lm_head.weight.zero_()
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder


USER_SUITE = """\
name: mymodel
version: 1
tokenizer: {{kind: policy}}
policy: {{kind: pretrained, name_or_path: {path}, max_length: 96}}
data: {{kind: synthetic_instructions, n_documents: 600}}
reference: {{kind: use_base}}
prompts: {{kind: document, min_words: 4, max_words: 20, chat_template: {chat}}}
presets:
  smoke: {{train_prompts: 12, eval_prompts: 8, algorithms: {{sft: {{batch_size: 8}}, dpo: {{batch_size: 8}}}}}}
  full: {{train_prompts: 200, eval_prompts: 100}}
"""


def write_suite(tmp_path: Path, path: str, chat: bool = True) -> Path:
    f = tmp_path / "mymodel.yaml"
    f.write_text(USER_SUITE.format(path=path, chat="true" if chat else "false"))
    return f


# ---------------------------------------------------------------- prompts and stop tokens
def test_chat_prompts_are_the_rendered_template_and_stop_ids_include_end_of_turn():
    from harness.suites.prompting import encode_prompts, end_of_turn_id, reply_end_id, stop_token_ids

    tok = chat_tokenizer()
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    assert eot != tok.eos_token_id
    assert end_of_turn_id(tok) == eot
    assert stop_token_ids(tok) == [tok.eos_token_id, eot]
    assert reply_end_id(tok, True) == eot and reply_end_id(tok, False) == tok.eos_token_id
    [ids] = encode_prompts(tok, ["write a short review"], chat_template=True)
    rendered = tok.apply_chat_template([{"role": "user", "content": "write a short review"}],
                                       add_generation_prompt=True, tokenize=False)
    assert ids == tok(rendered, add_special_tokens=False)["input_ids"]
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>") and ids.count(tok.bos_token_id) == 0
    [plain] = encode_prompts(tok, ["write a short review"], chat_template=False)
    assert plain[0] == tok.bos_token_id and plain[1:] == tok("write a short review", add_special_tokens=False)["input_ids"]
    no_template = chat_tokenizer(template=False)
    assert stop_token_ids(no_template) == [no_template.eos_token_id] and end_of_turn_id(no_template) is None
    with pytest.raises(ValueError):
        encode_prompts(no_template, ["x"], chat_template=True)


def test_finish_completions_cuts_at_the_first_stop_token():
    from harness.evaluation.sampling.base import finish_completions

    tok = chat_tokenizer()
    eos, eot = tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")
    w = tok.convert_tokens_to_ids("good")
    raw = [[w, eot, w, eos], [w, w, eos, eot], [w, w, w, w], [eot]]
    comp = finish_completions(raw, [eos, eot], 4, tok, 1, engine="t")
    assert comp.token_ids == [[w, eot], [w, w, eos], [w, w, w, w], [eot]]
    assert comp.finished.tolist() == [True, True, False, True]
    assert comp.texts[0] == "good"  # the stop token is kept as an id, never in the text
    assert finish_completions(raw, eos, 4, tok, 1, engine="t").token_ids[0] == [w, eot, w, eos]


def _check_stops(comp, stops: set[int]) -> None:
    """Every completion ends at its first stop token (kept as its last token), or runs to the cap."""
    for ids, done in zip(comp.token_ids, comp.finished):
        inner = [t for t in ids[:-1] if t in stops]
        assert not inner, "a stop token inside a completion: sampling did not stop there"
        assert done == (bool(ids) and ids[-1] in stops)


def test_hf_sampler_stops_at_end_of_turn_and_eos(tmp_path):
    from harness.evaluation.sampling.base import GenerationSettings, PolicyHandle
    from harness.evaluation.sampling.hf import HFSampler
    from harness.suites.prompting import encode_prompts, stop_token_ids
    from harness.training.models import load_policy

    folder = save_chat_llama(tmp_path / "m", uniform=True)
    model, tok = load_policy(folder)
    prompts = encode_prompts(tok, ["write a short review of the place"] * 4, chat_template=True)
    comp = HFSampler().sample(PolicyHandle(tok, model), prompts, 16, GenerationSettings(24, 1.0, 64), seed=1)
    stops = set(stop_token_ids(tok))
    _check_stops(comp, stops)
    ends = [ids[-1] for ids, d in zip(comp.token_ids, comp.finished) if d]
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    assert eot in ends and tok.eos_token_id in ends  # both stop tokens ended some of the 64 samples


@pytest.mark.slow
def test_vllm_sampler_stops_where_the_hf_sampler_does(tmp_path):
    pytest.importorskip("vllm")
    from harness.evaluation.sampling.base import GenerationSettings, PolicyHandle
    from harness.evaluation.sampling.vllm import VLLMSampler
    from harness.suites.prompting import encode_prompts, stop_token_ids
    from harness.training.models import load_policy

    folder = save_chat_llama(tmp_path / "m", uniform=True, hidden=64)
    _, tok = load_policy(folder)
    prompts = encode_prompts(tok, ["write a short review of the place"] * 4, chat_template=True)
    sampler = VLLMSampler()
    try:
        comp = sampler.sample(PolicyHandle(tok, None, folder), prompts, 16, GenerationSettings(24, 1.0, 64), seed=1)
    finally:
        sampler.close()
    _check_stops(comp, set(stop_token_ids(tok)))
    ends = [ids[-1] for ids, d in zip(comp.token_ids, comp.finished) if d]
    assert tok.convert_tokens_to_ids("<|im_end|>") in ends and tok.eos_token_id in ends


def test_scoring_and_kl_cover_the_stop_token(tmp_path):
    import torch

    from harness.evaluation.kl import sequence_kl
    from harness.training.logprobs import batched_sequence_logps, collate
    from harness.training.models import load_policy

    model, tok = load_policy(save_chat_llama(tmp_path / "m"))
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    w = tok.convert_tokens_to_ids("good")
    prompt = [tok.convert_tokens_to_ids("<|im_start|>"), w]
    b = collate([prompt, prompt], [[w, eot], [w]], tok.pad_token_id)
    assert b.target_mask.sum(-1).tolist() == [2.0, 1.0]  # the end-of-turn token is a scored completion token
    lp = batched_sequence_logps(model, [prompt, prompt], [[w, eot], [w]], tok.pad_token_id)
    assert lp[0] < lp[1]  # log π(good, <|im_end|>) = log π(good) + a negative term
    kl = sequence_kl(model, model, [prompt], [[w, eot]], tok.pad_token_id)
    assert kl["kl"][0] == 0.0 and kl["policy_logp"][0] == pytest.approx(float(lp[0]), abs=1e-5)
    with torch.no_grad():
        assert torch.isfinite(lp).all()


# ---------------------------------------------------------------- bad input: one line, exit 2, nothing written
def _cli(args, tmp_path, env_extra=None, timeout=120):
    import os

    env = {**os.environ, "PREFBENCH_QUIET": "1", **(env_extra or {})}
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=timeout)
    return p, time.monotonic() - t0


@pytest.mark.parametrize("case", ["missing_folder", "hub_id", "hub_id_offline", "no_template", "file_not_folder"])
def test_bad_model_sources_exit_2_with_one_line_before_any_compute(tmp_path, case):
    env = {}
    if case == "missing_folder":
        suite, key, hint = write_suite(tmp_path, "./no-such-model"), "policy.name_or_path", "save_pretrained"
    elif case in ("hub_id", "hub_id_offline"):
        suite, key, hint = write_suite(tmp_path, "some-org/some-model"), "policy.name_or_path", "--local-dir"
        if case == "hub_id_offline":
            env["HF_HUB_OFFLINE"] = "1"
    elif case == "file_not_folder":
        (tmp_path / "weights.bin").write_bytes(b"x")
        suite, key, hint = write_suite(tmp_path, "./weights.bin"), "policy.name_or_path", "model folder"
    else:
        save_chat_llama(tmp_path / "m", template=False)
        suite, key, hint = write_suite(tmp_path, "./m"), "prompts.chat_template", "no chat template"
    results = tmp_path / "results"
    p, seconds = _cli(["run", str(suite), "--results", str(results)], tmp_path, env)
    assert p.returncode == 2, p.stderr[-2000:]
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and key in lines[0] and hint in lines[0], lines
    assert not results.exists()
    assert seconds < 60  # imports included; no network wait, no model load


def test_chat_template_with_a_train_bpe_tokenizer_is_refused_by_the_suite_schema(tmp_path):
    from harness.core.errors import UserError
    from harness.suites.spec import load_suite

    text = (ROOT / "tests" / "data" / "tiny.yaml").read_text().replace(
        "prompts: {min_words: 2, max_words: 4}", "prompts: {min_words: 2, max_words: 4, chat_template: true}")
    f = tmp_path / "t.yaml"
    f.write_text(text)
    with pytest.raises(UserError, match="prompts.chat_template"):
        load_suite(str(f))


def test_a_pretrained_policy_needs_its_own_tokenizer(tmp_path):
    from harness.core.errors import UserError
    from harness.suites.spec import load_suite

    f = write_suite(tmp_path, "./m")
    f.write_text(f.read_text().replace("tokenizer: {kind: policy}", "tokenizer: {kind: train_bpe}"))
    with pytest.raises(UserError, match="tokenizer.kind"):
        load_suite(str(f))


def test_a_context_longer_than_the_local_model_is_refused_relative_to_the_suite_file(tmp_path):
    from harness.core.errors import UserError
    from harness.suites.spec import load_suite

    save_chat_llama(tmp_path / "m")  # 256 positions
    f = write_suite(tmp_path, "./m")
    load_suite(str(f))
    f.write_text(f.read_text().replace("max_length: 96", "max_length: 1000"))
    with pytest.raises(UserError, match="policy.max_length"):
        load_suite(str(f))


# ---------------------------------------------------------------- the user suite end to end
@pytest.mark.slow
def test_user_suite_with_a_local_chat_model_runs_end_to_end(tmp_path, monkeypatch):
    import pandas as pd

    from harness.cli import main
    from harness.execution.results import ResultsStore
    from harness.suites.prompting import stop_token_ids
    from harness.training.models import load_policy

    save_chat_llama(tmp_path / "my-model")
    suite = write_suite(tmp_path, "./my-model")
    monkeypatch.setenv("PREFBENCH_CACHE", str(tmp_path / "cache"))
    results = tmp_path / "results"
    assert main(["run", str(suite), "--algorithms", "sft,dpo", "--results", str(results)]) == 0
    runs = {json.load(open(p / "metrics.json"))["algorithm"]: p for p in ResultsStore(results).iter_runs("mymodel")}
    assert set(runs) == {"reference", "sft", "dpo"}
    ref = json.load(open(runs["reference"] / "metrics.json"))["metrics"]
    assert ref["kl"] == 0.0
    _, tok = load_policy(tmp_path / "my-model")
    stops = set(stop_token_ids(tok))
    for algo, path in runs.items():
        samples = pd.read_parquet(path / "samples.parquet")
        for ids, done in zip(samples.completion_ids, samples.finished):
            ids = list(ids)
            assert not [t for t in ids[:-1] if t in stops] and done == (ids[-1] in stops)
    # the reference artifact holds the user's weights as loaded (safetensors) and the chat template
    ref_dirs = list((tmp_path / "cache" / "mymodel").glob("reference-*"))
    assert len(ref_dirs) == 1 and list(ref_dirs[0].glob("*.safetensors"))
    pairs_dir = next((tmp_path / "cache" / "mymodel").glob("pairs-*"))
    pairs = pd.read_parquet(pairs_dir / "pairs.parquet")
    start = tok.convert_tokens_to_ids("<|im_start|>")
    assert all(list(p)[0] == start for p in pairs.prompt_ids)  # training prompts carry the template
    eval_prompts = set(pd.read_parquet(runs["dpo"] / "samples.parquet").prompt)
    assert not eval_prompts & set(pairs.prompt)  # evaluation prompts are held out from training prompts
