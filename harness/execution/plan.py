"""The plan: a request (suite, preset, algorithms, overrides, sweeps, seeds) resolved into runs.

Everything a run depends on is resolved and validated here, before any compute: the suite, the
preset, the algorithms and their hyperparameters (registry defaults < the preset's per-algorithm
values < ``--set``). The run id is a hash of that resolved identity, so a finished run is found again
and never recomputed unless forced.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import registry
from harness.core.errors import UserError, short_repr
from harness.core.hashing import content_hash
from harness.evaluation.sampling import DEFAULT_SAMPLER
from harness.suites.spec import Suite

REFERENCE = "reference"
MAX_RUNS = 10_000  # runs in one plan (sweep grid points x seeds)
MAX_SEED = 2 ** 32 - 1
MAX_TRAIN_STEPS = 100_000  # optimizer steps of one run (epochs x pairs / batch_size)


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
        from harness.training.hparams import identity_hyperparameters

        return identity_hyperparameters(dataclasses.asdict(self.config))


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
        out.setdefault(algo, {})[name] = parse_scalar(value, f"{where}: {key}")
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
        vals = [parse_scalar(v, f"{where}: {key}") for v in values.split(",") if v.strip() != ""]
        if not vals:
            raise UserError(where, item, "no values")
        out.setdefault(algo, {})[name] = _distinct(vals)
    return out


def _distinct(values: list[Any]) -> list[Any]:
    """Values without repeats, in order (1 and 1.0 count as one; lists and mappings by their repr)."""
    seen, out = set(), []
    for v in values:
        try:
            key = ("h", v) if not isinstance(v, (list, dict)) else ("r", repr(v))
            hash(key)
        except TypeError:
            key = ("r", repr(v))
        if key not in seen:
            seen.add(key)
            out.append(v)
    return out


def load_sweep_file(path: str) -> dict[str, Any]:
    """A sweep YAML: ``algorithms``, ``seeds``, ``preset``, ``sweep`` ({algo.key: [values]}) and ``set``
    ({algo.key: value}); every key optional, unknown keys rejected."""
    import yaml

    from harness.core.config import MAX_YAML_BYTES, load_yaml, read_text_file

    where = str(path)
    if not where:
        raise UserError("--sweep-file", None, "empty path")
    data = load_yaml(read_text_file(path, where, "sweep file", MAX_YAML_BYTES), where)
    if not isinstance(data, dict):
        raise UserError(where, None, "a sweep file must be a YAML mapping")
    allowed = {"algorithms", "seeds", "preset", "sweep", "set"}
    for k in data:
        if k not in allowed:
            raise UserError(where, str(k), f"unknown key; allowed: {', '.join(sorted(allowed))}")
    out: dict[str, Any] = {}
    if "algorithms" in data:
        algos = data["algorithms"]
        if not isinstance(algos, list) or not algos or not all(isinstance(a, str) and a.strip() for a in algos):
            raise UserError(where, "algorithms", "expected a non-empty list of algorithm names")
        out["algorithms"] = algos
    if "seeds" in data:
        seeds_ = data["seeds"]
        if not isinstance(seeds_, list) or not seeds_ or not all(
                isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= MAX_SEED for x in seeds_):
            raise UserError(where, "seeds", f"expected a non-empty list of integers in 0..{MAX_SEED}")
        out["seeds"] = list(dict.fromkeys(seeds_))
    if "preset" in data:
        if not isinstance(data["preset"], str) or not data["preset"]:
            raise UserError(where, "preset", "expected a preset name")
        out["preset"] = data["preset"]
    for section, parse in (("sweep", True), ("set", False)):
        block = data.get(section) or {}
        if not isinstance(block, dict):
            raise UserError(where, section, "expected a mapping of ALGORITHM.KEY to values")
        items = []
        for k, v in block.items():
            if not isinstance(k, str):
                raise UserError(where, f"{section}.{k}", "expected a key ALGORITHM.KEY")
            if parse:
                if not isinstance(v, list) or not v:
                    raise UserError(where, f"{section}.{k}", "expected a non-empty list of values")
                items.append(f"{k}=" + ",".join(yaml.safe_dump(x, default_flow_style=True).strip().removesuffix("...").strip() for x in v))
            else:
                items.append(f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}")
        out[section] = items
    return out


def parse_seeds(text: str, where: str = "--seeds") -> list[int]:
    parts = [s.strip() for s in text.split(",") if s.strip() != ""]
    # ASCII digits only: int() would also take "1_000", "+1" and other scripts' digits
    if not parts or not all(p.isascii() and p.isdigit() and len(p) <= 10 and int(p) <= MAX_SEED for p in parts):
        raise UserError(where, text, f"expected comma-separated integers in 0..{MAX_SEED}, e.g. 0,1,2")
    return list(dict.fromkeys(int(p) for p in parts))


def suite_identity(suite: Suite, preset_name: str) -> dict:
    """The suite fields a run depends on. The preset enters without its ``algorithms:`` section: a run's
    hyperparameters are hashed once resolved (``hyperparameters`` in the identity), so another
    algorithm's preset values, or a default written out explicitly, leave the run id unchanged."""
    from harness.core.hashing import non_default

    from harness.suites.spec import hash_view

    d = suite.as_dict()
    for section in ("pairs", "data", "policy", "prompts", "evaluation"):  # fields added later: only when set
        d[section] = hash_view(getattr(suite, section))
    d.pop("presets")
    d.pop("description")
    d["judge"] = non_default(suite.judge)
    # the lora: block enters through each run's resolved lora_* hyperparameters; the precision as resolved
    # (plan_runs): a suite that leaves both at their defaults keeps its run ids
    d.pop("lora", None)
    d.pop("precision", None)
    preset = dataclasses.asdict(suite.preset(preset_name))
    preset.pop("algorithms")
    preset.pop("lora", None)
    preset.pop("evaluation", None)  # it enters as the suite's evaluation block (Suite.for_preset)
    return {"suite": d, "preset_name": preset_name, "preset": preset}


def lora_defaults(suite: Suite, preset_name: str, config_cls) -> dict:
    """The suite's (and preset's) lora: block as ``lora_*`` hyperparameter values, for an algorithm
    whose config has them; only the keys that differ from the config's defaults (run ids stay put)."""
    fields = {f.name: f.default for f in dataclasses.fields(config_cls)}
    if "lora_r" not in fields and "rm_lora_r" not in fields:
        return {}
    spec = suite.lora_for(preset_name)
    values = {}
    for prefix in ("", "rm_"):  # the policy's (native trainers) and the learned reward model's (TRL)
        values.update({f"{prefix}lora_r": spec.r, f"{prefix}lora_alpha": spec.alpha,
                       f"{prefix}lora_dropout": spec.dropout, f"{prefix}lora_target_modules": spec.target_modules})
    return {k: v for k, v in values.items() if k in fields and v != fields[k]}


def plan_runs(suite: Suite, preset_name: str, algorithms: list[str], seed_list: list[int],
              overrides: dict[str, dict[str, Any]], sampler: str,
              sweeps: dict[str, dict[str, list[Any]]] | None = None,
              eval_checkpoints: int | None = None, artifacts: dict | None = None,
              set_where: str = "--set", sweep_where: str = "--sweep", precision: str = "fp32") -> list[RunSpec]:
    """Every (algorithm, hyperparameter point, seed) to run. Each algorithm's swept keys form a grid
    (their cross product); grids of different algorithms are independent; all are crossed with seeds.
    ``set_where``/``sweep_where`` name where overrides and sweeps came from in error messages.
    ``precision``: the resolved one (harness.training.device); bf16 enters the identity, fp32 does not."""
    import itertools

    from harness.training.hparams import identity_hyperparameters

    preset = suite.preset(preset_name)
    sweeps = sweeps or {}
    names = list(dict.fromkeys([REFERENCE] + [a for a in algorithms if a != REFERENCE]))
    n_runs = sum(math.prod(len(v) for v in sweeps.get(a, {}).values()) for a in names) * len(seed_list)
    if n_runs > MAX_RUNS:
        raise UserError(sweep_where if sweeps else "--seeds", None,
                        f"{n_runs:,} runs (sweep grid points x {len(seed_list)} seeds); at most {MAX_RUNS:,} in one plan")
    specs = {a: registry.get(a) for a in names}
    for flag, given in ((set_where, overrides), (sweep_where, sweeps)):
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
    if precision != "fp32":
        base["precision"] = precision
    plan = []
    for algo in names:
        lora = lora_defaults(suite, preset_name, specs[algo].config_cls)
        values = {**lora, **dict(preset.algorithms.get(algo, {}))}
        # preset values are checked on their own first, so a bad one names the suite file
        specs[algo].make_config(values, f"{suite.path}: presets.{preset_name}.algorithms")
        values.update(overrides.get(algo, {}))
        specs[algo].make_config(values, set_where)
        grid = sweeps.get(algo, {})
        for point in itertools.product(*grid.values()):
            config = specs[algo].make_config({**values, **dict(zip(grid, point))}, sweep_where if grid else set_where)
            variant = specs[algo].cls(config).variant()
            for seed in seed_list:
                identity = {**base, "algorithm": algo, "variant": variant,
                            "hyperparameters": identity_hyperparameters(dataclasses.asdict(config)), "seed": seed,
                            "sampler": sampler}
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
    device: str = "auto"                   # resources: never part of a run's identity (bf16 precision is)
    micro_batch_size: int | None = None
    gradient_checkpointing: bool = False


@dataclass
class Plan:
    suite: Suite
    preset: str
    runs: list[RunSpec]
    sampler: Any  # the resolved sampler object (``auto`` already decided)
    artifacts: Any  # the suite's shared artifacts (SuiteArtifacts), not built yet
    resources: Any = None  # harness.training.device.Resources: device, precision, micro-batch (resolved)


def make_plan(req: Request, cache_root: Path) -> Plan:
    """Resolve a request into a plan of runs, validating everything before any compute.

    Precedence: command-line flags > the sweep file > defaults (preset ``smoke``, algorithms sft,dpo,
    seed 0); hyperparameters: registry defaults < the preset's ``algorithms:`` section < ``set`` <
    ``sweep``. The sampler is resolved here (``auto`` picks its engine from the job size), so the run
    ids record the engine that actually samples.
    """
    from harness.evaluation.sampling import get_sampler
    from harness.suites.spec import MAX_EVAL_CHECKPOINTS, load_suite

    if req.eval_checkpoints is not None and not 0 <= req.eval_checkpoints <= MAX_EVAL_CHECKPOINTS:
        raise UserError("--eval-checkpoints", str(req.eval_checkpoints), f"must be in 0..{MAX_EVAL_CHECKPOINTS}")
    sweep_file = load_sweep_file(req.sweep_file) if req.sweep_file is not None else {}
    if not req.suite:
        raise UserError("SUITE", None, "empty suite name")
    suite = load_suite(req.suite)
    check_model_size(suite)
    from harness.suites.sources import check_sources

    check_sources(suite)  # the model and tokenizer exist here (folder, HF cache, GGUF), a chat template if asked
    if req.preset is not None and not req.preset:
        raise UserError("--preset", None, "empty preset name")
    preset = req.preset or sweep_file.get("preset") or "smoke"
    suite.preset(preset, "--preset" if req.preset else f"{req.sweep_file}: preset")
    suite = suite.for_preset(preset)  # the preset's evaluation: overrides (e.g. a temperature axis)
    if req.algorithms is not None:
        algorithms = [a.strip() for a in req.algorithms.split(",") if a.strip()]
        if not algorithms:
            raise UserError("--algorithms", req.algorithms, "no algorithm named")
    else:
        algorithms = sweep_file.get("algorithms") or ["sft", "dpo"]  # the file's list is never empty
    for a in algorithms:
        if len(a) > 100:
            raise UserError("--algorithms", a, "unknown algorithm (names are short)")
        registry.get(a)
    seed_list = parse_seeds(req.seeds) if req.seeds is not None else (sweep_file.get("seeds") or [0])
    file_sets = parse_sets(sweep_file.get("set", []), f"{req.sweep_file}: set")
    file_sweeps = parse_sweeps(sweep_file.get("sweep", []), f"{req.sweep_file}: sweep")
    cli_sets, cli_sweeps = parse_sets(req.sets), parse_sweeps(req.sweeps)
    sets = {a: dict(v) for a, v in file_sets.items()}
    for algo, vals in cli_sets.items():
        sets.setdefault(algo, {}).update(vals)
    sweeps = {a: dict(v) for a, v in file_sweeps.items()}
    for algo, grid in cli_sweeps.items():
        sweeps.setdefault(algo, {}).update(grid)
    # every hyperparameter (preset, the sweep file, --set, --sweep) is checked here, before torch is imported;
    # the sweep file's own values first, so that a bad one names the file
    if file_sets or file_sweeps:
        plan_runs(suite, preset, algorithms, seed_list, file_sets, req.sampler, file_sweeps, req.eval_checkpoints,
                  set_where=f"{req.sweep_file}: set", sweep_where=f"{req.sweep_file}: sweep")
    draft = plan_runs(suite, preset, algorithms, seed_list, sets, req.sampler, sweeps, req.eval_checkpoints)
    pairs_table = read_pairs_table(suite)  # a pairs file is read and checked whole, before any compute
    origin = {}  # (algorithm, key) -> where its value came from: command line over sweep file
    for where, given in ((f"{req.sweep_file}: set", file_sets), ("--set", cli_sets),
                         (f"{req.sweep_file}: sweep", file_sweeps), ("--sweep", cli_sweeps)):
        origin.update({(a, k): where for a, vals in given.items() for k in vals})
    check_training_steps(suite, preset, draft, origin, max_pairs(suite, preset, pairs_table))
    ev = suite.evaluation
    # `auto`: one engine samples every evaluation of the sweep (its start is paid once), so the job is all
    # of them: each run's final evaluation and its checkpoint evaluations
    evaluations = sum(1 + r.identity["preset"]["eval_checkpoints"] for r in draft)
    sampler = get_sampler(req.sampler, job_tokens=evaluations * suite.preset(preset).eval_prompts
                          * ev.samples_per_prompt * ev.max_new_tokens)
    from harness.adapters import check_patches
    from harness.execution.artifacts import SuiteArtifacts

    libraries = {lib for a in algorithms for lib in registry.get(a).cls.patched_libraries}
    if sampler.name == "vllm":
        libraries.add("vllm")
    check_patches(libraries)  # a library patch meeting another version stops here, not mid-sweep
    art = SuiteArtifacts(suite, preset, cache_root, sampler)
    art.read_only = True
    if pairs_table is not None:
        art.pair_prompts = list(dict.fromkeys(pairs_table.prompt.tolist()))  # the checked file's distinct prompts
    art.check_prompts()  # the preset's prompts exist (and a pairs file leaves enough): before any compute
    if suite.pairs.kind == "dataset":  # the dataset's schema, load checks and length policy (prefbench check's)
        from harness.suites.datasets import preflight_pairs

        preflight_pairs(art)
    check_prompt_context(suite, art)
    check_lora_targets(suite, draft, origin, preset)
    from harness.training import device

    # device and precision last: resolving them imports torch; one line and exit 2 if the machine lacks them
    resources = device.configure(device.resolve(req.device, suite.precision, req.micro_batch_size,
                                                req.gradient_checkpointing, precision_where=f"{suite.path}: precision"))
    runs = plan_runs(suite, preset, algorithms, seed_list, sets, sampler.name, sweeps, req.eval_checkpoints,
                     art.hashes(), precision=resources.precision)
    check_micro_batches(runs, resources.micro_batch_size)
    return Plan(suite, preset, runs, sampler, art, resources)


def check_micro_batches(runs: list[RunSpec], micro: int | None) -> None:
    """Gradient accumulation reproduces the batch's update only for a loss that is a mean over
    independent examples: an algorithm whose loss couples the batch (KTO's reference point) is refused
    micro-batches smaller than its batch, before any compute."""
    from harness.training.distributed import BATCH_COUPLED

    for run in runs:
        size = run.hyperparameters.get("batch_size")
        if micro is not None and run.algorithm in BATCH_COUPLED and size and micro < size:
            raise UserError("--micro-batch-size", str(micro), f"{run.algorithm}: {BATCH_COUPLED[run.algorithm]}, so "
                            f"micro-batches would change its update; use at least its batch_size ({size}) or none")


# module names of the architectures whose layers are known without loading the model (LoRA targets)
KNOWN_MODULES = {
    "gpt2": {"c_attn", "c_proj", "c_fc", "lm_head", "wte", "wpe"},
    "llama": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head", "embed_tokens"},
}
KNOWN_MODULES["mistral"] = KNOWN_MODULES["qwen2"] = KNOWN_MODULES["llama"]


def model_type(suite: Suite) -> str | None:
    """The policy's model type without loading it: the config architecture, or a local folder's config.json."""
    p = suite.policy
    if p.kind == "config":
        return p.architecture
    if p.kind == "gguf":  # the file's header names its architecture (read without loading the weights)
        try:
            from gguf import GGUFReader

            from harness.suites.sources import gguf_path

            field = GGUFReader(str(gguf_path(suite))).fields["general.architecture"]
            return bytes(field.parts[field.data[0]]).decode()
        except Exception:  # noqa: BLE001 -- unknown here; the check then runs when the model is built
            return None
    if p.name_or_path:
        import json

        cfg = Path(p.name_or_path) / "config.json"
        try:
            if cfg.is_file() and cfg.stat().st_size < 10 ** 6:
                t = json.loads(cfg.read_text(encoding="utf-8")).get("model_type")
                return t if isinstance(t, str) else None
        except (OSError, ValueError, AttributeError):
            return None
    return None


def check_lora_targets(suite: Suite, runs: list[RunSpec], origin: dict, preset: str) -> None:
    """LoRA target modules the model lacks: one line before any compute (where the model's module names
    are known without loading it; otherwise when the policy is built)."""
    if not any(getattr(r.config, f"{x}lora_r", 0) and getattr(r.config, f"{x}lora_target_modules", "all-linear")
               .strip() != "all-linear" for r in runs for x in ("", "rm_")):
        return  # nothing named: no need to know the model's modules
    known = KNOWN_MODULES.get(model_type(suite) or "")
    if known is None:
        return
    for run in runs:
        for prefix in ("", "rm_"):
            targets = getattr(run.config, f"{prefix}lora_target_modules", None)
            if not getattr(run.config, f"{prefix}lora_r", 0) or targets is None or targets.strip() == "all-linear":
                continue
            names = [t.strip() for t in targets.split(",") if t.strip()]
            missing = [t for t in names if t not in known]
            if missing or not names:
                key = f"{prefix}lora_target_modules"
                where = origin.get((run.algorithm, key), f"{suite.path}: lora.target_modules")
                raise UserError(where, ",".join(missing) or targets,
                                f"{model_type(suite)} models have no such module ({run.algorithm}.{key}); they have: "
                                f"{', '.join(sorted(known - {'wte', 'wpe', 'embed_tokens'}))} (or all-linear)")


# ---------------------------------------------------------------------- preflight: resources
def max_pairs(suite: Suite, preset: str, pairs_table) -> int:
    """An upper bound on the preference pairs a run trains on: the file's rows, or every pair of the
    samples of every training prompt."""
    if pairs_table is not None:
        return len(pairs_table)
    k = suite.pairs.samples_per_prompt
    return suite.preset(preset).train_prompts * k * (k - 1) // 2


def read_pairs_table(suite: Suite):
    """With ``pairs.kind: file``, the file read and checked whole (encoding, format, columns, types,
    every row, prompts within the context), so a malformed file stops the plan instead of failing runs
    after π_SFT is built; None for sampled pairs."""
    if suite.pairs.kind != "file":
        return None
    from harness.suites.pairs import load_pairs_table

    path = suite.resolve_path(suite.pairs.path)
    table = load_pairs_table(path)
    L = suite.policy.max_length
    for i, p in enumerate(table.prompt):
        if 1 + len(p.split()) >= L:  # BOS and at least a token per word: read_pairs_file would refuse it later
            raise UserError(str(path), f"row {i + 1}: prompt", f"{len(p.split())} words (at least as many tokens), "
                            f"too long for the model context policy.max_length={L}")
    return table


def check_prompt_context(suite: Suite, art) -> None:
    """Prompts and completions fit the context: BOS, at least one token per prompt word and
    ``max_new_tokens`` must fit ``policy.max_length`` (the exact token count is checked again once the
    tokenizer exists)."""
    L = suite.policy.max_length
    checks = [("evaluation.max_new_tokens", suite.evaluation.max_new_tokens, art.eval_prompts)]
    if suite.pairs.kind == "sampled":
        checks.append(("pairs.max_new_tokens", suite.pairs.max_new_tokens, art.pair_prompts))
    for field, new, prompts in checks:
        if not prompts:
            continue
        worst = max(prompts, key=lambda p: len(p.split()))
        words = len(worst.split())
        if 1 + words + new > L:
            raise UserError(suite.path, field, f"got {new}: prompt {worst[:40]!r} has {words} words (at least as "
                            f"many tokens); with BOS and {new} new tokens it exceeds policy.max_length={L}")


def check_training_steps(suite: Suite, preset: str, runs: list[RunSpec], origin: dict, n_pairs: int) -> None:
    """epochs x pairs / batch_size stays within MAX_TRAIN_STEPS for every run that trains by epochs."""
    for run in runs:
        cfg = run.config
        epochs, bs = getattr(cfg, "epochs", None), getattr(cfg, "batch_size", None)
        if not isinstance(epochs, (int, float)) or not isinstance(bs, int) or bs < 1:
            continue
        steps = n_pairs * float(epochs) / bs
        if steps > MAX_TRAIN_STEPS:
            algo = run.algorithm
            where = origin.get((algo, "epochs"), f"{suite.path}: presets.{preset}.algorithms")
            raise UserError(where, f"{algo}.epochs", f"got {epochs:g}: up to {n_pairs:,} pairs x {epochs:g} epochs / "
                            f"batch_size {bs} = {steps:,.0f} optimizer steps; at most {MAX_TRAIN_STEPS:,}")


# keys of policy.config the harness sets itself (build_model): a suite that sets them too would crash the build
HARNESS_SET_KEYS = {"vocab_size": "the tokenizer's size", "n_positions": "policy.max_length",
                    "max_position_embeddings": "policy.max_length", "bos_token_id": "the tokenizer",
                    "eos_token_id": "the tokenizer", "pad_token_id": "the tokenizer"}
DIM_KEYS = {"gpt2": ("n_layer", "n_embd", "n_head", "n_inner"),
            "llama": ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
                      "num_key_value_heads")}
BYTES_PER_PARAMETER = 20  # fp32 training: weights, gradients, two AdamW moments, and the frozen π_ref


def physical_memory() -> int | None:
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def estimate_parameters(suite: Suite) -> int | None:
    """Parameters of a ``policy.kind: config`` model (embeddings, positions, blocks), before it is
    built; None for a pretrained one. The vocabulary is tokenizer.vocab_size for train_bpe."""
    p = suite.policy
    if p.kind != "config":
        return None
    from harness.training.models import ARCH_DEFAULTS

    c = {**ARCH_DEFAULTS[p.architecture], **p.config}
    V = suite.tokenizer.vocab_size if suite.tokenizer.kind == "train_bpe" else 0
    if p.architecture == "gpt2":
        d, L = c["n_embd"], c["n_layer"]
        inner = c.get("n_inner") or 4 * d
        return V * d + p.max_length * d + L * (4 * d * d + 2 * d * inner + 9 * d + 2 * inner) + 2 * d
    d, L, inter = c["hidden_size"], c["num_hidden_layers"], c.get("intermediate_size") or 4 * c["hidden_size"]
    kv = d * c.get("num_key_value_heads", c["num_attention_heads"]) // c["num_attention_heads"]
    return 2 * V * d + L * (2 * d * d + 2 * d * kv + 3 * d * inter + 2 * d) + d


def check_model_size(suite: Suite) -> None:
    """``policy.config`` of a ``kind: config`` model, as a one-line error naming the suite file."""
    problem = policy_config_problem(suite)
    if problem:
        raise UserError(suite.path, *problem)


def policy_config_problem(suite: Suite) -> tuple[str, str] | None:
    """``policy.config`` of a ``kind: config`` model: sizes are positive integers, heads divide the
    width, nothing the harness sets itself, and the model fits this machine's memory to train."""
    p = suite.policy
    if p.kind != "config":
        return None
    for key in p.config:
        if key in HARNESS_SET_KEYS:
            return f"policy.config.{key}", f"set by the harness from {HARNESS_SET_KEYS[key]}; remove it"
    for key in DIM_KEYS[p.architecture]:
        v = p.config.get(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 1 << 20:
            return f"policy.config.{key}", f"got {short_repr(v)}, expected an integer in 1..{1 << 20}"
    from harness.training.models import ARCH_DEFAULTS

    c = {**ARCH_DEFAULTS[p.architecture], **p.config}
    width, heads = (("n_embd", "n_head") if p.architecture == "gpt2" else ("hidden_size", "num_attention_heads"))
    if c[width] % c[heads]:
        return f"policy.config.{heads}", f"got {c[heads]}, must divide {width}={c[width]}"
    kv = c.get("num_key_value_heads")
    if p.architecture == "llama" and kv is not None and c[heads] % kv:
        return "policy.config.num_key_value_heads", f"got {kv}, must divide num_attention_heads={c[heads]}"
    n, mem = estimate_parameters(suite), physical_memory()
    if n is not None and mem and n * BYTES_PER_PARAMETER > mem:
        return "policy.config", (f"a model of about {n / 1e6:,.0f}M parameters needs about "
                                 f"{n * BYTES_PER_PARAMETER / 2**30:,.0f} GiB to train in fp32; this machine has "
                                 f"{mem / 2**30:,.0f} GiB (check n_embd/hidden_size, layers, policy.max_length, vocab_size)")
    return None
