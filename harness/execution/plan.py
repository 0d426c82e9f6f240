"""The plan: a request (suite, preset, algorithms, overrides, sweeps, seeds) resolved into runs.

Everything a run depends on is resolved and validated here, before any compute: the suite, the
preset, the algorithms and their hyperparameters (registry defaults < the preset's per-algorithm
values < ``--set``). The run id is a hash of that resolved identity, so a finished run is found again
and never recomputed unless forced.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import registry
from harness.core.errors import UserError
from harness.core.hashing import content_hash
from harness.evaluation.sampling import DEFAULT_SAMPLER
from harness.suites.spec import Suite

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
    from harness.core.config import parse_scalar

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
    from harness.core.config import parse_scalar

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
    """The suite fields a run depends on. The preset enters without its ``algorithms:`` section: a run's
    hyperparameters are hashed once resolved (``hyperparameters`` in the identity), so another
    algorithm's preset values, or a default written out explicitly, leave the run id unchanged."""
    from harness.core.hashing import non_default

    d = suite.as_dict()
    d.pop("presets")
    d.pop("description")
    d["judge"] = non_default(suite.judge)
    preset = dataclasses.asdict(suite.preset(preset_name))
    preset.pop("algorithms")
    return {"suite": d, "preset_name": preset_name, "preset": preset}


def plan_runs(suite: Suite, preset_name: str, algorithms: list[str], seed_list: list[int],
              overrides: dict[str, dict[str, Any]], sampler: str,
              sweeps: dict[str, dict[str, list[Any]]] | None = None,
              eval_checkpoints: int | None = None, artifacts: dict | None = None) -> list[RunSpec]:
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
    if artifacts is not None:  # content hashes of π_SFT, pairs and baseline: a change to how they are made
        base["artifacts"] = artifacts  # (generator, prompt split, a pairs file's contents) is another run
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




@dataclass
class Request:
    """A ``prefbench run`` request as the user wrote it: raw strings from flags and the sweep file."""
    suite: str
    preset: str | None = None
    algorithms: str | None = None
    seeds: str | None = None
    sets: list[str] | None = None
    sweeps: list[str] | None = None
    sweep_file: str | None = None
    eval_checkpoints: int | None = None
    sampler: str = DEFAULT_SAMPLER


@dataclass
class Plan:
    suite: Suite
    preset: str
    runs: list[RunSpec]
    sampler: Any  # the resolved sampler object (``auto`` already decided)
    artifacts: Any  # the suite's shared artifacts (SuiteArtifacts), not built yet


def make_plan(req: Request, cache_root: Path) -> Plan:
    """Resolve a request into a plan of runs, validating everything before any compute.

    Precedence: command-line flags > the sweep file > defaults (preset ``smoke``, algorithms sft,dpo,
    seed 0); hyperparameters: registry defaults < the preset's ``algorithms:`` section < ``set`` <
    ``sweep``. The sampler is resolved here (``auto`` picks its engine from the job size), so the run
    ids record the engine that actually samples.
    """
    from harness.evaluation.sampling import get_sampler
    from harness.suites.spec import load_suite

    if req.eval_checkpoints is not None and req.eval_checkpoints < 0:
        raise UserError("--eval-checkpoints", str(req.eval_checkpoints), "must be >= 0")
    sweep_file = load_sweep_file(req.sweep_file) if req.sweep_file else {}
    suite = load_suite(req.suite)
    preset = req.preset or sweep_file.get("preset") or "smoke"
    suite.preset(preset, "--preset" if req.preset else f"{req.sweep_file}: preset")
    if req.algorithms is not None:
        algorithms = [a.strip() for a in req.algorithms.split(",") if a.strip()]
        if not algorithms:
            raise UserError("--algorithms", req.algorithms, "no algorithm named")
    else:
        algorithms = sweep_file.get("algorithms") or ["sft", "dpo"]
        if not algorithms:
            raise UserError(f"{req.sweep_file}: algorithms", None, "no algorithm named")
    for a in algorithms:
        registry.get(a)
    seed_list = parse_seeds(req.seeds) if req.seeds is not None else (sweep_file.get("seeds") or [0])
    sets = parse_sets(sweep_file.get("set", []), f"{req.sweep_file}: set")
    for algo, vals in parse_sets(req.sets).items():
        sets.setdefault(algo, {}).update(vals)
    sweeps = parse_sweeps(sweep_file.get("sweep", []), f"{req.sweep_file}: sweep")
    for algo, grid in parse_sweeps(req.sweeps).items():
        sweeps.setdefault(algo, {}).update(grid)
    ev = suite.evaluation
    sampler = get_sampler(req.sampler, job_tokens=suite.preset(preset).eval_prompts * ev.samples_per_prompt
                          * ev.max_new_tokens)
    from harness.adapters import check_patches
    from harness.execution.artifacts import SuiteArtifacts

    libraries = {lib for a in algorithms for lib in registry.get(a).cls.patched_libraries}
    if sampler.name == "vllm":
        libraries.add("vllm")
    check_patches(libraries)  # a library patch meeting another version stops here, not mid-sweep
    art = SuiteArtifacts(suite, preset, cache_root, sampler)
    art.check_prompts()  # the preset's prompts exist (and a pairs file leaves enough): before any compute
    runs = plan_runs(suite, preset, algorithms, seed_list, sets, sampler.name, sweeps, req.eval_checkpoints,
                     art.hashes())
    return Plan(suite, preset, runs, sampler, art)
