"""Sampling throughput: HF ``generate`` against vLLM, through prefbench's own samplers.

Both sides run in one process, on the same model, prompts and settings (fp32, temperature 1, no top-k or
top-p, EOS stops, ``max_new_tokens`` cap), interleaved, at two batch sizes (HF: sequences per
``generate`` call; vLLM: ``max_num_seqs``, the engine's running-batch limit). Each measurement samples
``rounds × batch`` sequences. Tokens are the completion tokens actually produced (EOS included), so
early stops are counted on both sides the same way.

- **excluded**: tokens/s of a timed sampling call on a started, warmed-up engine (HF: after one warm-up
  batch);
- **included**: from cold, the warm-up call (one batch) and the timed call as one job: tokens of both /
  (``import vllm`` + engine start + warm-up call + timed call) for vLLM, and tokens of both / (warm-up
  call + timed call) for HF, which has no engine to start.

Model: the ``sentiment`` suite's π_SFT when the artifact cache already holds it (``--results``/
``PREFBENCH_CACHE``, as for ``prefbench run``); otherwise a freshly built GPT-2 of the same architecture
(random init, BPE trained on synthetic reviews). Prompts: the suite's evaluation prompts, or review
prefixes. Run:

    python benchmarks/bench_sampling.py                 # batches 16 and 256, 48 new tokens, 2 rounds
    python benchmarks/bench_sampling.py --batch-sizes 16,256 --max-new-tokens 48 --repeats 2 --threads 2
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def parse_args(argv=None):
    default_results = Path(os.environ.get("PREFBENCH_RESULTS", REPO / "results"))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-sizes", default="16,256", help="comma-separated batch sizes (default 16,256)")
    p.add_argument("--rounds", type=int, default=2, help="sequences per measurement = rounds x batch (default 2)")
    p.add_argument("--max-new-tokens", type=int, default=48, help="completion cap (default 48, the suite's)")
    p.add_argument("--repeats", type=int, default=2, help="interleaved measurements per side; median quoted")
    p.add_argument("--threads", type=int, default=None, help="torch threads for HF (default: torch's)")
    p.add_argument("--results", type=Path, default=default_results, help="results folder whose _cache may hold π_SFT")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vllm-multiproc", action="store_true",
                   help="vLLM's multiprocess engine (PREFBENCH_VLLM_MULTIPROC=1) instead of the in-process one")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    return p.parse_args(argv)


def load_model(results: Path):
    """(model, tokenizer, prompt ids, where from)."""
    from harness.execution.artifacts import SuiteArtifacts
    from harness.core.hashing import content_hash
    from harness.suites.spec import load_suite

    suite = load_suite("sentiment")
    cache_root = Path(os.environ.get("PREFBENCH_CACHE", results / "_cache"))
    art = SuiteArtifacts(suite, "smoke", cache_root)
    from harness.execution.artifacts import ARTIFACT_FORMAT

    folder = art.cache.root / f"reference-{content_hash({'format': ARTIFACT_FORMAT, 'kind': 'reference', **art.reference_key})}"
    if folder.is_dir():
        model = art.load_reference()
        return model, art.tokenizer, art.eval_prompt_ids, f"sentiment π_SFT from {folder}"
    from harness.suites.reviews import generate_reviews, review_prefix
    from harness.training.models import build_model, train_bpe_tokenizer

    texts = generate_reviews(3000, seed=0)
    tok = train_bpe_tokenizer(texts, suite.tokenizer.vocab_size)
    model = build_model(suite.policy, tok, seed=0).eval()
    prompts = [[tok.bos_token_id] + tok(review_prefix(t, 2 + i % 4), add_special_tokens=False)["input_ids"]
               for i, t in enumerate(texts[:1024])]
    return model, tok, prompts, "fresh GPT-2 with the sentiment suite's architecture (random init; no cached π_SFT)"


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("PREFBENCH_QUIET", "1")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from harness.evaluation.sampling.base import GenerationSettings, PolicyHandle
    from harness.evaluation.sampling.hf import HFSampler
    from harness.evaluation.sampling.vllm import VLLMSampler, available, configure_environment

    if not available():
        print("vLLM is not installed: pip install -r requirements-vllm.txt", file=sys.stderr)
        return 2
    model, tok, prompt_ids, origin = load_model(args.results)
    n_params = sum(p.numel() for p in model.parameters())
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    print(f"model: {origin}; {n_params / 1e6:.2f}M parameters, fp32")
    print(f"settings: temperature 1.0, no top-k/top-p, max_new_tokens {args.max_new_tokens}, rounds {args.rounds}, "
          f"repeats {args.repeats}, torch threads {torch.get_num_threads()}, load average "
          f"{'/'.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.vllm_multiproc:
        os.environ["PREFBENCH_VLLM_MULTIPROC"] = "1"
    configure_environment()
    print("vLLM engine: " + ("in-process" if os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == "0" else "multiprocess")
          + f", VLLM_CPU_OMP_THREADS_BIND={os.environ.get('VLLM_CPU_OMP_THREADS_BIND', 'auto')}, enforce_eager")
    t0 = time.perf_counter()
    import vllm  # noqa: F401  -- timed once: part of the start-up cost

    import_s = time.perf_counter() - t0
    policy = PolicyHandle(tok, model)
    rows = []
    for B in sizes:
        need = B * args.rounds
        prompts = [prompt_ids[i % len(prompt_ids)] for i in range(need)]
        settings = GenerationSettings(args.max_new_tokens, 1.0, B)
        warm = GenerationSettings(args.max_new_tokens, 1.0, B)
        hf, vs = HFSampler(), VLLMSampler(max_num_seqs=B)
        res = {"hf": [], "vllm": []}
        t0 = time.perf_counter()
        warm_tokens = {"hf": int(hf.sample(policy, prompts[:B], 1, warm, seed=args.seed + 99).lengths.sum())}
        hf_warm_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        # engine start + first (warm-up) call
        warm_tokens["vllm"] = int(vs.sample(policy, prompts[:B], 1, warm, seed=args.seed + 99).lengths.sum())
        v_first_s = time.perf_counter() - t0
        v_start_s = vs.last_start_s
        for r in range(args.repeats):
            order = [("hf", hf), ("vllm", vs)] if r % 2 == 0 else [("vllm", vs), ("hf", hf)]
            for name, s in order:
                t0 = time.perf_counter()
                out = s.sample(policy, prompts, 1, settings, seed=args.seed + r)
                dt = time.perf_counter() - t0
                res[name].append((int(out.lengths.sum()), dt))
        vs.close()
        med = {k: statistics.median(t / d for t, d in v) for k, v in res.items()}
        tok_med = {k: statistics.median(t for t, _ in v) for k, v in res.items()}
        dt_med = {k: statistics.median(d for _, d in v) for k, v in res.items()}
        # from cold: the warm-up call and the timed call as one job; vLLM adds its import and engine start
        incl = {"hf": (warm_tokens["hf"] + tok_med["hf"]) / (hf_warm_s + dt_med["hf"]),
                "vllm": (warm_tokens["vllm"] + tok_med["vllm"]) / (import_s + v_first_s + dt_med["vllm"])}
        row = {"batch": B, "sequences": need, "tokens_hf": tok_med["hf"], "tokens_vllm": tok_med["vllm"],
               "hf_tok_s": med["hf"], "vllm_tok_s": med["vllm"], "ratio_excluded": med["vllm"] / med["hf"],
               "hf_tok_s_included": incl["hf"], "vllm_tok_s_included": incl["vllm"],
               "ratio_included": incl["vllm"] / incl["hf"], "vllm_import_s": import_s,
               "vllm_engine_start_s": v_start_s, "vllm_first_call_s": v_first_s, "hf_warmup_s": hf_warm_s,
               # tokens HF generates in the time vLLM needs to start (import + engine + first call)
               "hf_tokens_per_vllm_startup": med["hf"] * (import_s + v_first_s)}
        rows.append(row)
        import_s_note = " (import counted in every 'included' figure)"
        print(f"\nbatch {B}: {need} sequences, ~{tok_med['hf']:.0f} (HF) / ~{tok_med['vllm']:.0f} (vLLM) tokens")
        print(f"  HF generate   {med['hf']:9.0f} tok/s excluded   {incl['hf']:9.0f} tok/s included")
        print(f"  vLLM          {med['vllm']:9.0f} tok/s excluded   {incl['vllm']:9.0f} tok/s included")
        print(f"  ratio vLLM/HF {row['ratio_excluded']:9.2f}x excluded  {row['ratio_included']:9.2f}x included")
        print(f"  vLLM start-up: import {import_s:.1f} s{import_s_note}, LLM() {v_start_s:.1f} s, "
              f"first call incl. start {v_first_s:.1f} s = HF's time for ~{row['hf_tokens_per_vllm_startup']:.0f} tokens")
    if args.json:
        args.json.write_text(json.dumps({"origin": origin, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
