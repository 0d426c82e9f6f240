#!/usr/bin/env python
"""Packed (padding-free) scoring against the padded batch: one training forward + backward, side by side.

Each workload scores real training batches of a suite both ways through
``harness.training.logprobs.score``, with the packing switch off (``collate``: rows padded to the
batch's longest) and on (``packed_sequence_logps``: sequences end to end in rows as wide as the longest,
position ids restarting at 0), alternating which goes first, and prints the median time per batch, the
ratio padded/packed, the tokens each forwards, and the largest log-probability difference between them:

- ``sentiment``: the embedded suite's π_ref (a 1.07M-parameter GPT-2, full fine-tuning), DPO's joint
  batches (32 pairs = 64 sequences [prompt + chosen; prompt + rejected], the suite's DPO batch size);
- ``instruct``: SmolLM2-135M-Instruct with the suite's LoRA (r 16, every linear layer), SFT's batches
  (32 prompt + chosen sequences in the chat template; the suite's DPO shares prompts instead).

Batches are the first ``--batches`` of the suite's training pairs in order, the same on both sides;
fp32. A benchmark, not a test.

    python benchmarks/bench_packing.py [--workloads sentiment,instruct] [--batches N] [--repeats R] [--threads T]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

WORKLOADS = ("sentiment", "instruct")


def parse_args(argv=None):
    default_results = Path(os.environ.get("PREFBENCH_RESULTS", REPO / "results"))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated: sentiment, instruct (default both)")
    p.add_argument("--batches", type=int, default=4, help="training batches per workload (default 4)")
    p.add_argument("--repeats", type=int, default=3, help="timings of each batch per side; the median is quoted (default 3)")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads(T) (default 1: steadier when shared)")
    p.add_argument("--results", type=Path, default=default_results,
                   help="results folder whose _cache holds the suite artifacts (PREFBENCH_CACHE overrides)")
    args = p.parse_args(argv)
    names = args.workloads.split(",")
    if not names or set(names) - set(WORKLOADS):
        p.error(f"--workloads: comma-separated names from {', '.join(WORKLOADS)}")
    if args.batches < 1 or args.repeats < 1 or args.threads < 1:
        p.error("--batches, --repeats and --threads must be >= 1")
    args.workloads = names
    return args


def workload(name: str, cache: Path):
    """(model in train mode, [(prompts, completions)] batches, max_length, pad id, description)."""
    from harness.execution.artifacts import SuiteArtifacts
    from harness.suites.spec import load_suite
    from harness.training.loop import disable_dropout

    suite = load_suite(name)
    art = SuiteArtifacts(suite, "smoke", cache)
    pairs = art.train_pairs
    P, C, R = pairs.prompt_ids.tolist(), pairs.chosen_ids.tolist(), pairs.rejected_ids.tolist()
    model = art.load_reference()
    disable_dropout(model)
    if name == "sentiment":  # DPO's joint batches: chosen and rejected rows of 32 pairs
        batches = [(P[i:i + 32] * 2, C[i:i + 32] + R[i:i + 32]) for i in range(0, len(P), 32)]
        what = f"{type(model).__name__} {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M, full fine-tuning, " \
               f"DPO joint batches of 32 pairs (64 sequences)"
    else:  # SFT's batches: 32 prompt + chosen sequences, LoRA as the suite sets it
        from harness.training.lora import apply_lora

        lora = suite.lora
        model = apply_lora(model, {"r": lora.r, "alpha": lora.alpha, "dropout": lora.dropout,
                                   "target_modules": lora.target_modules})
        batches = [(P[i:i + 32], C[i:i + 32]) for i in range(0, len(P), 32)]
        what = f"SmolLM2-135M-Instruct + LoRA r {lora.r} ({lora.target_modules}), SFT batches of 32 sequences"
    return model.train(), batches, suite.policy.max_length, art.tokenizer.pad_token_id, what


def measure(model, batch, max_length: int, pad: int, repeats: int) -> dict:
    import torch

    from harness.training import logprobs

    saved = logprobs.PACKING
    times = {"off": [], "on": []}
    values = {}
    try:
        for r in range(repeats):
            for mode in (("off", "on") if r % 2 == 0 else ("on", "off")):
                logprobs.PACKING = mode
                model.zero_grad(set_to_none=True)
                t0 = time.perf_counter()
                lp, n = logprobs.score(model, *batch, pad, max_length)
                (-(lp.sum() / n.sum())).backward()
                times[mode].append(time.perf_counter() - t0)
                values[mode] = lp.detach()
    finally:
        logprobs.PACKING = saved
    padded, packed = logprobs.packed_tokens(*batch, max_length)
    return {"padded_s": statistics.median(times["off"]), "packed_s": statistics.median(times["on"]),
            "padded_tokens": padded, "packed_tokens": packed,
            "max_abs_diff": float((values["on"] - values["off"]).abs().max()),
            "real_tokens": sum(len(p) + len(logprobs.cut(p, c, max_length)) for p, c in zip(*batch))}


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("PREFBENCH_QUIET", "1")
    import torch

    from harness.core import env

    torch.set_num_threads(args.threads)
    env.quiet_libraries()
    cache = Path(os.environ.get("PREFBENCH_CACHE", args.results / "_cache"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), fp32; load average "
          f"{'/'.join(f'{x:.2f}' for x in os.getloadavg())}")
    for name in args.workloads:
        model, batches, max_length, pad, what = workload(name, cache)
        rows = [measure(model, b, max_length, pad, args.repeats) for b in batches[: args.batches]]
        print(f"\n== {name}: {what}; attention {model.config._attn_implementation}; max_length {max_length}")
        print("batch  real tok  padded tok  packed tok  padded s  packed s  padded/packed  max |Δ logp|")
        for k, r in enumerate(rows):
            print(f"{k:>5}  {r['real_tokens']:>8}  {r['padded_tokens']:>10}  {r['packed_tokens']:>10}  "
                  f"{r['padded_s']:>8.3f}  {r['packed_s']:>8.3f}  {r['padded_s'] / r['packed_s']:>12.2f}x  "
                  f"{r['max_abs_diff']:.1e}")
        pad_s, pack_s = sum(r["padded_s"] for r in rows), sum(r["packed_s"] for r in rows)
        pad_t, pack_t = sum(r["padded_tokens"] for r in rows), sum(r["packed_tokens"] for r in rows)
        print(f"ratio padded/packed ({name}): {pad_s / pack_s:.2f}x time over {len(rows)} batches; packed rows forward "
              f"{1 - pack_t / pad_t:.0%} fewer tokens; load average now {'/'.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
