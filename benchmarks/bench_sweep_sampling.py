"""Evaluating the policies of a sweep: one vLLM engine for all of them against HF ``generate``.

This is what a sweep pays to sample its evaluations, measured side by side in one run on the same
policies, prompts and settings:

- **vLLM** (once per ``--lora-modes``): the path ``prefbench run --sampler vllm`` takes. A sampling server is started (a process of
  its own, which imports vLLM and starts one engine on π_SFT), and every policy is sampled through it
  from a client (:class:`harness.evaluation.sampling.server.RemoteSampler`), as each run's worker
  process does: π_SFT first, then each LoRA policy, as an adapter of the running engine (``adapter``,
  vLLM's multi-LoRA) or merged into π_SFT's weights and loaded into it (``merge``). The clock
  runs from the server's start to the last policy's samples: process start, ``import vllm`` and the
  engine start are all included.
- **HF**: :class:`harness.evaluation.sampling.hf.HFSampler` in this process, on each policy as a run
  evaluates it: π_SFT, and each LoRA policy merged into its base (merging is not timed: a run has the
  merged model in memory when it evaluates).

Workload: the ``instruct`` suite (SmolLM2-135M-Instruct in its chat template, fp32), its evaluation
prompts and generation settings (``--preset``: ``full`` has 256 prompts, 24 new tokens, batches of
32), π_SFT and ``--policies - 1`` LoRA policies with the suite's LoRA settings (rank 16, every linear
layer). The adapters are random (seeded, scaled so each one visibly changes the samples), standing in
for trained ones: sampling costs the same for any adapter values. The two sides sample different
tokens (different engines), so both token totals and tokens/s are printed.

    python benchmarks/bench_sweep_sampling.py                     # 6 policies, full preset
    python benchmarks/bench_sweep_sampling.py --policies 6 --preset smoke --threads 2
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def parse_args(argv=None):
    default_results = Path(os.environ.get("PREFBENCH_RESULTS", REPO / "results"))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--policies", type=int, default=6, help="policies to evaluate: π_SFT + LoRA ones (default 6)")
    p.add_argument("--preset", default="full", help="instruct preset whose evaluation prompts are used (default full)")
    p.add_argument("--threads", type=int, default=None, help="torch threads on both sides (default: torch's)")
    p.add_argument("--results", type=Path, default=default_results, help="results folder whose _cache holds π_SFT")
    p.add_argument("--lora-modes", default="merge,adapter",
                   help="how vLLM samples LoRA policies, comma-separated: merge (into the engine's weights), "
                        "adapter (multi-LoRA); default both")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def make_adapters(base_dir: Path, lora, k: int, out: Path) -> list[Path]:
    """``k`` seeded random LoRA adapters on the model in ``base_dir`` (the suite's LoRA settings)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from harness.training.models import load_policy

    folders = []
    for i in range(k):
        model, _ = load_policy(base_dir)
        torch.manual_seed(1000 + i)
        peft = get_peft_model(model, LoraConfig(r=lora.r, lora_alpha=lora.alpha, target_modules=lora.target_modules,
                                                init_lora_weights=False))
        with torch.no_grad():  # PEFT's random B is tiny; scaled up so the policy differs from π_SFT
            for name, w in peft.named_parameters():
                if "lora_B" in name:
                    w.normal_(0.0, 0.02)
        folders.append(out / f"adapter-{i}")
        peft.save_pretrained(folders[-1])
    return folders


def roofline(base_dir, prompts, samples_per_prompt: int, vllm_runs: dict, hf_rows: list, hf_s: float,
             hf_tok: int) -> None:
    """How far each side is from this CPU's fp32 matmul peak, hence the best ratio any sampler could reach
    here: useful model FLOPs (2N per prompt token and per kept sampled token) per second."""
    import torch
    from bench_dpo_vs_trl import compute_params, matmul_peak_gflops

    from harness.training.models import load_policy

    peak, _ = matmul_peak_gflops()
    per_token = 2 * compute_params(load_policy(base_dir)[0])
    prompt_tokens = sum(len(p) for p in prompts) * samples_per_prompt  # per policy

    def gflops(policies: int, sampled: int, seconds: float) -> float:
        return per_token * (prompt_tokens * policies + sampled) / seconds / 1e9

    for m, (total, rows) in vllm_runs.items():
        whole = gflops(len(rows), sum(r[1] for r in rows), total)
        line = f"vLLM, LoRA as {m}: {whole:.1f} GFLOP/s start included ({whole / peak:.0%} of the fp32 matmul peak)"
        if len(rows) > 1:
            later = gflops(len(rows) - 1, sum(r[1] for r in rows[1:]), sum(r[0] for r in rows[1:]))
            line += f"; the policies after the first {later:.1f} GFLOP/s ({later / peak:.0%})"
        print(line)
    hf_rate = gflops(len(hf_rows), hf_tok, hf_s)
    print(f"HF generate: {hf_rate:.1f} GFLOP/s ({hf_rate / peak:.0%} of the fp32 matmul peak)")
    print(f"roofline: fp32 matmul peak {peak:.1f} GFLOP/s ({torch.get_num_threads()} threads, this process); model FLOPs "
          f"2N = {per_token / 1e6:.0f} MFLOP per prompt or sampled token (N: every multiplying weight, the output layer "
          f"included; attention scores left out); a sampler at that peak with no start-up at all would be at most "
          f"{peak / hf_rate:.2f}x HF on this workload")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.policies < 1:
        print("--policies: at least 1", file=sys.stderr)
        return 2
    if not args.lora_modes or set(args.lora_modes.split(",")) - {"merge", "adapter"}:
        print("--lora-modes: merge, adapter or both, comma-separated", file=sys.stderr)
        return 2
    os.environ.setdefault("PREFBENCH_QUIET", "1")
    if args.threads:
        os.environ["PREFBENCH_THREADS"] = str(args.threads)  # the sampling server applies it too
    import torch

    from harness.core import env

    env.apply_threads()
    env.quiet_libraries()
    from harness.evaluation.sampling.base import GenerationSettings, PolicyHandle
    from harness.evaluation.sampling.hf import HFSampler
    from harness.evaluation.sampling.server import SamplingServer, connect
    from harness.evaluation.sampling.vllm import available
    from harness.execution.artifacts import SuiteArtifacts
    from harness.suites.spec import load_suite

    if not available():
        print("vLLM is not installed: pip install -r requirements-vllm.txt", file=sys.stderr)
        return 2
    suite = load_suite("instruct")
    art = SuiteArtifacts(suite, args.preset, Path(os.environ.get("PREFBENCH_CACHE", args.results / "_cache")))
    ev = suite.evaluation
    base_dir, tok, prompts = art.reference_dir, art.tokenizer, art.eval_prompt_ids
    settings = GenerationSettings(ev.max_new_tokens, ev.temperature, ev.batch_size)
    tmp = Path(tempfile.mkdtemp(prefix="prefbench-bench-"))
    try:
        adapters = make_adapters(base_dir, suite.lora, args.policies - 1, tmp)
        print(f"workload: instruct/{args.preset}: {len(prompts)} prompts x {ev.samples_per_prompt} sample, "
              f"{ev.max_new_tokens} new tokens, temperature {ev.temperature}, fp32; {args.policies} policies "
              f"(π_SFT + {len(adapters)} LoRA r={suite.lora.r} {suite.lora.target_modules}); HF batch {ev.batch_size}; "
              f"torch threads {torch.get_num_threads()}; load average {'/'.join(f'{x:.2f}' for x in os.getloadavg())}")
        # vLLM: the sweep's path, server start to last sample; LoRA policies as adapters and merged
        vllm_runs = {}
        for mode in args.lora_modes.split(","):
            t0 = time.perf_counter()
            server = SamplingServer("vllm", lora=mode)
            rows = []
            try:
                with connect(server.endpoint()) as client:
                    for i, adapter in enumerate([None, *adapters]):
                        t = time.perf_counter()
                        handle = PolicyHandle(tok, None, base_dir, adapter_path=adapter)
                        comp = client.sample(handle, prompts, ev.samples_per_prompt, settings, seed=args.seed + i)
                        rows.append((time.perf_counter() - t, int(comp.lengths.sum()), comp.info))
                vllm_runs[mode] = (time.perf_counter() - t0, rows)
            finally:
                server.close()
        # HF: each policy as a run evaluates it (merged LoRA; merging not timed)
        from peft import PeftModel

        from harness.training import device as devices
        from harness.training.models import load_policy

        devices.configure(devices.resolve("auto", "fp32"))  # a CUDA GPU when there is one, fp32 as vLLM
        hf, hf_rows = HFSampler(), []
        for i, adapter in enumerate([None, *adapters]):
            model, _ = load_policy(base_dir)
            if adapter is not None:
                model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
            t = time.perf_counter()
            handle = PolicyHandle(tok, devices.place(model).eval())
            comp = hf.sample(handle, prompts, ev.samples_per_prompt, settings, seed=args.seed + i)
            hf_rows.append((time.perf_counter() - t, int(comp.lengths.sum())))
        hf_s = sum(r[0] for r in hf_rows)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    modes = list(vllm_runs)
    print("\n| policy | HF generate (s) | HF tokens | " + " | ".join(f"vLLM {m} (s) | tokens" for m in modes) + " |")
    print("|---|---:|---:|" + "---:|---:|" * len(modes))
    for i, h in enumerate(hf_rows):
        name = "π_SFT" if i == 0 else f"LoRA {i}"
        print(f"| {name} | {h[0]:.1f} | {h[1]} | " + " | ".join(f"{vllm_runs[m][1][i][0]:.1f} | {vllm_runs[m][1][i][1]}"
                                                         for m in modes) + " |")
    hf_tok = sum(r[1] for r in hf_rows)
    print(f"\nHF generate ({devices.current().device}): {hf_s:.1f} s, {hf_tok / hf_s:.0f} tokens/s")
    for m in modes:
        total, rows = vllm_runs[m]
        info, v_tok = rows[-1][2], sum(r[1] for r in rows)
        print(f"vLLM, LoRA as {m}: {total:.1f} s start included, {v_tok / total:.0f} tokens/s; engine starts "
              f"{info.get('engine_starts')}, weight reloads {info.get('weight_reloads')}; first policy (server start, "
              f"import, engine start, sampling) {rows[0][0]:.1f} s, the other {len(rows) - 1} {sum(r[0] for r in rows[1:]):.1f} s")
        print(f"ratio vLLM/HF, LoRA as {m}, {args.policies} policies, engine start included: {hf_s / total:.2f}x wall, "
              f"{(v_tok / total) / (hf_tok / hf_s):.2f}x tokens/s")
    if devices.current().device == "cpu":
        roofline(base_dir, prompts, ev.samples_per_prompt, vllm_runs, hf_rows, hf_s, hf_tok)
    return 0


if __name__ == "__main__":
    sys.exit(main())
