"""``prefbench``: list what exists, run suites, and report comparisons.

The CLI parses and validates, then calls the harness. Heavy libraries are imported only once a
command needs them, so ``--help``, ``list`` and input errors answer in well under a second.
"""
from __future__ import annotations

import argparse
import os
import sys
import textwrap
from pathlib import Path

from harness.core.errors import UserError

DEFAULT_RESULTS = Path(os.environ.get("PREFBENCH_RESULTS", Path(__file__).resolve().parent.parent / "results"))
EXIT_USAGE, EXIT_RUN_FAILED = 2, 1


def _cache_dir(results: Path) -> Path:
    return Path(os.environ.get("PREFBENCH_CACHE", results / "_cache"))


def cmd_list(args) -> int:
    if args.what == "algorithms":
        from harness.core import config
        from harness import registry

        for spec in registry.all_specs():
            print(f"{spec.name}: {spec.description}")
            for f in config.describe(spec.config_cls):
                rng = f" ({f['range']})" if f["range"] else ""
                print(f"    {f['name']} = {f['default']!r}  [{f['type']}{rng}] {f['help']}")
    else:
        from harness.suites.spec import load_suite, suite_files

        for name, path in suite_files().items():
            s = load_suite(str(path))
            print(f"{name} (v{s.version}): {s.description}")
            for pname, p in s.presets.items():
                print(f"    preset {pname}: {p.train_prompts} training prompts, {p.eval_prompts} evaluation prompts")
    return 0


def cmd_run(args) -> int:
    from harness import registry
    from harness.execution.results import ResultsStore
    from harness.execution.plan import load_sweep_file, parse_seeds, parse_sets, parse_sweeps, plan_runs
    from harness.suites.spec import load_suite

    # everything is validated before any compute or write
    if args.checkpoint_every < 0:
        raise UserError("--checkpoint-every", str(args.checkpoint_every), "must be >= 0")
    sweep_file = load_sweep_file(args.sweep_file) if args.sweep_file else {}
    suite = load_suite(args.suite)
    preset = args.preset or sweep_file.get("preset") or "smoke"
    suite.preset(preset, "--preset" if args.preset else f"{args.sweep_file}: preset")
    if args.algorithms:
        algorithms = [a.strip() for a in args.algorithms.split(",") if a.strip()]
    else:
        algorithms = sweep_file.get("algorithms") or ["sft", "dpo"]
    if not algorithms:
        raise UserError("--algorithms", args.algorithms, "no algorithm named")
    for a in algorithms:
        registry.get(a)
    if args.seeds:
        seed_list = parse_seeds(args.seeds)
    else:
        seed_list = sweep_file.get("seeds") or [0]
    sets = parse_sets(sweep_file.get("set", []), f"{args.sweep_file}: set")
    for algo, vals in parse_sets(args.set).items():
        sets.setdefault(algo, {}).update(vals)
    sweeps = parse_sweeps(sweep_file.get("sweep", []), f"{args.sweep_file}: sweep")
    for algo, grid in parse_sweeps(args.sweep).items():
        sweeps.setdefault(algo, {}).update(grid)
    from harness.evaluation.sampling import get_sampler

    ev = suite.evaluation
    # `auto` resolves here, so config.json and the run id record the engine that actually samples
    sampler = get_sampler(args.sampler, job_tokens=suite.preset(preset).eval_prompts * ev.samples_per_prompt
                          * ev.max_new_tokens)
    plan = plan_runs(suite, preset, algorithms, seed_list, sets, sampler.name, sweeps, args.eval_checkpoints)
    args.preset = preset
    store = ResultsStore(args.results)
    store.prepare()

    _set_threads()
    from harness.execution.artifacts import SuiteArtifacts
    from harness.analysis.report import load_runs, render, summary_table
    from harness.core.progress import say
    from harness.execution.runner import execute
    art = SuiteArtifacts(suite, args.preset, _cache_dir(Path(args.results)), sampler)
    try:
        counts = execute(plan, art, store, force=args.force, save_every=args.checkpoint_every)
    finally:
        getattr(sampler, "close", lambda: None)()
    if art.built:
        say(f"built suite artifacts: {', '.join(art.built)}")
    else:
        say("suite artifacts reused from the cache")
    table = summary_table(load_runs(args.results, suite.name, {r.run_id for r in plan}))
    print(render(table, "md"), end="")
    say(", ".join(f"{v} {k}" for k, v in counts.items() if v))
    if counts["busy"]:
        say(f"{counts['busy']} run(s) were in progress in another process; run again to include them.")
    if counts["failed"]:
        say(f"{counts['failed']} run(s) failed; see traceback.txt in their folders. Re-running retries them.")
        return EXIT_RUN_FAILED
    return 0


def cmd_report(args) -> int:
    from harness.analysis.report import load_runs, render, summary_table

    if not Path(args.results).is_dir():
        raise UserError("--results", str(args.results), "no such results folder")
    runs = load_runs(args.results, args.suite)
    if runs.empty:
        raise UserError("--results", str(args.results), f"no finished runs{' for suite ' + args.suite if args.suite else ''}")
    if args.dir:
        from harness.analysis import build_report

        if args.kl_bound <= 0:
            raise UserError("--kl-bound", str(args.kl_bound), "must be > 0")
        if args.resamples < 100:
            raise UserError("--resamples", str(args.resamples), "must be >= 100")
        out = build_report(Path(args.results), args.suite, Path(args.dir), kl_bound=args.kl_bound,
                           n_resamples=args.resamples)
        print(f"report written to {out}")
        return 0
    text = render(summary_table(runs), args.format)
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text, end="")
    return 0


def _set_threads() -> None:
    n = os.environ.get("PREFBENCH_THREADS")
    if n:
        import torch

        torch.set_num_threads(int(n))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="prefbench",
        description="Benchmark LLM alignment algorithms side by side on shared preference suites.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=textwrap.dedent("""\
            examples:
              prefbench list algorithms
              prefbench run sentiment --preset smoke --algorithms sft,dpo --seeds 0
              prefbench run sentiment --algorithms dpo --seeds 0,1,2 --set dpo.beta=0.5
              prefbench report --suite sentiment --format latex --out table.tex

            environment: PREFBENCH_RESULTS (default results folder), PREFBENCH_CACHE (suite artifact
            cache, default RESULTS/_cache), PREFBENCH_THREADS (torch threads), PREFBENCH_QUIET=1 (no bars)"""))
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    pl = sub.add_parser("list", help="list registered algorithms (with hyperparameters) or suites",
                        description="List registered algorithms with their hyperparameters, or the suites in suites/.")
    pl.add_argument("what", choices=["algorithms", "suites"], help="what to list")
    pl.set_defaults(func=cmd_list)

    pr = sub.add_parser("run", help="train and evaluate algorithms on a suite",
                        description="Train each algorithm for each seed from the suite's π_SFT on the suite's "
                                    "preference pairs, evaluate every policy with the same code, write one folder "
                                    "per run, and print the comparison table. Finished runs are reused.")
    pr.add_argument("suite", help="suite name (see `prefbench list suites`) or path to a suite YAML")
    pr.add_argument("--algorithms", default=None, help="comma-separated algorithm names (default: sft,dpo); "
                    "the π_SFT reference row is always added")
    pr.add_argument("--seeds", default=None, help="comma-separated seeds (default: 0)")
    pr.add_argument("--preset", default=None, help="budget preset of the suite (default: smoke)")
    pr.add_argument("--set", action="append", metavar="ALGO.KEY=VALUE",
                    help="override a hyperparameter, e.g. --set dpo.beta=0.5 (repeatable)")
    pr.add_argument("--sweep", action="append", metavar="ALGO.KEY=V1,V2,...",
                    help="sweep a hyperparameter over values, e.g. --sweep dpo.beta=0.05,0.1,0.5 (repeatable; "
                         "an algorithm's swept keys form a grid, crossed with --seeds)")
    pr.add_argument("--sweep-file", default=None, metavar="YAML",
                    help="a sweep YAML with any of: algorithms, seeds, preset, sweep {algo.key: [values]}, "
                         "set {algo.key: value}; command-line flags take precedence")
    pr.add_argument("--eval-checkpoints", type=int, default=None, metavar="N",
                    help="evaluate N times along training as well as at the end (default: the preset's)")
    pr.add_argument("--results", default=str(DEFAULT_RESULTS), help=f"results folder (default: {DEFAULT_RESULTS})")
    pr.add_argument("--sampler", default="hf",
                    help="sampling engine: hf | vllm | auto (vLLM when installed and the evaluation generates "
                         ">= 50,000 tokens, enough to repay its start-up; default: hf)")
    pr.add_argument("--force", action="store_true", help="recompute runs that already finished")
    pr.add_argument("--checkpoint-every", type=int, default=50, metavar="STEPS",
                    help="save a resumable checkpoint of native training every STEPS optimizer steps; a killed "
                         "run restarts from it (0: off; default: 50)")
    pr.set_defaults(func=cmd_run)

    rp = sub.add_parser("report", help="comparison table over finished runs",
                        description="One row per (suite, algorithm, hyperparameters) aggregated over seeds, with "
                                    "the π_SFT reference row; win-rate CIs bootstrap seeds and prompts.")
    rp.add_argument("--results", default=str(DEFAULT_RESULTS), help=f"results folder (default: {DEFAULT_RESULTS})")
    rp.add_argument("--suite", default=None, help="only this suite")
    rp.add_argument("--format", default="md", choices=["md", "latex", "csv"], help="table format (default: md)")
    rp.add_argument("--out", default=None, help="write to this file instead of stdout")
    rp.add_argument("--dir", default=None, metavar="FOLDER",
                    help="write the full report folder instead: tables (md, LaTeX, CSV), plots (PNG, PDF: "
                         "reward-KL frontier, seed stability, sensitivity, training curves) and report.md")
    rp.add_argument("--kl-bound", type=float, default=50.0, metavar="NATS",
                    help="failure criterion for --dir: a run whose KL exceeds this counts as failed (default: 50)")
    rp.add_argument("--resamples", type=int, default=10000, metavar="N",
                    help="bootstrap resamples for --dir confidence intervals (default: 10000)")
    rp.set_defaults(func=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as e:
        print(f"prefbench: error: {e.one_line()}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
