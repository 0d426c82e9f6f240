"""Executing a plan: each planned run -> a committed run folder (claimed, trained, evaluated, renamed
into place). Planning lives in :mod:`harness.execution.plan`, the algorithm-facing context in
:mod:`harness.execution.context`.
"""
from __future__ import annotations

import time
import traceback

from harness import registry
from harness.core import env, faults, seeds
from harness.core.errors import Diverged
from harness.core.progress import say
from harness.execution.context import TrainContext
from harness.execution.plan import RunSpec
from harness.execution.results import ResultsStore, write_json
from harness.training import resume


def execute(plan: list[RunSpec], art, store: ResultsStore, force: bool = False, n_resamples: int = 10000,
            save_every: int = 50) -> dict:
    """Run every planned run that is not already committed. Returns counts by outcome."""
    suite = art.suite
    counts = {"ok": 0, "diverged": 0, "failed": 0, "reused": 0, "busy": 0}
    env_info = (env.library_versions(), env.hardware(), env.git_commit())
    for k, run in enumerate(plan, 1):
        head = f"[{k}/{len(plan)}] {run.algorithm} seed {run.seed} ({run.run_id})"
        if not force and store.is_complete(suite.name, run.run_id):
            counts["reused"] += 1
            say(f"{head}: finished earlier, reused")
            continue
        with store.claim(suite.name, run.run_id) as mine:
            if not mine:
                counts["busy"] += 1
                say(f"{head}: being run by another prefbench process, skipped")
                continue
            if not force and store.is_complete(suite.name, run.run_id):  # finished while we waited
                counts["reused"] += 1
                say(f"{head}: finished earlier, reused")
                continue
            status = _execute_one(run, art, store, head, n_resamples, env_info, save_every)
            counts[status] += 1
    return counts


def _execute_one(run: RunSpec, art, store: ResultsStore, head: str, n_resamples: int, env_info,
                 save_every: int = 50) -> str:
    """Train, evaluate and commit one claimed run; returns its status (ok / diverged / failed)."""
    from harness.evaluation.evaluate import evaluate_policy

    suite = art.suite
    versions, hw, commit = env_info
    say(f"{head}: running")
    staging = store.staging_dir(suite.name, run.run_id)
    config = {**run.identity, "run_id": run.run_id, "artifacts": art.hashes(), "library_versions": versions,
              "hardware": hw, "git_commit": commit, "judge": art.judge.identity,
              "trust_remote_code": suite.policy.trust_remote_code}
    write_json(staging / "config.json", config)
    eval_seed = seeds.derive(run.seed, "eval-sampling")

    def eval_checkpoint(model, label):
        _, m = evaluate_policy(model, art, eval_seed, n_resamples=1000, desc=label)
        return m

    resume_dir = store.checkpoint_dir(suite.name, run.run_id)
    ctx = TrainContext(art, run.seed, staging, run.identity["preset"]["eval_checkpoints"], eval_checkpoint,
                       resume_dir, save_every)
    status, failure, metrics, timing = "ok", None, {}, {}
    t0 = time.time()
    try:
        algo = registry.get(run.algorithm).cls(run.config)
        model = algo.train(ctx)
        timing["train_seconds"] = round(time.time() - t0, 2)
        t1 = time.time()
        samples, metrics = evaluate_policy(model, art, eval_seed, n_resamples=n_resamples, desc=run.algorithm)
        timing["eval_seconds"] = round(time.time() - t1, 2)
        samples.to_parquet(staging / "samples.parquet")
    except Diverged as e:
        status, failure = "diverged", {"step": e.step, "reason": e.reason}
        say(f"{head}: diverged at step {e.step}: {e.reason}")
    except Exception as e:  # one broken run must not end a sweep; it is recorded and retried next time
        status, failure = "failed", {"reason": f"{type(e).__name__}: {e}"}
        (staging / "traceback.txt").write_text(traceback.format_exc())
        say(f"{head}: failed: {type(e).__name__}: {e} (traceback in the run folder)")
    finally:
        ctx.close()
    timing["total_seconds"] = round(time.time() - t0, 2)
    write_json(staging / "metrics.json", {
        "run_id": run.run_id, "suite": suite.name, "suite_version": suite.version, "preset": art.preset_name,
        "algorithm": run.algorithm, "variant": run.variant, "hyperparameters": run.hyperparameters,
        "seed": run.seed, "status": status, "failure": failure, "metrics": metrics,
        "trajectory": ctx.trajectory, "extra": ctx.extra, "timing": timing, "library_versions": versions})
    faults.point("run:commit")
    store.commit(staging, suite.name, run.run_id)
    resume.clear(resume_dir)
    if status == "ok":
        say(f"{head}: done in {timing['total_seconds']:.0f}s: gold reward {metrics['gold_reward']:.3f}, "
            f"win rate {metrics['win_rate']:.3f}, KL {metrics['kl']:.2f} nats")
    return status
