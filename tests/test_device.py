"""Device, precision and micro-batching (issue 10): bad input is one line and exit 2 before anything is
written; device and micro-batch size are resources that leave run ids alone (bf16 precision does not);
gradient accumulation gives the update of the whole batch within float error (1×8 vs 4×2, fp32, a
real model and a real AdamW step)."""
from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from harness.cli import main

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "data" / "tiny.yaml"


@pytest.fixture(autouse=True)
def _reset_resources():
    from harness.training import device

    yield
    device.configure(None)  # make_plan installs the resolved resources in this process


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _one_line_exit_2(capsys, argv, tmp_path, *needles):
    results = tmp_path / "results"
    code = main(["run", *argv, "--results", str(results)])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("prefbench: error: "), err
    for n in needles:
        assert n in err, err
    assert not results.exists()  # nothing written
    return err


def test_device_cuda_without_cuda_is_one_line(capsys, tmp_path):
    if _cuda():
        pytest.skip("this machine has CUDA")
    _one_line_exit_2(capsys, [str(TINY), "--device", "cuda"], tmp_path, "--device", "CUDA is not available")
    _one_line_exit_2(capsys, [str(TINY), "--device", "cuda:1"], tmp_path, "--device")


@pytest.mark.parametrize("argv,needle", [(["--device", "gpu"], "--device"), (["--device", "cuda:x"], "--device"),
                                         (["--micro-batch-size", "0"], "--micro-batch-size"),
                                         # KTO's reference point couples the batch: accumulation would change it
                                         (["--algorithms", "kto", "--set", "kto.batch_size=4", "--micro-batch-size",
                                           "2"], "kto: its reference point")])
def test_bad_resource_flags_are_one_line(capsys, tmp_path, argv, needle):
    _one_line_exit_2(capsys, [str(TINY), *argv], tmp_path, needle)


def test_bf16_on_a_device_without_it_is_one_line(capsys, tmp_path):
    from harness.training.device import cpu_has_native_bf16

    if _cuda() or cpu_has_native_bf16():
        pytest.skip("this machine has bf16")
    suite = tmp_path / "tiny-bf16.yaml"
    suite.write_text(TINY.read_text() + "precision: bf16\n")
    _one_line_exit_2(capsys, [str(suite), "--device", "cpu"], tmp_path, "precision", "bf16")
    bad = tmp_path / "tiny-fp16.yaml"
    bad.write_text(TINY.read_text() + "precision: fp16\n")
    _one_line_exit_2(capsys, [str(bad)], tmp_path, "precision")


def test_resources_are_not_part_of_the_run_id(tmp_path):
    """--device and --micro-batch-size (and checkpointing) leave every run id as it was; a bf16 precision
    changes them (the numbers differ), fp32 does not."""
    from harness.execution.plan import Request, make_plan, plan_runs

    def ids(**kw):
        plan = make_plan(Request(suite=str(TINY), algorithms="sft,dpo", **kw), tmp_path / "cache")
        return plan, [r.run_id for r in plan.runs]

    plan, base = ids(device="cpu")
    assert plan.resources.device == "cpu" and plan.resources.precision == "fp32"
    _, other = ids(device="auto", micro_batch_size=2, gradient_checkpointing=True)
    assert other == base and len(set(base)) == 3
    bf16 = [r.run_id for r in plan_runs(plan.suite, plan.preset, ["sft", "dpo"], [0], {}, "hf",
                                        artifacts=plan.artifacts.hashes(), precision="bf16")]
    assert set(bf16).isdisjoint(base)


# ------------------------------------------------------------------------------ gradient accumulation
def _tiny_models():
    """A tiny GPT-2 and a tiny Llama from configs (seeded), vocabulary of 40 tokens, 0 = BOS/EOS/pad."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    ids = dict(vocab_size=40, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    gpt2 = GPT2LMHeadModel(GPT2Config(n_positions=32, n_embd=32, n_layer=2, n_head=2, resid_pdrop=0.0,
                                      embd_pdrop=0.0, attn_pdrop=0.0, **ids))
    llama = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
                                         **ids))
    return {"gpt2": gpt2, "llama": llama}


def _pairs(n: int, seed: int = 0) -> pd.DataFrame:
    """n preference pairs of random tokens with uneven prompt and completion lengths (EOS-terminated)."""
    rng = np.random.default_rng(seed)

    def seq(lo, hi):
        return [int(t) for t in rng.integers(1, 40, size=int(rng.integers(lo, hi + 1)))]

    P = [[0] + seq(1, 5) for _ in range(n)]
    C = [seq(1, 9) + [0] for _ in range(n)]
    R = [seq(1, 9) + [0] for _ in range(n)]
    return pd.DataFrame({"prompt_ids": P, "chosen_ids": C, "rejected_ids": R,
                         "ref_chosen_logp": rng.normal(-20, 3, n), "ref_rejected_logp": rng.normal(-20, 3, n)})


class _Art:
    """What a TrainContext reads of the suite artifacts, for a model built in the test."""

    def __init__(self, model, pairs: pd.DataFrame, max_length: int = 16):
        self._model = model
        self.train_pairs = pairs
        self.pairs = None  # no held-out pairs: the implicit-reward lens is off
        self.tokenizer = SimpleNamespace(pad_token_id=0)
        self.suite = SimpleNamespace(policy=SimpleNamespace(max_length=max_length))

    def load_reference(self):
        return copy.deepcopy(self._model)


def train_once(name: str, model, pairs, tmp_path: Path, micro: int | None, lora: dict | None = None,
               checkpointing: bool = False, **values):
    """(trained model, train log) of algorithm ``name`` on ``pairs`` with the given micro-batch size."""
    import json

    from harness import registry
    from harness.execution.context import TrainContext
    from harness.training import device

    device.configure(device.Resources(micro_batch_size=micro, gradient_checkpointing=checkpointing))
    spec = registry.get(name)
    cfg = spec.make_config({"batch_size": 8, "epochs": 2.0, "warmup_steps": 0, "lr": 1e-3, **values}, "test")
    run_dir = tmp_path / f"{name}-{micro}-{lora is not None}-{checkpointing}"
    run_dir.mkdir()
    ctx = TrainContext(_Art(model, pairs), 0, run_dir, 0, None, lora=lora)
    try:
        trained = spec.cls(cfg).train(ctx)
    finally:
        ctx.close()
        device.configure(None)
    log = [json.loads(x) for x in (run_dir / "train_log.jsonl").read_text().splitlines()]
    return trained, log


def _max_weight_diff(a, b) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return max(float((sa[k].double() - sb[k].double()).abs().max()) for k in sa)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("algo", ["sft", "dpo"])
def test_accumulation_gives_the_update_of_the_whole_batch(tmp_path, arch, algo):
    """Two AdamW steps of 8 pairs: one micro-batch of 8 and four of 2 give the same weights within 1e-5
    (fp32), the same losses and pre-clip gradient norms; the steps themselves move weights far more.
    SFT's token-mean NLL is weighted by tokens per micro-batch (uneven lengths here), DPO's by pairs."""
    import torch

    torch.set_num_threads(1)
    base = _tiny_models()[arch]
    pairs = _pairs(8)
    whole, log1 = train_once(algo, base, pairs, tmp_path, None)
    accum, log4 = train_once(algo, base, pairs, tmp_path, 2)
    assert len(log1) == len(log4) == 2
    moved = _max_weight_diff(whole, base)
    assert moved > 1e-3  # the update is far larger than the tolerance
    assert _max_weight_diff(whole, accum) < 1e-5
    for a, b in zip(log1, log4):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)  # catches a mis-scaled sum
    if algo == "dpo":
        assert log1[0]["rewards/margin"] == pytest.approx(log4[0]["rewards/margin"], rel=1e-4, abs=1e-6)


def test_gradient_checkpointing_changes_nothing_but_memory(tmp_path):
    import torch

    torch.set_num_threads(1)
    base = _tiny_models()["llama"]
    pairs = _pairs(8)
    plain, _ = train_once("dpo", base, pairs, tmp_path, None)
    ckpt, _ = train_once("dpo", base, pairs, tmp_path, 4, checkpointing=True)
    assert _max_weight_diff(plain, ckpt) < 1e-5


def test_micro_batches_cut_in_order():
    from harness.training.device import micro_batches

    idx = np.arange(7)
    assert [list(c) for c in micro_batches(idx, 3)] == [[0, 1, 2], [3, 4, 5], [6]]
    assert len(micro_batches(idx, None)) == 1 and len(micro_batches(idx, 7)) == 1


def test_logprobs_are_fp32_under_bf16_autocast():
    """bf16 autocast runs the matmuls in bf16; the log-probabilities still come out of fp32 logits."""
    import torch

    from harness.training import device
    from harness.training.logprobs import collate, completion_logits, token_logps

    model = _tiny_models()["llama"].eval()
    b = collate([[0, 3, 4]], [[5, 6, 0]], 0)
    device.configure(device.Resources(precision="bf16"))
    try:
        with torch.no_grad():
            lp, _ = completion_logits(model, b)
            tok = token_logps(model, b)
    finally:
        device.configure(None)
    with torch.no_grad():
        ref = token_logps(model, b)
    assert lp.dtype == torch.float32 and tok.dtype == torch.float32
    assert torch.allclose(lp.exp().sum(-1), torch.ones(1, lp.shape[1]), atol=1e-5)  # normalised in fp32
    assert not torch.equal(tok, ref)  # bf16 compute differs from fp32 ...
    assert torch.allclose(tok, ref, atol=0.1)  # ... by rounding only
