"""Planning and executing runs: (algorithm, hyperparameters, seed) -> a committed run folder.

Everything a run depends on is resolved and validated before any compute: the suite, the preset,
the algorithms and their hyperparameters (registry defaults < the preset's per-algorithm values <
``--set``), the results folder. The run id is a hash of that resolved identity, so a finished run is
found again and never recomputed unless forced.
"""
from __future__ import annotations

import dataclasses
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import env, faults, registry, resume, seeds
from harness.errors import Diverged, UserError
from harness.hashing import content_hash
from harness.results import ResultsStore, write_json
from harness.suite import Suite

REFERENCE = "reference"


@dataclass
class RunSpec:
    algorithm: str
    config: Any
    seed: int
    variant: str
    run_id: str
    identity: dict

    @property
    def hyperparameters(self) -> dict:
        return dataclasses.asdict(self.config)


def parse_sets(items: list[str] | None, where: str = "--set") -> dict[str, dict[str, Any]]:
    """``["dpo.beta=0.5", "sft.lr=1e-4"]`` -> ``{"dpo": {"beta": 0.5}, "sft": {"lr": 1e-4}}``."""
    from harness.config import parse_scalar

    out: dict[str, dict[str, Any]] = {}
    for item in items or []:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise UserError(where, item, "expected ALGORITHM.KEY=VALUE, e.g. dpo.beta=0.5")
        key, value = item.split("=", 1)
        algo, name = key.split(".", 1)
        if not value:
            raise UserError(where, item, "empty value")
        out.setdefault(algo, {})[name] = parse_scalar(value)
    return out


def parse_sweeps(items: list[str] | None, where: str = "--sweep") -> dict[str, dict[str, list[Any]]]:
    """``["dpo.beta=0.05,0.1,0.5"]`` -> ``{"dpo": {"beta": [0.05, 0.1, 0.5]}}``."""
    from harness.config import parse_scalar

    out: dict[str, dict[str, list[Any]]] = {}
    for item in items or []:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise UserError(where, item, "expected ALGORITHM.KEY=V1,V2,..., e.g. dpo.beta=0.05,0.1,0.5")
        key, values = item.split("=", 1)
        algo, name = key.split(".", 1)
        vals = [parse_scalar(v) for v in values.split(",") if v.strip() != ""]
        if not vals:
            raise UserError(where, item, "no values")
        out.setdefault(algo, {})[name] = list(dict.fromkeys(vals))
    return out


def load_sweep_file(path: str) -> dict[str, Any]:
    """A sweep YAML: ``algorithms``, ``seeds``, ``preset``, ``sweep`` ({algo.key: [values]}) and ``set``
    ({algo.key: value}); every key optional, unknown keys rejected."""
    import yaml

    where = str(path)
    try:
        data = yaml.safe_load(open(path, encoding="utf-8").read())
    except FileNotFoundError:
        raise UserError(where, None, "sweep file not found") from None
    except yaml.YAMLError as e:
        raise UserError(where, None, f"YAML syntax error: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise UserError(where, None, "a sweep file must be a YAML mapping")
    allowed = {"algorithms", "seeds", "preset", "sweep", "set"}
    for k in data:
        if k not in allowed:
            raise UserError(where, str(k), f"unknown key; allowed: {', '.join(sorted(allowed))}")
    out: dict[str, Any] = {}
    if "algorithms" in data:
        algos = data["algorithms"]
        if not isinstance(algos, list) or not all(isinstance(a, str) for a in algos):
            raise UserError(where, "algorithms", "expected a list of algorithm names")
        out["algorithms"] = algos
    if "seeds" in data:
        seeds_ = data["seeds"]
        if not isinstance(seeds_, list) or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in seeds_):
            raise UserError(where, "seeds", "expected a list of non-negative integers")
        out["seeds"] = seeds_
    if "preset" in data:
        out["preset"] = str(data["preset"])
    for section, parse in (("sweep", True), ("set", False)):
        block = data.get(section) or {}
        if not isinstance(block, dict):
            raise UserError(where, section, "expected a mapping of ALGORITHM.KEY to values")
        items = []
        for k, v in block.items():
            if parse:
                if not isinstance(v, list) or not v:
                    raise UserError(where, f"{section}.{k}", "expected a non-empty list of values")
                items.append(f"{k}=" + ",".join(yaml.safe_dump(x, default_flow_style=True).strip().removesuffix("...").strip() for x in v))
            else:
                items.append(f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}")
        out[section] = items
    return out


def parse_seeds(text: str, where: str = "--seeds") -> list[int]:
    try:
        values = [int(s) for s in text.split(",") if s.strip() != ""]
    except ValueError:
        raise UserError(where, text, "expected comma-separated non-negative integers, e.g. 0,1,2") from None
    if not values or any(v < 0 for v in values):
        raise UserError(where, text, "expected comma-separated non-negative integers, e.g. 0,1,2")
    return list(dict.fromkeys(values))


def suite_identity(suite: Suite, preset_name: str) -> dict:
    from harness.hashing import non_default

    d = suite.as_dict()
    d.pop("presets")
    d.pop("description")
    d["judge"] = non_default(suite.judge)
    return {"suite": d, "preset_name": preset_name, "preset": dataclasses.asdict(suite.preset(preset_name))}


def plan_runs(suite: Suite, preset_name: str, algorithms: list[str], seed_list: list[int],
              overrides: dict[str, dict[str, Any]], sampler: str = "hf",
              sweeps: dict[str, dict[str, list[Any]]] | None = None,
              eval_checkpoints: int | None = None) -> list[RunSpec]:
    """Every (algorithm, hyperparameter point, seed) to run. Each algorithm's swept keys form a grid
    (their cross product); grids of different algorithms are independent; all are crossed with seeds."""
    import itertools

    preset = suite.preset(preset_name)
    sweeps = sweeps or {}
    names = list(dict.fromkeys([REFERENCE] + [a for a in algorithms if a != REFERENCE]))
    specs = {a: registry.get(a) for a in names}
    for flag, given in (("--set", overrides), ("--sweep", sweeps)):
        for algo in given:
            if algo not in specs:
                registry.get(algo, flag)
                raise UserError(flag, algo, f"algorithm not among --algorithms ({', '.join(names[1:])})")
    for algo in preset.algorithms:
        if algo not in {s.name for s in registry.all_specs()}:
            raise UserError(f"{suite.path}: presets.{preset_name}.algorithms", algo, "unknown algorithm")
    base = suite_identity(suite, preset_name)
    if eval_checkpoints is not None:
        base["preset"]["eval_checkpoints"] = eval_checkpoints
    plan = []
    for algo in names:
        values = dict(preset.algorithms.get(algo, {}))
        # preset values are checked on their own first, so a bad one names the suite file
        specs[algo].make_config(values, f"{suite.path}: presets.{preset_name}.algorithms")
        values.update(overrides.get(algo, {}))
        specs[algo].make_config(values, "--set")
        grid = sweeps.get(algo, {})
        for point in itertools.product(*grid.values()):
            config = specs[algo].make_config({**values, **dict(zip(grid, point))}, "--sweep" if grid else "--set")
            variant = specs[algo].cls(config).variant()
            for seed in seed_list:
                identity = {**base, "algorithm": algo, "variant": variant,
                            "hyperparameters": dataclasses.asdict(config), "seed": seed, "sampler": sampler}
                run_id = f"{algo}-s{seed}-{content_hash(identity, 10)}"
                plan.append(RunSpec(algo, config, seed, variant, run_id, identity))
    return plan


class TrainContext:
    """What an algorithm's ``train`` sees: shared artifacts, its seed, logging and checkpoint hooks."""

    def __init__(self, art, seed: int, run_dir: Path, n_checkpoints: int, evaluate_checkpoint,
                 resume_dir: Path | None = None, save_every: int = 0):
        self.resume_dir = resume_dir  # mid-run checkpoints (harness/resume.py); None: the backend has none
        self.save_every = save_every
        self.art = art
        self.seed = seed
        self.run_dir = run_dir
        self.n_checkpoints = n_checkpoints
        self._evaluate_checkpoint = evaluate_checkpoint
        self._log = open(run_dir / "train_log.jsonl", "a")
        self.trajectory: list[dict] = []
        self.extra: dict = {}  # run-level facts an algorithm records (e.g. reward-model accuracy)

    @property
    def tokenizer(self):
        return self.art.tokenizer

    @property
    def train_pairs(self):
        return self.art.train_pairs

    @property
    def max_length(self) -> int:
        return self.art.suite.policy.max_length

    def init_policy(self):
        """A fresh, trainable copy of π_ref: every algorithm starts from the same weights."""
        import torch

        torch.manual_seed(seeds.derive(self.seed, "policy-init"))  # seeds any newly initialised heads
        model = self.art.load_reference()
        disable_dropout(model)
        model.train()
        return model

    def say(self, msg: str) -> None:
        say(f"  {msg}")

    def flush_log(self) -> None:
        self._log.flush()

    def restore(self, trajectory: list, extra: dict, log_text: str) -> None:
        """State saved with a mid-run checkpoint: evaluations so far, recorded facts, the step log."""
        self.trajectory = list(trajectory)
        self.extra = dict(extra)
        self._log.seek(0)
        self._log.truncate()
        self._log.write(log_text)

    def log(self, step: int, **metrics) -> None:
        import json

        self._log.write(json.dumps({"step": step, **metrics}) + "\n")

    def record(self, **facts) -> None:
        """Store run-level facts with the run's metrics (``metrics.json`` -> ``extra``)."""
        self.extra.update(facts)

    def checkpoint_steps(self, total: int) -> list[int]:
        n = self.n_checkpoints
        return sorted({max(1, round(total * k / (n + 1))) for k in range(1, n + 1)}) if n else []

    def checkpoint(self, step: int, model) -> None:
        metrics = self._evaluate_checkpoint(model, f"step {step}")
        self.trajectory.append({"step": step, **metrics})
        model.train()

    def close(self) -> None:
        self._log.close()


def disable_dropout(model) -> None:
    """Fine-tuning runs without dropout (as TRL does for DPO): with it, log π_θ in train mode differs
    from the cached log π_ref even at step 0, which biases implicit rewards and the first gradients."""
    import torch

    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    for key in ("resid_pdrop", "embd_pdrop", "attn_pdrop", "attention_dropout", "hidden_dropout", "dropout"):
        if hasattr(model.config, key):
            setattr(model.config, key, 0.0)


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


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
    from harness.evaluate import evaluate_policy

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
