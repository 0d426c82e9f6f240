#!/usr/bin/env python
"""Native DPO vs TRL's DPOTrainer: training throughput side by side, plus a loss-agreement check.

Default workload: SmolLM2-135M-Instruct with LoRA (r 16, all linear layers) on a long-prompt fixture
(prompts ~200 tokens, responses ~60), the code of ``bench_lora_dpo_vs_trl.py``, which this script runs with
every argument it was given (see its ``--help``): native DPO's steps/s against TRL's (its ``ratio
native/TRL`` line), the loss agreement, and MFU against this CPU's fp32 and bf16 matmul peaks.

``--toy``: the workload below instead, on the embedded ``sentiment`` suite's tiny GPT-2 (full fine-tuning).

Toy: both sides train a fresh copy of the ``sentiment`` suite's π_ref (smoke preset) on the same token
ids, in the same batches, for the same number of optimizer steps, in one process:

- native: prefbench's real code path, ``algorithms.dpo.DPO(config).train(ctx)`` (chosen and rejected
  scored in one batch by ``harness.training.logprobs.score``, packed without padding where that saves
  >= 10% of the tokens, ``--native-packing off``: always padded; ``preference_loss``, AdamW, gradient
  clipping, the harness's ``train_loop``), with the suite's cached reference log-probabilities;
- TRL: ``trl.DPOTrainer`` fed the same pre-tokenized ids (a subclass skips TRL's re-tokenization,
  so no EOS is appended), ``precompute_ref_log_probs=True`` (TRL's own precomputation, run and
  timed once, reused by every later trainer, *not* part of steps/s), fp32, no gradient
  checkpointing, sequential sampling.

TRL's dataset is laid out in the order of the native run's seeded batches, so batch k is the same
set of pairs on both sides (and so the same padded length). Each side's clock is read at the end of
every optimizer step (``ctx.log`` natively, a ``TrainerCallback.on_step_end`` in TRL); steps/s is
taken over steps warmup+1 .. warmup+steps, so model loading, optimizer creation and TRL's set-up
are excluded on both sides. The measurement is repeated (alternating which side goes first) and the
median ratio is reported, with the same ratio in steps per process-CPU-second (steadier when other
jobs share the machine). Losses are compared twice on identical weights and the first batch: at π_ref
and at the weights of the first native timing run. A benchmark, not a test: only a loss
disagreement makes it exit non-zero (status 3).

    python benchmarks/bench_dpo_vs_trl.py [--threads T] [--also-joint] ...         # SmolLM2 + LoRA, long prompts
    python benchmarks/bench_dpo_vs_trl.py --toy [--steps N] [--batch-size B] [--threads T] [--results DIR]
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# progress bars would be timed too: silence prefbench's (tqdm) and TRL's precompute bar
os.environ.setdefault("PREFBENCH_QUIET", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)

EXIT_LOSS_MISMATCH = 3


def parse_args(argv=None):
    default_results = Path(os.environ.get("PREFBENCH_RESULTS", REPO / "results"))
    p = argparse.ArgumentParser(prog="bench_dpo_vs_trl.py --toy", description=__doc__.split("\n\n")[0] + " (toy)",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=30, help="timed optimizer steps per side per repeat (default 30)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before the timed ones (default 2)")
    p.add_argument("--repeats", type=int, default=3, help="measurements per side; the median ratio is quoted (default 3)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="preference pairs per step (default: prefbench's DPO default, 32); each step sees 2x sequences")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads(T) before anything runs (default: torch's default)")
    p.add_argument("--results", type=Path, default=default_results,
                   help=f"results folder whose _cache holds the suite artifacts, as for `prefbench run` "
                        f"(default {default_results}; PREFBENCH_CACHE overrides the cache folder)")
    p.add_argument("--suite", default="sentiment", help="suite (default sentiment)")
    p.add_argument("--preset", default="smoke", help="preset (default smoke)")
    p.add_argument("--seed", type=int, default=0, help="run seed: native data order and init (default 0)")
    p.add_argument("--native-dropout", choices=["as-trained", "off"], default="as-trained",
                   help="as-trained: the policy exactly as prefbench's TrainContext.init_policy hands it out (the "
                        "dropout rate in effect is printed); off: also set every Dropout to p=0 on the native side, "
                        "as TRL's disable_dropout=True does (default as-trained)")
    p.add_argument("--native-packing", choices=["auto", "off"], default="auto",
                   help="auto: prefbench's rule packs a batch's sequences without padding where that saves >= 10%% of "
                        "its tokens (harness.training.logprobs.use_packing); off: always the padded batch (default auto)")
    p.add_argument("--trl-optim", default=None,
                   help="TRL `optim` (default: TRL's default, adamw_torch_fused); e.g. adamw_torch to match the "
                        "native torch.optim.AdamW defaults")
    p.add_argument("--tolerance", type=float, default=1e-5, help="max |loss_TRL - loss_native| (default 1e-5)")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")
    args = p.parse_args(argv)
    for name in ("steps", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    if args.warmup < 1:
        p.error("--warmup must be >= 1 (the clock starts at the end of a step)")
    if args.batch_size is not None and args.batch_size < 1:
        p.error("--batch-size must be >= 1")
    return args


# --------------------------------------------------------------------------- helpers
def loadavg() -> str:
    try:
        return "/".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def disable_dropout(model) -> None:
    import torch

    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0


def dropout_rate(model) -> float:
    import torch

    rates = {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)}
    return max(rates) if rates else 0.0


def clock() -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds): the second barely moves when other jobs take the CPU."""
    return time.perf_counter(), time.process_time()


def matmul_peak_gflops(n: int = 1536, reps: int = 6, dtype=None) -> tuple[float, float]:
    """This CPU's matmul rate (fp32 unless ``dtype``) with the current torch threads: the best of ``reps``
    n x n products, (per wall second, per second of process CPU time)."""
    import torch

    dtype = dtype or torch.float32
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    best, best_cpu = float("inf"), float("inf")
    for _ in range(reps):
        t0, c0 = clock()
        torch.mm(a, b)
        t1, c1 = clock()
        best, best_cpu = min(best, t1 - t0), min(best_cpu, max(c1 - c0, 1e-9))
    return 2 * n ** 3 / best / 1e9, 2 * n ** 3 / best_cpu / 1e9


def compute_params(model) -> int:
    """The parameters of ``model`` that multiply in a forward pass: all of them but the input embedding, whose
    rows are looked up; an output layer tied to that embedding is a matrix product and counts (once)."""
    n = sum(p.numel() for p in model.parameters())  # tied weights are one parameter
    return n if getattr(model.config, "tie_word_embeddings", False) else n - model.get_input_embeddings().weight.numel()


def rate(stamps: list[tuple[float, float]], warmup: int, steps: int) -> tuple[float, float]:
    """(steps per wall second, steps per process-CPU second) over steps warmup+1..warmup+steps;
    ``stamps[k-1]`` is the clock at the end of step k."""
    a, b = stamps[warmup - 1], stamps[warmup + steps - 1]
    return steps / (b[0] - a[0]), steps / (b[1] - a[1])


# --------------------------------------------------------------------------- native side
def make_native_context(art, seed: int, dropout: bool, run_dir: Path, init_state=None):
    """The harness's own TrainContext (real ``log`` to train_log.jsonl), plus a clock per step;
    ``init_state`` replaces π_ref's weights in the policy it hands out."""
    from harness.execution.context import TrainContext

    class ClockedContext(TrainContext):
        def __init__(self):
            super().__init__(art, seed, run_dir, 0, None)
            self.stamps: list[tuple[float, float]] = []
            self.logs: list[dict] = []
            self.model = None

        def init_policy(self):
            model = super().init_policy()
            if init_state is not None:
                model.load_state_dict(init_state)
            if not dropout:
                disable_dropout(model)
            self.model = model
            return model

        def log(self, step, **metrics):
            super().log(step, **metrics)
            self.stamps.append(clock())
            self.logs.append({"step": step, **metrics})

    return ClockedContext()


def run_native(art, cfg, seed: int, dropout: bool, init_state=None, keep_state=False):
    from algorithms.dpo import DPO

    with tempfile.TemporaryDirectory(prefix="bench-native-") as d:
        ctx = make_native_context(art, seed, dropout, Path(d), init_state)
        t0 = time.perf_counter()
        try:
            DPO(cfg).train(ctx)
        finally:
            ctx.close()
        wall = time.perf_counter() - t0
    info = {"dropout": dropout_rate(ctx.model) if ctx.model is not None else None}
    if keep_state and ctx.model is not None:
        info["state"] = {k: v.detach().clone() for k, v in ctx.model.state_dict().items()}
    ctx.model = None
    return ctx.stamps, ctx.logs, wall, info


# --------------------------------------------------------------------------- TRL side
def make_trl_classes():
    from transformers import TrainerCallback
    from harness.adapters import hide_vllm_from_trl

    hide_vllm_from_trl()
    from trl import DPOTrainer

    class PretokDPOTrainer(DPOTrainer):
        """Trains on exactly the ids given: no EOS appended, nothing re-tokenized."""
        precompute_seconds = None

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset

        def _precompute_ref_logps(self, dataset, name, batch_size):
            if "ref_chosen_logps" in dataset.column_names:  # TRL's own values from an earlier trainer
                self.precompute_seconds = 0.0
                return dataset
            t0 = time.perf_counter()
            out = super()._precompute_ref_logps(dataset, name, batch_size)
            self.precompute_seconds = time.perf_counter() - t0
            return out

    class StepClock(TrainerCallback):
        def __init__(self):
            self.stamps: list[tuple[float, float]] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.stamps.append(clock())

    return PretokDPOTrainer, StepClock


def trl_config(cfg, batch_size: int, max_steps: int, max_length: int, seed: int, out_dir: str, optim: str | None):
    from trl import DPOConfig as TRLDPOConfig

    kw = dict(output_dir=out_dir, use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False,
              per_device_train_batch_size=batch_size, max_steps=max_steps, learning_rate=cfg.lr,
              warmup_steps=cfg.warmup_steps, lr_scheduler_type="linear", weight_decay=cfg.weight_decay,
              max_grad_norm=cfg.max_grad_norm, beta=cfg.beta, loss_type="sigmoid", label_smoothing=cfg.label_smoothing,
              max_length=max_length, precompute_ref_log_probs=True, train_sampling_strategy="sequential", seed=seed,
              logging_strategy="no", save_strategy="no", report_to="none", disable_tqdm=True,
              dataloader_num_workers=0)
    if optim:
        kw["optim"] = optim
    return TRLDPOConfig(**kw)


def make_trl_trainer(art, dataset, args_trl, callbacks=(), init_state=None):
    PretokDPOTrainer, _ = make_trl_classes()
    model = art.load_reference()  # fresh π_ref copy; with precompute, TRL needs no separate ref model
    if init_state is not None:
        model.load_state_dict(init_state)
    t0 = time.perf_counter()
    trainer = PretokDPOTrainer(model=model, ref_model=None, args=args_trl, train_dataset=dataset,
                               processing_class=art.tokenizer, callbacks=list(callbacks))
    init_s = time.perf_counter() - t0
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # disable_tqdm=True swaps the bar for a printer of the final log
    return trainer, init_s


def run_trl(art, dataset, args_trl):
    _, StepClock = make_trl_classes()
    step_clock = StepClock()
    trainer, init_s = make_trl_trainer(art, dataset, args_trl, [step_clock])
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    opt = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    info = {"init_seconds": init_s, "precompute_seconds": trainer.precompute_seconds,
            "optimizer": f"{type(opt).__module__}.{type(opt).__name__}"
                         f"(fused={opt.defaults.get('fused')}, foreach={opt.defaults.get('foreach')})",
            "dropout": dropout_rate(trainer.model)}
    del trainer
    return step_clock.stamps, wall, info


# --------------------------------------------------------------------------- main
def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--toy" not in argv:  # the default workload: SmolLM2-135M + LoRA on long prompts
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import bench_lora_dpo_vs_trl

        return bench_lora_dpo_vs_trl.main(argv)
    argv.remove("--toy")
    args = parse_args(argv)
    import numpy as np
    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    from harness.training import logprobs

    logprobs.PACKING = args.native_packing
    import datasets
    import transformers
    import trl

    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()

    from harness import registry
    from harness.execution.artifacts import SuiteArtifacts
    from harness.suites.spec import load_suite
    from harness.training.loop import seeded_batches, total_steps

    load_start = loadavg()
    cache_root = Path(os.environ.get("PREFBENCH_CACHE", args.results / "_cache"))
    suite = load_suite(args.suite)
    t0 = time.perf_counter()
    art = SuiteArtifacts(suite, args.preset, cache_root)
    pairs = art.train_pairs
    _ = art.reference_dir, art.tokenizer
    art_s = time.perf_counter() - t0
    built = ", ".join(art.built) if art.built else "none (all from the cache)"

    # native config exactly as `prefbench run` resolves it: registry defaults < the preset's values
    spec = registry.get("dpo")
    values = dict(art.preset.algorithms.get("dpo", {}))
    if args.batch_size is not None:
        values["batch_size"] = args.batch_size
    B = values.get("batch_size", spec.make_config(values, "bench").batch_size)
    S = args.warmup + args.steps
    values["epochs"] = (S * B - 0.5) / len(pairs)  # exactly S optimizer steps
    cfg = spec.make_config(values, "bench_dpo_vs_trl")
    assert total_steps(len(pairs), cfg.batch_size, cfg.epochs) == S
    if cfg.loss != "sigmoid":
        raise SystemExit(f"this benchmark compares the sigmoid (DPO/cDPO) loss; the preset sets loss={cfg.loss}")
    max_length = suite.policy.max_length

    # the native run's batches (same call as DPO.train, with TrainContext.data_seed), laid out for TRL's
    # sequential sampler
    from harness.core import seeds

    batches = list(seeded_batches(len(pairs), cfg.batch_size, cfg.epochs, seeds.derive(args.seed, "data-order")))
    order = np.concatenate(batches)
    rows = pairs.iloc[order]
    dataset = datasets.Dataset.from_dict({"prompt_ids": rows.prompt_ids.map(list).tolist(),
                                          "chosen_ids": rows.chosen_ids.map(list).tolist(),
                                          "rejected_ids": rows.rejected_ids.map(list).tolist()})
    too_long = sum(len(p) + max(len(c), len(r)) > max_length
                   for p, c, r in zip(dataset["prompt_ids"], dataset["chosen_ids"], dataset["rejected_ids"]))
    lengths = [len(p) + max(len(c), len(r)) for p, c, r in zip(rows.prompt_ids, rows.chosen_ids, rows.rejected_ids)]
    seq_len = [max(lengths[b0:b0 + B]) for b0 in range(0, len(lengths), B)]

    n_params = sum(p.numel() for p in art.reference_model.parameters())
    print("== native DPO vs TRL DPOTrainer: training throughput ==")
    print(f"host: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads{', set by --threads' if args.threads else ', torch default'}), "
          f"transformers {transformers.__version__}, trl {trl.__version__}; load average at start {load_start}")
    print(f"suite {suite.name}/{args.preset}: {len(pairs)} train pairs, π_ref {n_params / 1e6:.2f}M params "
          f"({suite.policy.architecture}, max_length {max_length}); artifacts ready in {art_s:.1f}s, built now: {built}")
    print(f"workload: batch {B} pairs = {2 * B} sequences/step, {args.warmup} warm-up + {args.steps} timed steps, "
          f"{args.repeats} repeats; padded length per batch {min(seq_len)}..{max(seq_len)} tokens "
          f"(mean {statistics.mean(seq_len):.1f}); {too_long} rows would be truncated at max_length")

    try:
        busy = os.getloadavg()[0]
    except OSError:
        busy = 0.0
    if torch.get_num_threads() > 1 and busy + torch.get_num_threads() > (os.cpu_count() or 1) + 0.5:
        print(f"note: load average {busy:.1f} with {torch.get_num_threads()} torch threads on {os.cpu_count()} CPUs: "
              f"threads will contend (much slower, noisier); --threads 1 is steadier on a shared machine")

    # ---------------------------------------------------------------- loss agreement
    tmp = tempfile.TemporaryDirectory(prefix="bench-trl-")
    args_trl = trl_config(cfg, B, S, max_length, args.seed, tmp.name, args.trl_optim)
    one_cfg = spec.make_config({**values, "epochs": (B - 0.5) / len(pairs)}, "bench_dpo_vs_trl")

    def trl_loss(trainer):
        rows_ = [trainer.train_dataset[i] for i in range(B)]
        with torch.no_grad():
            loss = float(trainer.compute_loss(trainer.model, trainer.data_collator(rows_)))
        m = trainer._metrics["train" if trainer.model.training else "eval"]
        means = (m["logps/chosen"][-1], m["logps/rejected"][-1])
        for d in trainer._metrics.values():
            d.clear()
        return loss, means, rows_

    def native_loss(init_state=None):
        """The real DPO.train path for one step with dropout off (TRL disables it): the loss it logs at
        step 1 is computed on the weights it started from and the first batch."""
        _, logs1, _, _ = run_native(art, one_cfg, args.seed, dropout=False, init_state=init_state)
        return logs1[0]["loss"], (logs1[0]["logps/chosen"], logs1[0]["logps/rejected"])

    def report_agreement(title, lt, mt, ln, mn):
        d = abs(lt - ln)
        print(f"\n-- loss agreement: {title} --")
        print(f"TRL    compute_loss (TRL's own precomputed ref log-probs):   {lt:.8f}")
        print(f"native DPO.train step-1 loss (suite's cached ref log-probs): {ln:.8f}")
        print(f"|difference| = {d:.2e} (tolerance {args.tolerance:g}): {'AGREE' if d <= args.tolerance else 'DISAGREE'}"
              f"; policy mean logps chosen/rejected: TRL {mt[0]:.5f}/{mt[1]:.5f}, native {mn[0]:.5f}/{mn[1]:.5f}")
        return d

    trainer, _ = make_trl_trainer(art, dataset, args_trl)
    precompute_cold = trainer.precompute_seconds
    loss_trl, means_trl, first = trl_loss(trainer)
    b0 = batches[0]
    ref_diff = max(np.abs(np.array([r["ref_chosen_logps"] for r in first]) - pairs.ref_chosen_logp.to_numpy()[b0]).max(),
                   np.abs(np.array([r["ref_rejected_logps"] for r in first]) - pairs.ref_rejected_logp.to_numpy()[b0]).max())
    # TRL's own precomputed reference log-probs, reused by every later trainer (as TRL's datasets cache
    # would for an on-disk dataset): the precomputation is paid, and timed, once
    dataset_pre = trainer.train_dataset
    del trainer
    gc.collect()
    loss_native, means_native = native_loss()
    diff = report_agreement("fresh π_ref copies, first batch, before any update", loss_trl, means_trl,
                            loss_native, means_native)
    print(f"max |reference logp, TRL's precomputation - suite cache| on that batch: {ref_diff:.2e}; at π_θ = π_ref "
          f"every log-ratio is ~0, so both losses are ~ln 2: the check on trained weights below discriminates")
    if diff > args.tolerance:
        print("VERDICT: losses DISAGREE at π_ref; not timing")
        return EXIT_LOSS_MISMATCH

    # ---------------------------------------------------------------- timing
    native_dropout = args.native_dropout == "as-trained"
    reps = []
    native_info = trl_info = trained_state = None
    for r in range(args.repeats):
        order_sides = ["native", "trl"] if r % 2 == 0 else ["trl", "native"]
        rec = {"repeat": r + 1, "first": order_sides[0], "load": loadavg()}
        for side in order_sides:
            gc.collect()
            if side == "native":
                stamps, logs, wall, native_info = run_native(art, cfg, args.seed, native_dropout,
                                                             keep_state=trained_state is None)
                trained_state = native_info.pop("state", trained_state)
                rec["native_loss_first"] = logs[0]["loss"]
            else:
                stamps, wall, trl_info = run_trl(art, dataset_pre, args_trl)
                rec["trl_init"] = trl_info["init_seconds"]
            assert len(stamps) == S, (side, len(stamps), S)
            rec[side], rec[side + "_cpu"] = rate(stamps, args.warmup, args.steps)
            rec[side + "_wall"] = wall
        rec["ratio"] = rec["native"] / rec["trl"]
        rec["ratio_cpu"] = rec["native_cpu"] / rec["trl_cpu"]
        reps.append(rec)
        print(f"repeat {r + 1}/{args.repeats} ({rec['first']} first, load {rec['load']}): native "
              f"{rec['native']:.2f} steps/s, TRL {rec['trl']:.2f} steps/s, ratio {rec['ratio']:.2f}x "
              f"(per CPU-second: {rec['native_cpu']:.2f} vs {rec['trl_cpu']:.2f}, {rec['ratio_cpu']:.2f}x)")

    # second agreement check, on weights where the log-ratios are not 0: π_θ after the first native timing run
    trainer, _ = make_trl_trainer(art, dataset_pre, args_trl, init_state=trained_state)
    loss_trl2, means_trl2, _ = trl_loss(trainer)
    del trainer
    loss_native2, means_native2 = native_loss(trained_state)
    diff2 = report_agreement(f"identical trained weights (native run 1 after {S} steps), first batch",
                             loss_trl2, means_trl2, loss_native2, means_native2)
    ok = diff <= args.tolerance and diff2 <= args.tolerance
    diff_max = max(diff, diff2)

    med = {k: statistics.median(x[k] for x in reps) for k in ("native", "trl", "ratio", "native_cpu", "trl_cpu",
                                                             "ratio_cpu")}
    nat, trl_rate, ratio = med["native"], med["trl"], med["ratio"]
    precompute_per_step = precompute_cold / S
    ratio_with_pre = nat * (1 / trl_rate + precompute_per_step)
    load_end = loadavg()

    print("\n-- settings --")
    from harness.training.loop import make_optimizer

    nopt, _ = make_optimizer(torch.nn.Linear(1, 1), cfg, S)  # what train_loop builds, shown on a stand-in
    print(f"native: algorithms/dpo.py DPO.train -> harness.training.loop.train_loop; {type(nopt).__module__}."
          f"{type(nopt).__name__}(lr={cfg.lr:g}, weight_decay={cfg.weight_decay:g}, fused={nopt.defaults.get('fused')}, "
          f"foreach={nopt.defaults.get('foreach')}: None = torch's choice, a per-tensor loop on CPU), linear warm-up "
          f"{cfg.warmup_steps} + decay, clip_grad_norm_ {cfg.max_grad_norm:g}, fp32, dropout "
          f"{native_info['dropout']:g} ({args.native_dropout}), beta {cfg.beta:g}, reference log-probs from the suite "
          f"cache (built once per suite, not timed), packing {args.native_packing}")
    if native_dropout and native_info["dropout"] > 0:
        print(f"        note: with dropout active, native's step-1 loss is {reps[0]['native_loss_first']:.5f} (vs "
              f"{loss_native:.5f} with dropout off): the log-ratios are not 0 at π_θ = π_ref; TRL disables dropout")
    print(f"TRL:    DPOTrainer (pre-tokenized subclass), {trl_info['optimizer']}, lr {args_trl.learning_rate:g}, "
          f"weight_decay {args_trl.weight_decay:g}, linear warm-up {args_trl.warmup_steps} + decay, max_grad_norm "
          f"{args_trl.max_grad_norm:g}, fp32 (bf16=False), gradient_checkpointing=False, disable_dropout="
          f"{args_trl.disable_dropout} (dropout {trl_info['dropout']:g}), beta {args_trl.beta:g}, loss sigmoid, "
          f"sequential sampler, logging off; reference log-probs precomputed by TRL once: {precompute_cold:.2f}s for "
          f"{len(dataset)} rows (batch {B}), reused by every timed trainer, NOT included in steps/s")

    print("\n-- result (median of repeats; steps/s over the timed steps only) --")
    w = 8
    print(f"{'side':<{w}} {'steps/s':>8} {'seq/s':>8} {'pairs/s':>8} {'steps/CPU-s':>12}  per repeat (steps/s)"
          f"       train() wall s")
    for name, key in (("native", "native"), ("TRL", "trl")):
        m = med[key]
        per = ", ".join(f"{x[key]:.2f}" for x in reps)
        walls = ", ".join(f"{x[key + '_wall']:.1f}" for x in reps)
        print(f"{name:<{w}} {m:>8.2f} {m * 2 * B:>8.1f} {m * B:>8.1f} {med[key + '_cpu']:>12.2f}  {per:<26} {walls}")
    per_ratio = ", ".join(f"{x['ratio']:.2f}" for x in reps)
    print(f"ratio native/TRL: {ratio:.2f}x (per repeat: {per_ratio}); per process-CPU-second: "
          f"{med['ratio_cpu']:.2f}x; counting TRL's precompute in its time ({precompute_per_step * 1000:.0f} ms/step "
          f"over {S} steps): {ratio_with_pre:.2f}x")
    print(f"loss |TRL - native| on the first batch: {diff:.2e} at π_ref, {diff2:.2e} on trained weights "
          f"({loss_trl2:.6f} vs {loss_native2:.6f})")
    print(f"peak RSS (whole process, both sides): {peak_rss_mib():.0f} MiB; load average start {load_start}, "
          f"end {load_end}; torch threads {torch.get_num_threads()}")
    verdict = "MEETS" if ratio >= 1.5 else "MISSES"
    print(f"VERDICT: native DPO runs at {ratio:.2f}x TRL DPOTrainer's steps/s: {verdict} the >= 1.5x target "
          f"(batch {B}, {args.steps} timed steps x {args.repeats} repeats); losses "
          f"{'agree' if ok else 'DISAGREE'} (max |difference| {diff_max:.1e})")

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "suite": suite.name, "preset": args.preset, "batch_size": B, "steps": args.steps, "warmup": args.warmup,
            "threads": torch.get_num_threads(), "native_dropout": args.native_dropout,
            "native_packing": args.native_packing,
            "trl_optim": getattr(args_trl.optim, "value", str(args_trl.optim)),
            "native_steps_per_s": nat, "trl_steps_per_s": trl_rate, "ratio": ratio,
            "native_steps_per_cpu_s": med["native_cpu"], "trl_steps_per_cpu_s": med["trl_cpu"],
            "ratio_cpu": med["ratio_cpu"],
            "ratio_with_trl_precompute": ratio_with_pre, "trl_precompute_seconds": precompute_cold,
            "loss_trl": loss_trl, "loss_native": loss_native, "loss_abs_diff": diff,
            "loss_trl_trained": loss_trl2, "loss_native_trained": loss_native2, "loss_abs_diff_trained": diff2,
            "repeats": reps,
            "load_start": load_start, "load_end": load_end, "peak_rss_mib": peak_rss_mib()}, indent=1))
    tmp.cleanup()
    return 0 if ok else EXIT_LOSS_MISMATCH


if __name__ == "__main__":
    sys.exit(main())
