"""``prefbench``: list what exists, run suites, and report comparisons.

The CLI parses and validates, then calls the harness. Heavy libraries are imported only once a
command needs them, so ``--help``, ``list`` and input errors answer in well under a second.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import signal
import sys
import textwrap
import threading
from pathlib import Path

from harness.core.errors import UserError
from harness.core.interrupt import Interrupted
from harness.core.interrupt import name as interrupt_name
from harness.evaluation.sampling import DEFAULT_SAMPLER

DEFAULT_RESULTS = Path(os.environ.get("PREFBENCH_RESULTS", Path(__file__).resolve().parent.parent / "results"))
EXIT_USAGE, EXIT_RUN_FAILED = 2, 1
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what `yes | head -1` reports for `yes`
MAX_RESAMPLES = 1_000_000
MAX_THREADS = 1024


def _path(flag: str, value: str | None) -> Path | None:
    """A path given on the command line or in the environment: non-empty, no NUL byte, and one the
    system can look up (not too long); nothing is created."""
    if value is None:
        return None
    if not value.strip():
        raise UserError(flag, None, "empty path (it would mean the current folder); name a folder or file")
    if "\x00" in value:
        raise UserError(flag, value, "contains a NUL byte")
    p = Path(value)
    try:
        p.exists()
    except OSError as e:
        raise UserError(flag, value, f"unusable path ({e.strerror or e})") from None
    return p


def _writable_folder(flag: str, value: str) -> Path:
    """A folder that exists or can be created here: no file in its place, and the nearest existing
    folder above it writable. Checked, not created."""
    p = _path(flag, value)
    if p.exists() and not p.is_dir():
        raise UserError(flag, value, "exists and is not a folder")
    above = p
    while not above.exists() and above != above.parent:
        above = above.parent
    if not above.is_dir():
        raise UserError(flag, value, f"{above} is not a folder")
    if not os.access(above, os.W_OK | os.X_OK):
        raise UserError(flag, value, f"not writable ({above})")
    return p


def _writable_file(flag: str, value: str) -> Path:
    p = _path(flag, value)
    if p.is_dir():
        raise UserError(flag, value, "is a folder; name a file")
    parent = p.parent
    if not parent.is_dir():
        raise UserError(flag, value, f"folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise UserError(flag, value, "not writable")
    return p


def _threads() -> int | None:
    """PREFBENCH_THREADS, checked before any compute (unset or empty: torch's default)."""
    n = os.environ.get("PREFBENCH_THREADS")
    if not n or not n.strip():
        return None
    n = n.strip()
    if not (n.isascii() and n.isdigit()) or not 1 <= int(n[:6]) <= MAX_THREADS:
        raise UserError("PREFBENCH_THREADS", n, f"expected an integer in 1..{MAX_THREADS} (torch threads), e.g. 1")
    return int(n)


def _check_environment(command: str) -> None:
    """The environment variables a command reads (``list`` and ``--help`` read none)."""
    names = {"run": ("PREFBENCH_RESULTS", "PREFBENCH_CACHE"), "report": ("PREFBENCH_RESULTS",)}.get(command, ())
    for var in names:
        if var in os.environ:
            _path(var, os.environ[var])
    if command == "run":
        _threads()
    for var in ("PREFBENCH_QUIET", "PREFBENCH_VERBOSE"):
        if os.environ.get(var, "") not in ("", "0", "1"):
            raise UserError(var, repr(os.environ[var])[:40], "must be 0 or 1")


def _cache_dir(results: Path) -> Path:
    if "PREFBENCH_CACHE" in os.environ:
        return _writable_folder("PREFBENCH_CACHE", os.environ["PREFBENCH_CACHE"])
    return Path(results) / "_cache"


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
    if args.verbose:
        os.environ["PREFBENCH_VERBOSE"] = "1"  # inherited by the worker processes
    from harness.core.env import quiet_libraries

    quiet_libraries()
    if args.checkpoint_every < 0:
        raise UserError("--checkpoint-every", str(args.checkpoint_every), "must be >= 0")
    _path("--results", args.results)
    _path("--sweep-file", args.sweep_file)
    _threads()
    from harness.adapters.ray_executor import check_flags

    check_flags(args.executor, args.ray_address, args.cpus_per_run, args.gpus_per_run)
    from harness.core import tracking

    tracking.check(args.report_to)
    plan = make_plan(Request(suite=args.suite, preset=args.preset, algorithms=args.algorithms, seeds=args.seeds,
                             sets=args.set, sweeps=args.sweep, sweep_file=args.sweep_file,
                             eval_checkpoints=args.eval_checkpoints, sampler=args.sampler, device=args.device,
                             micro_batch_size=args.micro_batch_size,
                             gradient_checkpointing=args.gradient_checkpointing),
                     _cache_dir(Path(args.results)))
    from harness.training import distributed  # under accelerate launch / torchrun: one run, several processes

    if distributed.active() and args.executor != "local":
        raise UserError("--executor", args.executor, "under a launcher (WORLD_SIZE > 1) only the local executor runs")
    distributed.check_plan(plan.runs)
    distributed.pin_local_device()
    store = distributed.results_store_for_this_process(ResultsStore(args.results))
    cluster = None
    if args.executor == "ray":  # connecting is preflight too: an unusable cluster stops before anything is written
        from harness.adapters.ray_executor import RayExecutor

        cluster = RayExecutor(args.ray_address, args.cpus_per_run, args.gpus_per_run)
        cluster.connect()
    store.prepare()
    tracking.configure(args.report_to, Path(args.results))  # read by every worker process this command starts

    _set_threads()
    from harness.core.progress import say
    from harness.execution.runner import StoppedBySignal, execute

    art = plan.artifacts
    try:
        if cluster is not None:
            counts = cluster.execute(plan.runs, art, store, force=args.force, save_every=args.checkpoint_every)
        else:
            counts = execute(plan.runs, art, store, force=args.force, save_every=args.checkpoint_every)
    except StoppedBySignal as e:  # Ctrl-C / SIGTERM: the run in progress saved a checkpoint (runner.py)
        done = ", ".join(f"{v} {k}" for k, v in e.counts.items() if v)
        say(f"stopped by {e}" + (f" ({done})" if done else "") + "; finished runs are kept; run the same "
            "command again to continue")
        return e.exit_code
    finally:
        getattr(plan.sampler, "close", lambda: None)()
        if cluster is not None:
            cluster.close()
    if getattr(store, "follower", False):  # a non-main process of a launch: the main one reports
        return EXIT_RUN_FAILED if counts["failed"] else 0
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


def cmd_check(args) -> int:
    """Resolve a suite's model, tokenizer, data and judge without computing; count the pairs after the
    filters; estimate tokens and run time; list every problem, one line each; exit 2 if there is any."""
    from harness.suites.datasets import check_report
    from harness.suites.spec import load_suite

    suite = load_suite(args.suite)
    preset = args.preset or "smoke"
    suite.preset(preset)
    lines, problems = check_report(suite, preset, _cache_dir(Path(DEFAULT_RESULTS)))
    print("\n".join(lines))
    if problems:
        print(f"problems ({len(problems)}):")
        for p in problems:
            print(f"  {p}")
        print(f"prefbench: error: {args.suite}: {len(problems)} problem(s), listed above", file=sys.stderr)
        return EXIT_USAGE
    print("no problems found")
    return 0


def _compare_report(committed: Path, rebuilt: Path) -> int:
    from harness.analysis.reproduce import REL_TOL, compare_reports

    c = compare_reports(committed, rebuilt)
    if c.ok:
        print(f"same as {committed}: {len(c.compared)} files (Markdown, LaTeX and report.md identical; CSV numbers "
              f"within {REL_TOL:g} relative, largest difference {c.max_rel:.1e})")
        return 0
    for line in c.differences:
        print(f"  differs: {line}")
    print(f"NOT the same as {committed}: {len(c.differences)} of {len(c.compared)} files differ", file=sys.stderr)
    return 1


def cmd_report(args) -> int:
    from harness.analysis import build_report, headline
    from harness.execution.results import ResultsStore
    from harness.suites.spec import NAME_RE

    # every flag is checked before a results file is read
    if not _path("--results", args.results).is_dir():
        raise UserError("--results", str(args.results), "no such results folder")
    if args.suite is not None and not NAME_RE.fullmatch(args.suite):
        raise UserError("--suite", args.suite, "not a suite name (letters, digits, '_', '-', '.')")
    if not math.isfinite(args.kl_bound) or args.kl_bound <= 0:
        raise UserError("--kl-bound", str(args.kl_bound), "must be a finite number > 0")
    if not 100 <= args.resamples <= MAX_RESAMPLES:
        raise UserError("--resamples", str(args.resamples), f"must be in 100..{MAX_RESAMPLES:,}")
    if args.dir is not None and args.out is not None:
        raise UserError("--out", args.out, "cannot be combined with --dir (the report folder holds every table)")
    if args.compare is not None:
        if args.dir is None:
            raise UserError("--compare", args.compare, "needs --dir (the rebuilt report folder to compare)")
        if not (_path("--compare", args.compare) / "tables").is_dir():
            raise UserError("--compare", args.compare, "not a report folder (no tables/ in it)")
        if _path("--dir", args.dir).resolve() == Path(args.compare).resolve():
            raise UserError("--compare", args.compare, "is the --dir folder itself (it would be overwritten)")
    out_dir = _writable_folder("--dir", args.dir) if args.dir is not None else None
    out_file = _writable_file("--out", args.out) if args.out is not None else None
    if not any(ResultsStore(args.results).iter_runs(args.suite)):
        raise UserError("--results", str(args.results), f"no finished runs{' for suite ' + args.suite if args.suite else ''}")
    opts = dict(kl_bound=args.kl_bound, n_resamples=args.resamples, select_split=args.select_split)
    if out_dir is not None:
        try:
            out = build_report(Path(args.results), args.suite, out_dir, **opts)
        except ValueError as e:
            if str(e).startswith("no finished runs"):  # every run there was unreadable (reported above)
                raise UserError("--results", str(args.results), "no readable finished runs") from None
            raise
        except OSError as e:
            raise UserError("--dir", args.dir, f"cannot write the report ({e.strerror or e})") from None
        print(f"report written to {out}")
        if args.compare is not None:
            return _compare_report(Path(args.compare), out_dir)
        return 0
    text = headline(Path(args.results), args.suite, None, args.format, **opts)
    if text == "(no finished runs)\n":  # every run there was unreadable (each reported above)
        raise UserError("--results", str(args.results), "no readable finished runs")
    if out_file is not None:
        try:
            out_file.write_text(text)
        except OSError as e:
            raise UserError("--out", args.out, f"cannot write ({e.strerror or e})") from None
    else:
        print(text, end="")
    return 0


def _set_threads() -> None:
    n = _threads()
    if n:
        import torch

        torch.set_num_threads(n)


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (``prefbench: error: FLAG: problem``) and exit code 2,
    like every other input error, instead of a usage dump."""

    def error(self, message: str):
        where, problem = self.prog, " ".join(message.split())
        m = re.fullmatch(r"argument ([^:]+): (.*)", problem)
        if m:
            where, problem = m.group(1).split("/")[-1], m.group(2)
        elif problem.startswith("unrecognized arguments: "):
            extra = problem.split(": ", 1)[1].split()
            where = extra[0] if extra else self.prog
            problem = "unrecognized argument" + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else "")
        elif problem.startswith("the following arguments are required: "):
            where, problem = problem.split(": ", 1)[1], "missing (required)"
        raise UserError(where, None, f"{problem}; see `{self.prog} --help`")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
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
            cache, default RESULTS/_cache), PREFBENCH_THREADS (torch threads), PREFBENCH_QUIET=1 (no bars;
            off by default when stderr is not a terminal, PREFBENCH_QUIET=0 keeps them), PREFBENCH_VERBOSE=1
            (library logs and loading bars, as run --verbose)

            exit status: 0 done, 1 some run failed, 2 bad input (nothing computed or written),
            130/143 stopped by Ctrl-C/SIGTERM (the run in progress saved a checkpoint; run again to resume)"""))
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
    pr.add_argument("--device", default="auto", metavar="DEVICE",
                    help="where training, scoring, sampling and KL run: auto | cpu | cuda | cuda:N (auto: CUDA when "
                         "available; a resource setting, not part of the run id; default: auto)")
    pr.add_argument("--micro-batch-size", type=int, default=None, metavar="N",
                    help="sequences (pairs) per forward/backward; the batch_size hyperparameter is reached by "
                         "gradient accumulation, so results do not change beyond float error (default: whole batch)")
    pr.add_argument("--gradient-checkpointing", action="store_true",
                    help="recompute activations in the backward pass of native training (less memory, slower)")
    pr.add_argument("--force", action="store_true", help="recompute runs that already finished")
    pr.add_argument("--verbose", action="store_true",
                    help="show library output prefbench hides: model-loading bars, transformers/datasets logs and "
                         "known harmless warnings (same as PREFBENCH_VERBOSE=1)")
    pr.add_argument("--checkpoint-every", type=int, default=50, metavar="STEPS",
                    help="save a resumable checkpoint of native training every STEPS optimizer steps; a killed "
                         "run restarts from it (0: off; default: 50)")
    pr.add_argument("--executor", default="local", choices=["local", "ray"],
                    help="where runs compute: local (one after another on this machine, the default) or ray "
                         "(one Ray task per run on a Ray cluster; results and cache must be on storage every "
                         "node sees)")
    pr.add_argument("--ray-address", default=None, metavar="ADDR",
                    help="with --executor ray: the cluster to join (auto, HOST:PORT or ray://HOST:PORT; default: "
                         "$RAY_ADDRESS, else a local cluster started for this command)")
    pr.add_argument("--cpus-per-run", type=float, default=None, metavar="N",
                    help="with --executor ray: CPUs each run reserves (default: 1; also its torch threads unless "
                         "PREFBENCH_THREADS is set)")
    pr.add_argument("--gpus-per-run", type=float, default=None, metavar="N",
                    help="with --executor ray: GPUs each run reserves (default: 0; fractions share a GPU)")
    pr.add_argument("--report-to", default="none", choices=["none", "tensorboard", "wandb", "mlflow"],
                    help="also send every run's training curves and final metrics, named by run id, to a tracker "
                         "(tensorboard: RESULTS/_tracking/tensorboard; wandb and mlflow read their usual "
                         "environment variables); the results folder stays the record (default: none)")
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
    rp.add_argument("--compare", default=None, metavar="FOLDER",
                    help="with --dir: then compare the tables and report.md with those of an earlier report folder "
                         "(e.g. the committed results/reference/sentiment-paper/report); exit 1 if they differ")
    rp.add_argument("--kl-bound", type=float, default=50.0, metavar="NATS",
                    help="failure criterion: a run whose KL exceeds this counts as failed (default: 50)")
    rp.add_argument("--resamples", type=int, default=10000, metavar="N",
                    help="bootstrap resamples for every confidence interval (default: 10000)")
    rp.add_argument("--select-split", action="store_true",
                    help="choose the best configurations (bold, †) and Pareto sets on one half of the evaluation "
                         "prompts and report every number on the other half (default: both on all prompts, "
                         "which biases the selected configuration upward; the tables say so)")
    rp.set_defaults(func=cmd_report)

    ck = sub.add_parser("check", help="check a suite before running it: model, tokenizer, data, judge, pairs, cost",
                        description="Resolve the suite's model, tokenizer, data and judge (a hub id that cannot be "
                                    "reached fails in seconds, naming how to use a local copy), count the preference "
                                    "pairs left after the load checks and the length policy, estimate tokens and run "
                                    "time for the preset, and list every problem, one line each (exit 2 if any).")
    ck.add_argument("suite", help="suite name (see `prefbench list suites`) or path to a suite YAML")
    ck.add_argument("--preset", default=None, help="budget preset to check (default: smoke)")
    ck.set_defaults(func=cmd_check)
    return p


def main(argv: list[str] | None = None) -> int:
    if not _isatty(sys.stderr):  # a log file or a pipe gets no progress bars (PREFBENCH_QUIET=0 keeps them)
        os.environ.setdefault("PREFBENCH_QUIET", "1")
    on_main = threading.current_thread() is threading.main_thread()
    old_term = signal.signal(signal.SIGTERM, _raise_interrupted) if on_main else None  # a one-line stop
    try:
        return _main(argv)
    finally:
        if on_main:
            signal.signal(signal.SIGTERM, old_term)


def _main(argv: list[str] | None) -> int:
    try:
        try:
            args = build_parser().parse_args(argv)
            _check_environment(args.command)
            return args.func(args)
        except UserError as e:
            print(f"prefbench: error: {e.one_line()}", file=sys.stderr)
            return EXIT_USAGE
        except (KeyboardInterrupt, Interrupted) as e:  # outside a run: nothing to save
            sig = e.signum if isinstance(e, Interrupted) else signal.SIGINT
            print(f"\nprefbench: stopped by {interrupt_name(sig)}", file=sys.stderr)
            return 128 + sig
        finally:
            sys.stdout.flush()  # a closed pipe shows up here, not in the interpreter's final flush
    except BrokenPipeError:
        # the reader went away (`prefbench list algorithms | head -3`): stop quietly, as other tools do
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return EXIT_BROKEN_PIPE


def _raise_interrupted(signum, frame):  # noqa: ARG001
    raise Interrupted(signum)


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


if __name__ == "__main__":
    sys.exit(main())
