"""PEFT LoRA through the shared training plumbing (issue 10): only adapters train, the adapter and the
merged model give the same log-probabilities, KL and samples within float error, LoRA settings are part
of the run identity (and full fine-tuning ids do not move), and target modules the model lacks are one
line and exit 2 before anything is written."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness.cli import main
from test_device import _pairs, _tiny_models, train_once

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "data" / "tiny.yaml"
LORA = {"r": 4, "alpha": 8.0, "dropout": 0.0, "target_modules": "all-linear"}


@pytest.fixture(autouse=True)
def _reset_resources():
    from harness.training import device

    yield
    device.configure(None)


@pytest.mark.parametrize("arch,targets", [("llama", "q_proj,v_proj,down_proj"), ("gpt2", "all-linear")])
@pytest.mark.parametrize("algo", ["dpo", "sft", "simpo"])
def test_lora_trains_only_adapters(tmp_path, arch, targets, algo):
    """Native sft, dpo and a pairwise method that knows nothing of LoRA (simpo) train adapters only:
    the base weights stay π_SFT's bit for bit, the adapters move."""
    import torch

    from harness.training.lora import is_peft

    torch.set_num_threads(1)
    base = _tiny_models()[arch]
    model, log = train_once(algo, base, _pairs(8), tmp_path, None, lora={**LORA, "target_modules": targets})
    assert is_peft(model) and all(np.isfinite(r["loss"]) for r in log)
    ref = base.state_dict()
    lora_moved = 0
    for name, p in model.named_parameters():
        if "lora_" in name:
            assert p.requires_grad
            lora_moved += int(bool((p != 0).any()))
        else:
            assert not p.requires_grad, name
    assert lora_moved >= 2
    inner = model.get_base_model().state_dict()
    for k, v in ref.items():  # frozen base: unchanged (PEFT renames adapted weights to *.base_layer.weight)
        k2 = k if k in inner else k.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
        assert torch.equal(inner[k2], v), k


def test_adapter_and_merged_model_agree(tmp_path, tiny_lm):
    """After LoRA training: log-probabilities, the three KL estimates against π_ref and HF samples of the
    PEFT model and of its merged copy agree within float error; the saved adapter reloads to the same."""
    import torch
    from peft import PeftModel

    from harness.evaluation.kl import sequence_kl
    from harness.evaluation.sampling.base import GenerationSettings, PolicyHandle
    from harness.evaluation.sampling.hf import HFSampler
    from harness.training.logprobs import collate, token_logps
    from harness.training.lora import finish, is_peft

    torch.set_num_threads(1)
    base = _tiny_models()["llama"].eval()
    peft, _ = train_once("dpo", base, _pairs(8), tmp_path, None, lora=LORA, lr=3e-2)
    peft.eval()
    merged = finish(peft, tmp_path / "run")
    assert not is_peft(merged) and type(merged).__name__ == "LlamaForCausalLM"
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").is_file()
    pairs = _pairs(16, seed=1)
    P, C = pairs.prompt_ids.tolist(), pairs.chosen_ids.tolist()
    b = collate(P, C, 0)
    with torch.no_grad():
        lp_peft, lp_merged, lp_base = token_logps(peft, b), token_logps(merged, b), token_logps(base, b)
        reloaded = PeftModel.from_pretrained(_tiny_models()["llama"], str(tmp_path / "run" / "adapter")).eval()
        lp_reloaded = token_logps(reloaded, b)
    assert (lp_peft - lp_base).abs().max() > 1e-2  # the adapter changed the policy
    assert torch.allclose(lp_peft, lp_merged, atol=1e-5)
    assert torch.allclose(lp_peft, lp_reloaded, atol=1e-6)
    kp = sequence_kl(peft, base, P, C, 0)
    km = sequence_kl(merged, base, P, C, 0)
    assert kp["kl"].mean() > 1e-3
    for k in ("kl", "kl_k1", "kl_k3", "policy_logp"):
        np.testing.assert_allclose(kp[k], km[k], atol=1e-4, rtol=1e-5)
    tok = type("Tok", (), {"eos_token_id": 0, "pad_token_id": 0,
                           "batch_decode": staticmethod(lambda ids, skip_special_tokens=True: [str(i) for i in ids])})()
    settings = GenerationSettings(8, 1.0, 16)
    sp = HFSampler().sample(PolicyHandle(tok, peft), P, 2, settings, seed=3)
    sm = HFSampler().sample(PolicyHandle(tok, merged), P, 2, settings, seed=3)
    assert sp.token_ids == sm.token_ids


def test_lora_settings_are_part_of_the_run_identity(tmp_path):
    """The suite's lora: block reaches sft and dpo as lora_* hyperparameters; --set overrides it per
    algorithm; every LoRA setting changes the run id; without LoRA the ids are those of full fine-tuning."""
    from harness.execution.plan import plan_runs
    from harness.suites.spec import load_suite

    def ids(text_extra="", sets=None):
        path = tmp_path / f"s{len(list(tmp_path.iterdir()))}.yaml"
        path.write_text(TINY.read_text() + text_extra)
        runs = plan_runs(load_suite(str(path)), "smoke", ["sft", "dpo"], [0], sets or {}, "hf")
        return {r.algorithm: r for r in runs}

    full = ids()
    same = ids("lora: {r: 0, alpha: 32}\n")  # r 0 is full fine-tuning whatever the rest says
    assert {a: r.run_id for a, r in same.items()} == {a: r.run_id for a, r in full.items()}
    assert "lora_r" not in full["dpo"].hyperparameters
    lora = ids("lora: {r: 8, target_modules: c_attn}\n")
    assert lora["dpo"].config.lora_r == lora["sft"].config.lora_r == 8
    assert lora["dpo"].hyperparameters["lora_target_modules"] == "c_attn"
    assert lora["reference"].run_id == full["reference"].run_id  # the reference row trains nothing
    seen = {full["dpo"].run_id, lora["dpo"].run_id}
    for sets in ({"dpo": {"lora_r": 16}}, {"dpo": {"lora_alpha": 4.0}}, {"dpo": {"lora_dropout": 0.1}},
                 {"dpo": {"lora_target_modules": "c_attn,c_fc"}}):
        run = ids("lora: {r: 8, target_modules: c_attn}\n", sets)
        assert run["sft"].run_id == lora["sft"].run_id  # --set dpo.* leaves sft alone
        assert run["dpo"].run_id not in seen
        seen.add(run["dpo"].run_id)
    # a preset's lora: overrides the suite's, key by key
    text = TINY.read_text().replace("    train_prompts: 24\n", "    train_prompts: 24\n    lora: {r: 2}\n")
    path = tmp_path / "preset-lora.yaml"
    path.write_text(text + "lora: {r: 8, target_modules: c_attn}\n")
    runs = {r.algorithm: r for r in plan_runs(load_suite(str(path)), "smoke", ["dpo"], [0], {}, "hf")}
    assert runs["dpo"].config.lora_r == 2 and runs["dpo"].config.lora_target_modules == "c_attn"


@pytest.mark.parametrize("extra,argv,needles", [
    ("", ["--set", "dpo.lora_r=4", "--set", "dpo.lora_target_modules=q_proj,c_attn"], ["--set", "q_proj", "c_attn"]),
    ("lora: {r: 4, target_modules: gate_proj}\n", [], ["lora.target_modules", "gate_proj"]),
    ("lora: {r: -1}\n", [], ["lora.r"]),
    ("lora: {rank: 4}\n", [], ["lora.rank"]),
])
def test_bad_lora_settings_are_one_line(capsys, tmp_path, extra, argv, needles):
    suite = tmp_path / "tiny-lora.yaml"
    suite.write_text(TINY.read_text() + extra)
    results = tmp_path / "results"
    code = main(["run", str(suite), "--algorithms", "dpo", "--results", str(results), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, err
    assert not results.exists()


def test_target_modules_the_model_lacks_fail_when_the_model_is_built():
    """For a model whose modules are not known before it loads, the same check runs on the built model."""
    from harness.core.errors import UserError
    from harness.training.lora import apply_lora

    with pytest.raises(UserError, match="q_proj"):
        apply_lora(_tiny_models()["gpt2"], {**LORA, "target_modules": "q_proj"})


@pytest.mark.slow
def test_lora_dpo_end_to_end_records_resources_and_adapter(tmp_path, smoke_cache):
    """`prefbench run` with LoRA DPO and micro-batches: the run finishes, saves its adapter, records
    device and precision, and the report's protocol shows them; the reference row's KL is exactly 0."""
    from harness.analysis import build_report  # noqa: F401 -- the report path is exercised below

    results = tmp_path / "results"
    code = main(["run", str(TINY), "--algorithms", "dpo", "--set", "dpo.lora_r=4", "--set", "dpo.lr=1e-2",
                 "--micro-batch-size", "2", "--device", "cpu", "--results", str(results)])
    assert code == 0
    runs = {json.loads(p.read_text())["algorithm"]: p.parent for p in results.glob("tiny/*/metrics.json")}
    m = json.loads((runs["dpo"] / "metrics.json").read_text())
    assert m["status"] == "ok" and m["hyperparameters"]["lora_r"] == 4
    assert m["resources"]["device"] == "cpu" and m["resources"]["precision"] == "fp32"
    assert m["resources"]["micro_batch_size"] == 2
    assert 0 < m["extra"]["lora_trainable_parameters"] < m["extra"]["total_parameters"]
    assert (runs["dpo"] / "adapter" / "adapter_model.safetensors").is_file()
    assert m["metrics"]["kl"] > 0
    ref = json.loads((runs["reference"] / "metrics.json").read_text())
    assert ref["metrics"]["kl"] == 0.0
    out = tmp_path / "report"
    assert main(["report", "--results", str(results), "--dir", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "**Compute** (device, precision): cpu, fp32" in text


@pytest.mark.slow
def test_trained_adapter_is_served_by_vllm_and_matches_the_merged_model(tmp_path):
    """What evaluation hands a sampler after LoRA training (the merged model, π_SFT's folder and the saved
    adapter): vLLM serves base + adapter without merging, and its greedy completions equal HF's on the
    merged model."""
    pytest.importorskip("vllm")
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from harness.evaluation.sampling.base import GenerationSettings, PolicyHandle
    from harness.evaluation.sampling.vllm import VLLMSampler
    from harness.training.lora import finish

    torch.set_num_threads(1)
    vocab = {f"w{i}": i for i in range(1, 40)} | {"<|endoftext|>": 0}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                  pad_token="<|endoftext|>")
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)  # head size 32: one vLLM's CPU attention supports
    base = LlamaForCausalLM(LlamaConfig(vocab_size=40, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                                        bos_token_id=0, eos_token_id=0, pad_token_id=0))
    with torch.no_grad():
        base.lm_head.weight.mul_(4.0)  # a peaked policy: greedy decoding is not decided by rounding
    base.save_pretrained(tmp_path / "sft")
    tok.save_pretrained(tmp_path / "sft")
    peft, _ = train_once("dpo", base, _pairs(8), tmp_path, None, lora={**LORA, "r": 8}, lr=5e-2, epochs=4.0)
    merged = finish(peft.eval(), tmp_path / "run").eval()
    prompts = [[0, 3, 7], [0, 12], [0, 5, 5, 9], [0, 21, 2]]

    def greedy(model, p):
        out = model.generate(input_ids=torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                             do_sample=False, max_new_tokens=10, eos_token_id=0, pad_token_id=0)[0, len(p):].tolist()
        return out[: out.index(0) + 1] if 0 in out else out

    want = [greedy(merged, p) for p in prompts]
    assert want != [greedy(base.eval(), p) for p in prompts]  # training changed the policy
    s = VLLMSampler(lora="adapter")  # served as an adapter (the default on a GPU; CPU merges)
    try:
        got = s.sample(PolicyHandle(tok, merged, tmp_path / "sft", adapter_path=merged.prefbench_adapter),
                       prompts, 1, GenerationSettings(10, 0.0, 16), seed=0)
    finally:
        s.close()
    assert got.info["lora"] is True
    assert got.token_ids == want


def test_reward_model_lora_trains_adapters_through_trl_and_merges_in_place(tmp_path):
    """The learned reward model with LoRA: TRL's RewardTrainer trains adapters (and the score head), the
    adapters are merged into the same model object, and the embeddings, which LoRA leaves alone, are
    untouched; the reward margin on the training pairs grows."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForSequenceClassification, PreTrainedTokenizerFast

    from harness.adapters.trl_reward import train_reward_model

    torch.set_num_threads(1)
    vocab = {f"w{i}": i for i in range(1, 40)} | {"<|endoftext|>": 0, "<pad>": 40}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                  pad_token="<pad>")
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(LlamaConfig(vocab_size=41, hidden_size=32, intermediate_size=64,
                                                       num_hidden_layers=1, num_attention_heads=2,
                                                       num_key_value_heads=2, num_labels=1, pad_token_id=40))
    rng = np.random.default_rng(0)
    chosen = [[0] + rng.integers(1, 40, 3).tolist() + [5, 5, 0] for _ in range(32)]
    rejected = [c[:4] + [6, 6, 0] for c in chosen]

    def margin():
        with torch.no_grad():
            rc = model(input_ids=torch.tensor(chosen)).logits[:, 0]
            rr = model(input_ids=torch.tensor(rejected)).logits[:, 0]
        return float((rc - rr).mean())

    before, emb = margin(), model.model.embed_tokens.weight.detach().clone()
    q = model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    logs = train_reward_model(model, tok, chosen, rejected, lr=2e-2, epochs=3, batch_size=8, max_length=16, seed=0,
                              workdir=tmp_path, lora={**LORA, "r": 8})
    assert logs and all(np.isfinite(r["loss"]) for r in logs)
    assert not any("lora" in n or "modules_to_save" in n for n, _ in model.named_modules())  # merged, plain
    assert type(model.model.layers[0].self_attn.q_proj).__name__ == "Linear"
    assert torch.equal(model.model.embed_tokens.weight, emb)
    assert not torch.equal(model.model.layers[0].self_attn.q_proj.weight, q)  # the merged adapter
    assert margin() > before + 0.5


def test_reward_model_lora_settings_are_part_of_its_key_and_run_ids(tmp_path):
    from harness.execution.plan import plan_runs
    from harness.suites.spec import load_suite
    from harness.training.reward_model import rm_settings

    def runs(extra="", sets=None):
        path = tmp_path / f"s{len(list(tmp_path.iterdir()))}.yaml"
        path.write_text(TINY.read_text() + extra)
        return {r.algorithm: r for r in plan_runs(load_suite(str(path)), "smoke", ["ppo"], [0], sets or {}, "hf")}

    full, lora = runs(), runs("lora: {r: 8}\n")
    assert "lora" not in rm_settings(full["ppo"].config) and "rm_lora_r" not in full["ppo"].hyperparameters
    assert rm_settings(lora["ppo"].config)["lora"]["r"] == 8
    assert lora["ppo"].run_id != full["ppo"].run_id
    assert lora["ppo"].hyperparameters["lora_r"] == 8  # the suite's block reaches the PPO policy too
    assert runs("lora: {r: 8}\n", {"ppo": {"rm_lora_r": 0, "lora_r": 0}})["ppo"].run_id == full["ppo"].run_id


@pytest.mark.slow
def test_lora_for_the_trl_online_algorithms_keeps_pi_ref_as_the_adapters_disabled(tmp_path, smoke_cache):
    """PPO-GT, RLOO and GRPO (gold reward: no reward model to train) with LoRA: TRL trains adapters only,
    π_ref is the same weights with the adapters off (one copy), so the training KL of the first batch,
    measured before any update, is 0; each run saves its adapter and is evaluated merged."""
    results = tmp_path / "results"
    sets = {"ppo-gt": ["total_episodes=4", "batch_size=2", "num_mini_batches=1"], "rloo": ["steps=2", "prompts_per_step=2", "reward=gold"],
            "grpo": ["steps=2", "prompts_per_step=2", "reward=gold"]}
    argv = ["run", str(TINY), "--algorithms", ",".join(sets), "--results", str(results)]
    for algo, items in sets.items():
        for item in items + ["lora_r=4", "lr=1e-2"]:
            argv += ["--set", f"{algo}.{item}"]
    assert main(argv) == 0
    runs = {json.loads(p.read_text())["algorithm"]: p.parent for p in results.glob("tiny/*/metrics.json")}
    for algo in sets:
        m = json.loads((runs[algo] / "metrics.json").read_text())
        assert m["status"] == "ok" and m["hyperparameters"]["lora_r"] == 4, algo
        assert 0 < m["extra"]["lora_trainable_parameters"] < m["extra"]["total_parameters"] / 5, algo
        assert (runs[algo] / "adapter" / "adapter_model.safetensors").is_file(), algo
        assert np.isfinite(m["metrics"]["kl"]), algo
        log = [json.loads(line) for line in (runs[algo] / "train_log.jsonl").read_text().splitlines()]
        if algo != "ppo-gt":  # the KL of the first batch, before the first update: π = π_ref exactly
            assert abs(log[0]["kl"]) < 1e-6, log[0]
    # RLOO's KL penalty alone gives the group non-zero advantages: its adapters moved the policy (on this
    # tiny model VADER scores most completions 0, so GRPO's group-normalised advantages may all vanish)
    assert json.loads((runs["rloo"] / "metrics.json").read_text())["metrics"]["kl"] > 0
