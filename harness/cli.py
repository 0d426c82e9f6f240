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
from harness.evaluation.sampling import DEFAULT_SAMPLER

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
    from harness.execution.plan import Request, make_plan
    from harness.execution.results import ResultsStore

    # the request travels one way: flags -> plan (validated, before any compute or write) -> execute
    if args.checkpoint_every < 0:
        raise UserError("--checkpoint-every", str(args.checkpoint_every), "must be >= 0")
    plan = make_plan(Request(suite=args.suite, preset=args.preset, algorithms=args.algorithms, seeds=args.seeds,
                             sets=args.set, sweeps=args.sweep, sweep_file=args.sweep_file,
                             eval_checkpoints=args.eval_checkpoints, sampler=args.sampler),
                     _cache_dir(Path(args.results)))
    store = ResultsStore(args.results)
    store.prepare()

    _set_threads()
    from harness.core.progress import say
    from harness.execution.runner import execute

    art = plan.artifacts
    try:
        counts = execute(plan.runs, art, store, force=args.force, save_every=args.checkpoint_every)
    finally:
        getattr(plan.sampler, "close", lambda: None)()
    if art.built:
        say(f"built suite artifacts: {', '.join(art.built)}")
    else:
        say("suite artifacts reused from the cache")
    from harness.analysis import headline

    print(headline(Path(args.results), plan.suite.name, {r.run_id for r in plan.runs}, "md"), end="")
    say(", ".join(f"{v} {k}" for k, v in counts.items() if v))
    if counts["busy"]:
        say(f"{counts['busy']} run(s) were in progress in another process; run again to include them.")
    if counts["failed"]:
        say(f"{counts['failed']} run(s) failed; see traceback.txt in their folders. Re-running retries them.")
        return EXIT_RUN_FAILED
    return 0


def cmd_report(args) -> int:
    from harness.analysis import build_report, headline
    from harness.execution.results import ResultsStore

    if not Path(args.results).is_dir():
        raise UserError("--results", str(args.results), "no such results folder")
    if not any(ResultsStore(args.results).iter_runs(args.suite)):
        raise UserError("--results", str(args.results), f"no finished runs{' for suite ' + args.suite if args.suite else ''}")
    if args.kl_bound <= 0:
        raise UserError("--kl-bound", str(args.kl_bound), "must be > 0")
    if args.resamples < 100:
        raise UserError("--resamples", str(args.resamples), "must be >= 100")
    opts = dict(kl_bound=args.kl_bound, n_resamples=args.resamples, select_split=args.select_split)
    if args.dir:
        out = build_report(Path(args.results), args.suite, Path(args.dir), **opts)
        print(f"report written to {out}")
        return 0
    text = headline(Path(args.results), args.suite, None, args.format, **opts)
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
    pr.add_argument("--sampler", default=DEFAULT_SAMPLER,
                    help="sampling engine: hf | vllm | auto (vLLM when installed and the evaluation generates "
                         f">= 50,000 tokens, enough to repay its start-up; default: {DEFAULT_SAMPLER})")
    pr.add_argument("--force", action="store_true", help="recompute runs that already finished")
    pr.add_argument("--checkpoint-every", type=int, default=50, metavar="STEPS",
                    help="save a resumable checkpoint of native training every STEPS optimizer steps; a killed "
                         "run restarts from it (0: off; default: 50)")
    pr.set_defaults(func=cmd_run)

    rp = sub.add_parser("report", help="comparison table over finished runs",
                        description="One block per comparable configuration (suite and version, preset, π_SFT, "
                                    "pairs and baseline artifacts, sampler, judge); in it one row per (algorithm, "
                                    "variant, hyperparameters) over seeds, with the π_SFT reference row. Raw and "
                                    "length-controlled win rates with CIs (seeds, then prompts), length, truncation "
                                    "and KL side by side.")
    rp.add_argument("--results", default=str(DEFAULT_RESULTS), help=f"results folder (default: {DEFAULT_RESULTS})")
    rp.add_argument("--suite", default=None, help="only this suite")
    rp.add_argument("--format", default="md", choices=["md", "latex", "csv"], help="table format (default: md)")
    rp.add_argument("--out", default=None, help="write to this file instead of stdout")
    rp.add_argument("--dir", default=None, metavar="FOLDER",
                    help="write the full report folder instead: tables (md, LaTeX, CSV), plots (PNG, PDF: "
                         "reward-KL frontier, seed stability, sensitivity, training curves) and report.md")
    rp.add_argument("--kl-bound", type=float, default=50.0, metavar="NATS",
                    help="failure criterion: a run whose KL exceeds this counts as failed (default: 50)")
    rp.add_argument("--resamples", type=int, default=10000, metavar="N",
                    help="bootstrap resamples for every confidence interval (default: 10000)")
    rp.add_argument("--select-split", action="store_true",
                    help="choose the best configurations (bold, †) and Pareto sets on one half of the evaluation "
                         "prompts and report every number on the other half (default: both on all prompts, "
                         "which biases the selected configuration upward; the tables say so)")
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
