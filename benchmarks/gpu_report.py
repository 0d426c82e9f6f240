"""The numbers benchmarks/gpu_check.sh prints, from the run folders and artifact caches it leaves.

Per suite and trained algorithm of the GPU run:

- **training tokens/s**: tokens through the trained model (prompt + completion of every training sequence:
  DPO's chosen and rejected, SFT's chosen, times the epochs) / the run's ``train_seconds``;
- **sampling tokens/s**: completion tokens the sampler produced for the suite's pairs and π_SFT baseline
  artifacts / their build time (``artifact.json``; engine start and the judge included, so a lower bound);
- **MFU**: model FLOPs / train_seconds / the GPU's dense bf16 peak. FLOPs per token: 6N for full fine-tuning
  (forward 2N, backward 4N), 4N with LoRA (frozen weights get no weight gradient); DPO's reference
  log-probabilities are precomputed, so they are not counted. N: the policy's parameters;
- **peak GPU memory**: the largest ``memory.used`` nvidia-smi reported while the runs went (every process);
- **metrics**: gold reward, win rate and KL of each row, GPU bf16 beside CPU fp32, with the difference.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# dense bf16 tensor-core peaks (TFLOP/s, no sparsity), by a substring of nvidia-smi's name
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "H800": 989.0, "GH200": 989.0, "B200": 2250.0, "A100": 312.0,
               "A800": 312.0, "L40S": 362.0, "L40": 181.0, "L4": 121.0, "A10G": 70.0, "A10": 125.0,
               "RTX 4090": 165.0, "RTX 3090": 71.0, "V100": 125.0, "T4": 65.0}


def peak_tflops(name: str, override: float | None) -> float | None:
    if override:
        return override
    for key in sorted(PEAK_TFLOPS, key=len, reverse=True):
        if key in name:
            return PEAK_TFLOPS[key]
    return None


def runs(results: Path) -> list[dict]:
    out = []
    for m in sorted(Path(results).glob("*/*/metrics.json")):
        rec = json.loads(m.read_text())
        cfg_path = m.parent / "config.json"
        cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
        out.append({"suite": m.parent.parent.name, "algorithm": rec.get("algorithm"), "dir": m.parent,
                    "metrics": rec.get("metrics", {}), "timing": rec.get("timing", {}),
                    "hp": cfg.get("hyperparameters", {}), "status": rec.get("status")})
    return out


def n_parameters(cache: Path, suite: str) -> int | None:
    from safetensors import safe_open

    refs = sorted((cache / suite).glob("reference-*"))
    if not refs:
        return None
    n = 0
    for f in refs[0].glob("*.safetensors"):
        with safe_open(str(f), "pt") as st:
            for k in st.keys():
                n += math.prod(st.get_slice(k).get_shape())
    return n


def training_tokens(cache: Path, suite: str, algorithm: str, epochs: float) -> int | None:
    pairs = sorted((cache / suite).glob("pairs-*/pairs.parquet"))
    if not pairs:
        return None
    df = pd.read_parquet(pairs[0])
    df = df[df.split == "train"]
    p = df.prompt_ids.map(len)
    c, r = df.chosen_ids.map(len), df.rejected_ids.map(len)
    per_epoch = int((p + c).sum()) if algorithm == "sft" else int((2 * p + c + r).sum())
    return int(per_epoch * epochs)


def sampling_rate(cache: Path, suite: str) -> tuple[int, float] | None:
    tokens, seconds = 0, 0.0
    for kind, table in (("pairs", "samples.parquet"), ("baseline", "baseline.parquet")):
        for d in (cache / suite).glob(f"{kind}-*"):
            meta = json.loads((d / "artifact.json").read_text())
            df = pd.read_parquet(d / table)
            col = df.completion_ids.map(len) if "completion_ids" in df else df["length"]
            tokens += int(col.sum())
            seconds += float(meta.get("build_seconds") or 0)
    return (tokens, seconds) if seconds else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpu-results", type=Path, required=True, help="results folder of the GPU bf16 runs")
    ap.add_argument("--gpu-cache", type=Path, required=True, help="artifact cache of the GPU runs")
    ap.add_argument("--cpu-results", type=Path, default=None, help="results folder of the CPU fp32 runs")
    ap.add_argument("--gpu-memory-log", type=Path, default=None, help="nvidia-smi memory.used samples (MiB)")
    ap.add_argument("--gpu-name", default="", help="nvidia-smi's GPU name (for the bf16 peak)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of the GPU, TFLOP/s")
    args = ap.parse_args(argv)
    import os

    peak = peak_tflops(args.gpu_name, args.peak_tflops or float(os.environ.get("GPU_PEAK_TFLOPS") or 0) or None)
    gpu = runs(args.gpu_results)
    cpu = {(r["suite"], r["algorithm"]): r for r in runs(args.cpu_results)} if args.cpu_results else {}
    print(f"# GPU check: {args.gpu_name or 'GPU'} (bf16 peak {peak or '?'} TFLOP/s)\n")
    if args.gpu_memory_log and args.gpu_memory_log.is_file():
        vals = [float(x) for x in args.gpu_memory_log.read_text().split() if x.strip().replace(".", "").isdigit()]
        if vals:
            print(f"peak GPU memory (nvidia-smi, all processes): {max(vals) / 1024:.2f} GiB\n")
    print("| suite | algorithm | train s | training tokens/s | MFU | eval s |")
    print("|---|---|---|---|---|---|")
    for r in gpu:
        if r["algorithm"] == "reference":
            continue
        hp, t = r["hp"], r["timing"]
        tokens = training_tokens(args.gpu_cache, r["suite"], r["algorithm"], float(hp.get("epochs", 1.0)))
        secs = t.get("train_seconds")
        rate = tokens / secs if tokens and secs else None
        n = n_parameters(args.gpu_cache, r["suite"])
        mfu = None
        if rate and n and peak:
            per_token = 4 if (hp.get("lora_r") or 0) > 0 else 6
            mfu = per_token * n * rate / (peak * 1e12)
        print(f"| {r['suite']} | {r['algorithm']} | {secs if secs is not None else '-'} | "
              f"{f'{rate:,.0f}' if rate else '-'} | {f'{mfu:.2%}' if mfu is not None else '-'} | "
              f"{t.get('eval_seconds', '-')} |")
    print("\n| suite | sampled tokens (pairs + baseline) | seconds (engine start incl.) | sampling tokens/s |")
    print("|---|---|---|---|")
    for suite in sorted({r["suite"] for r in gpu}):
        got = sampling_rate(args.gpu_cache, suite)
        if got:
            print(f"| {suite} | {got[0]:,} | {got[1]:.1f} | {got[0] / got[1]:,.0f} |")
    print("\n| suite | algorithm | gold reward GPU bf16 | CPU fp32 | Δ | win rate GPU | CPU | KL GPU | CPU |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in gpu:
        m = r["metrics"]
        c = cpu.get((r["suite"], r["algorithm"]), {}).get("metrics", {})
        fmt = lambda v: f"{v:.3f}" if isinstance(v, (int, float)) else "-"
        delta = (m.get("gold_reward") - c["gold_reward"]) if "gold_reward" in c and "gold_reward" in m else None
        print(f"| {r['suite']} | {r['algorithm']} | {fmt(m.get('gold_reward'))} | {fmt(c.get('gold_reward'))} | "
              f"{fmt(delta)} | {fmt(m.get('win_rate'))} | {fmt(c.get('win_rate'))} | {fmt(m.get('kl'))} | "
              f"{fmt(c.get('kl'))} |")
    if not gpu:
        print("no GPU runs found", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
