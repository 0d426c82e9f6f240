"""Suite-level artifacts every run of a suite shares, built once and cached by content hash.

- ``reference``: the tokenizer and π_SFT (= π_ref), trained on the suite's corpus (or the base as is);
- ``pairs``: preference pairs made from π_SFT samples labelled by the judge (or read from a file);
- ``reflogps``: log π_ref(y|x) of every chosen and rejected response, for DPO-style losses;
- ``baseline``: π_SFT samples on the evaluation prompts, the opponent of every win rate.

Training (pair) and evaluation prompts are split by prompt text, not only by document: see
``PROMPT_SPLIT`` and :func:`make_prompts`; no evaluation prompt ever equals a pair prompt.

Each lives in ``<cache>/<suite>/<kind>-<hash>/``; the hash covers every input that changes it (suite
sections, preset sizes, generator versions, the upstream artifacts' hashes). A folder appears only
once complete (built under a temporary name, then renamed), so a crash never leaves a half-built
artifact that a later run would trust.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
import uuid
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from harness.core import faults, seeds
from harness.core.errors import UserError
from harness.core.hashing import content_hash, non_default
from harness.core.progress import progress
from harness.suites.spec import PresetSpec, Suite, hash_view

ARTIFACT_FORMAT = 1  # bump when the layout or the build code changes what an artifact holds


class ArtifactCache:
    def __init__(self, root: Path):
        self.root = Path(root)

    def resume_dir(self, kind: str, key: dict) -> Path:
        """Where a builder may keep a resumable checkpoint of the artifact it builds; removed once the
        artifact is in place (a build stopped by a signal continues from it next time)."""
        return self.root / f".resume-{kind}-{self._hash(kind, key)}"

    def _hash(self, kind: str, key: dict) -> str:
        return content_hash({"format": ARTIFACT_FORMAT, "kind": kind, **key})

    def existing(self, kind: str, key: dict) -> Path | None:
        """The artifact's folder if it was built, else None (nothing is created)."""
        final = self.root / f"{kind}-{self._hash(kind, key)}"
        return final if final.is_dir() else None

    def get_or_build(self, kind: str, key: dict, build: Callable[[Path], None]) -> tuple[Path, bool]:
        """(folder, built_now). ``build(tmp)`` fills a fresh folder that is renamed into place."""
        h = self._hash(kind, key)
        final = self.root / f"{kind}-{h}"
        if final.is_dir():
            return final, False
        self.root.mkdir(parents=True, exist_ok=True)
        # One builder at a time: a second process waits here, then finds the finished folder.
        # flock is released by the kernel when its holder dies, so a crashed builder never blocks.
        fd = os.open(self.root / f".{kind}-{h}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if final.is_dir():
                return final, False
            for old in self.root.glob(f".tmp-{kind}-{h}-*"):  # left by a builder that died
                shutil.rmtree(old, ignore_errors=True)
            tmp = self.root / f".tmp-{kind}-{h}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            tmp.mkdir()
            try:
                t0 = time.time()
                build(tmp)
                (tmp / "artifact.json").write_text(json.dumps(
                    {"kind": kind, "hash": h, "key": key, "build_seconds": round(time.time() - t0, 2)},
                    indent=1, default=str))
                faults.point(f"artifact:{kind}")
                os.rename(tmp, final)
                from harness.training.resume import clear

                clear(self.resume_dir(kind, key))
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
        finally:
            os.close(fd)
        return final, True


def load_corpus(suite: Suite, split: str | None = None) -> list[str]:
    """The suite's documents; ``split`` (hf_dataset, preference_chosen): another split than ``data.split``."""
    d = suite.data
    if d.kind == "synthetic_reviews":
        from harness.suites.reviews import generate_reviews

        return generate_reviews(d.n_documents, seeds.derive(suite.seed, "corpus"))
    if d.kind == "synthetic_instructions":
        from harness.suites.instructions import generate_instructions

        return generate_instructions(d.n_documents, seeds.derive(suite.seed, "corpus"))
    if d.kind == "text_file":
        path = suite.resolve_path(d.path)
        where = f"{suite.path}: data.path ({path})"
        if not path.is_file():
            raise UserError(where, None, "file not found")
        try:
            if path.suffix == ".jsonl":
                docs = []
                for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
                    if line.strip():
                        row = json.loads(line)
                        if not isinstance(row, dict) or not isinstance(row.get(d.text_field), str):
                            raise UserError(str(path), f"line {i + 1}: {d.text_field}", "missing or not a string")
                        docs.append(row[d.text_field])
            else:
                docs = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except UnicodeDecodeError:
            raise UserError(str(path), None, "not valid UTF-8") from None
        except json.JSONDecodeError as e:
            raise UserError(str(path), f"line {e.lineno}", f"invalid JSON: {e.msg}") from None
    elif d.kind == "preference_chosen":  # π_SFT's SFT data: prompt + chosen of pairs.dataset
        from harness.suites.datasets import chosen_corpus, suite_tokenizer

        docs = chosen_corpus(suite, suite_tokenizer(suite), split or d.split)
    else:  # hf_dataset: a hub id through datasets.load_dataset, or a local copy (harness/suites/datasets.py)
        from harness.suites.datasets import text_documents

        docs = text_documents(suite, split or d.split)
    if len(docs) < 10:
        raise UserError(suite.path, "data", f"only {len(docs)} non-empty documents; need at least 10")
    return docs


def split_corpus(docs: list[str], suite: Suite) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seeds.derive(suite.seed, "split"))
    order = rng.permutation(len(docs))
    n_held = max(1, int(round(len(docs) * suite.data.heldout_fraction)))
    return [docs[i] for i in order[n_held:]], [docs[i] for i in order[:n_held]]


# Prompts are split by their text, not by their document: a 2-5-word prefix such as "I watched this"
# opens hundreds of reviews, so a document split alone puts most evaluation prompts among the training
# ones. Each distinct prompt text (after normalisation) belongs to exactly one side, fixed by a seeded
# hash of that text alone, so no preset and no preset size can ever put one text on both sides.
PROMPT_SPLIT = 2  # in the pairs and baseline keys; bump when the rule below (or PROMPT_EVAL_SHARE) changes
PROMPT_EVAL_SHARE = 0.4  # share of distinct prompt texts that belong to the evaluation side


def prompt_key(text: str) -> str:
    """What two prompts must differ in to count as different: whitespace-normalised and case-folded."""
    return " ".join(text.split()).casefold()


def prompt_side(text: str, seed: int) -> str:
    """``eval`` or ``train``: a seeded hash of the normalised text, independent of anything else."""
    digest = hashlib.sha256(f"{int(seed)}/prompt-split/{prompt_key(text)}".encode()).digest()
    return "eval" if int.from_bytes(digest[:8], "little") < PROMPT_EVAL_SHARE * 2 ** 64 else "train"


def prompt_pool(docs: list[str], suite: Suite, side: str, exclude=()) -> list[str]:
    """Every distinct prefix of ``min_words``..``max_words`` words of ``docs`` (with at least one word
    left to continue) whose text belongs to ``side`` and is not in ``exclude``, in first-seen order."""
    if side not in ("train", "eval"):
        raise ValueError(f"side must be train or eval, got {side!r}")
    excluded = {prompt_key(p) for p in exclude}
    lo, hi = suite.prompts.min_words, suite.prompts.max_words
    pool: dict[str, str] = {}
    for doc in docs:
        if suite.prompts.kind == "document":  # the whole document is the prompt (instructions)
            key = prompt_key(doc)
            if lo <= len(doc.split()) <= hi and key not in pool and key not in excluded:
                pool[key] = " ".join(doc.split())
            continue
        words = doc.split(None, hi)
        for k in range(lo, min(hi, len(words) - 1) + 1):
            p = " ".join(words[:k])
            key = prompt_key(p)
            if key not in pool and key not in excluded:
                pool[key] = p
    return [p for p in pool.values() if prompt_side(p, suite.seed) == side]


def make_prompts(docs: list[str], suite: Suite, n: int, purpose: str, exclude=(),
                 field: str = "presets") -> list[str]:
    """``n`` distinct prompts of the ``purpose`` side (``train`` or ``eval``): a seeded draw from
    :func:`prompt_pool` of ``docs`` less any prompt in ``exclude`` (compared by :func:`prompt_key`).

    The draw is the first ``n`` of one seeded order of the pool, so (for the same ``exclude``) a smaller
    preset's prompts are a prefix of a larger one's, and the evaluation prompts never depend on how many
    training prompts there are.
    """
    pool = prompt_pool(docs, suite, purpose, exclude)
    if len(pool) < n:
        what = "held-out documents" if purpose == "eval" else "training documents"
        raise UserError(suite.path, field,
                        f"asked for {n} {purpose} prompts, the corpus yields only {len(pool)} (distinct "
                        f"{suite.prompts.min_words}-{suite.prompts.max_words}-word prefixes of the {what} "
                        f"on the {purpose} side of the prompt split)")
    rng = np.random.default_rng(seeds.derive(suite.seed, f"prompts-{purpose}"))
    return [pool[i] for i in rng.permutation(len(pool))[:n]]


def pairs_file_prompts(path: Path) -> list[str]:
    """The distinct prompts of a pairs file (.jsonl or .parquet), read without a tokenizer. Only the
    prompt column is read; the full strict check is ``harness.suites.pairs.read_pairs_file``."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise UserError(where, None, "preference file not found")
    try:
        if path.suffix == ".jsonl":
            prompts = []
            for i, line in enumerate(path.read_bytes().decode("utf-8").splitlines()):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise UserError(where, f"line {i + 1}", f"invalid JSON: {e.msg}") from None
                    if isinstance(row, dict) and isinstance(row.get("prompt"), str):
                        prompts.append(row["prompt"])
        elif path.suffix == ".parquet":
            df = pd.read_parquet(path)
            if "prompt" not in df.columns:
                raise UserError(where, "prompt", "missing column; required: prompt, chosen, rejected")
            prompts = [p for p in df.prompt.tolist() if isinstance(p, str)]
        else:
            raise UserError(where, None, "preference files must be .jsonl or .parquet")
    except UnicodeDecodeError:
        raise UserError(where, None, "not valid UTF-8") from None
    return list(dict.fromkeys(prompts))


class SuiteArtifacts:
    """The shared artifacts of one suite under one preset, built lazily and cached."""

    def __init__(self, suite: Suite, preset_name: str, cache_root: Path, sampler=None):
        self.suite = suite
        self.preset_name = preset_name
        self.preset: PresetSpec = suite.preset(preset_name)
        self.cache = ArtifactCache(Path(cache_root) / suite.name)
        self._sampler = sampler
        self.built: list[str] = []  # kinds built (not reused) by this process, for the user and tests
        self.read_only = False  # preflight (prefbench run's plan, prefbench check): nothing is written

    # ------------------------------------------------------------------ keys
    def _generator_version(self) -> int:
        if self.suite.data.kind == "synthetic_reviews":
            from harness.suites.reviews import GENERATOR_VERSION

            return GENERATOR_VERSION
        if self.suite.data.kind == "synthetic_instructions":
            from harness.suites.instructions import GENERATOR_VERSION

            return GENERATOR_VERSION
        return 0

    @cached_property
    def reference_key(self) -> dict:
        from harness.suites.sources import fingerprint

        s = self.suite
        steps = self.preset.reference_steps if self.preset.reference_steps is not None else s.reference.steps
        return {"suite": s.name, "seed": s.seed, "tokenizer": s.tokenizer, "policy": hash_view(s.policy), "data": hash_view(s.data),
                "reference": {**s.reference.__dict__, "steps": steps}, "generator": self._generator_version(),
                **({} if s.policy.kind == "config" else {"source": fingerprint(s)}),  # the loaded weights' identity
                **({"data_source": _dataset_digest(s, "data")} if s.data.kind in ("hf_dataset", "preference_chosen")
                   else {})}  # a dataset corpus: its files' contents or hub revision

    @cached_property
    def reference_hash(self) -> str:
        return content_hash(self.reference_key)

    @cached_property
    def pairs_key(self) -> dict:
        s = self.suite
        return {"reference": self.reference_hash, "prompts": hash_view(s.prompts), "prompt_split": PROMPT_SPLIT,
                "pairs": hash_view(s.pairs), "judge": non_default(s.judge), "train_prompts": self.preset.train_prompts,
                "sampler": self.sampler.name,
                "pairs_file": _file_digest(s.resolve_path(s.pairs.path)) if s.pairs.kind == "file" else None,
                **({"dataset": _dataset_digest(s)} if s.pairs.kind == "dataset" else {})}

    @cached_property
    def baseline_key(self) -> dict:
        s = self.suite
        return {"reference": self.reference_hash, "prompts": hash_view(s.prompts), "prompt_split": PROMPT_SPLIT,
                "evaluation": hash_view(s.evaluation), "judge": non_default(s.judge),
                "eval_prompts": self.preset.eval_prompts,
                "sampler": self.sampler.name,  # a pairs file's prompts are kept out of the evaluation prompts
                "pairs_file": _file_digest(s.resolve_path(s.pairs.path)) if s.pairs.kind == "file" else None,
                **({"dataset": _dataset_digest(s)} if s.pairs.kind == "dataset" else {})}

    def hashes(self) -> dict:
        return {"reference": self.reference_hash, "pairs": content_hash(self.pairs_key),
                "baseline": content_hash(self.baseline_key)}

    # ------------------------------------------------------------------ shared state
    @property
    def sampler(self):
        if self._sampler is None:
            from harness.evaluation.sampling import DEFAULT_SAMPLER, get_sampler

            self._sampler = get_sampler(DEFAULT_SAMPLER)
        return self._sampler

    @cached_property
    def corpus(self) -> tuple[list[str], list[str]]:
        if self.suite.data.heldout_split:  # e.g. IMDb: π_SFT on train, evaluation prompts from test reviews
            return load_corpus(self.suite), load_corpus(self.suite, self.suite.data.heldout_split)
        return split_corpus(self._documents(), self.suite)

    def _documents(self) -> list[str]:
        """The suite's documents. A synthetic corpus is generated once and kept in the cache (every run
        draws its evaluation prompts from it: regenerating 20,000 reviews cost each run ~7 s); the cached
        copy is exactly the generator's output, keyed by the data section, the seed and the generator
        version."""
        if self.suite.data.kind not in ("synthetic_reviews", "synthetic_instructions"):
            return load_corpus(self.suite)
        key = {"seed": self.suite.seed, "data": hash_view(self.suite.data), "generator": self._generator_version()}
        def build(tmp: Path) -> None:
            (tmp / "documents.json").write_text(json.dumps(load_corpus(self.suite), ensure_ascii=False),
                                                encoding="utf-8")

        path = self.cache.existing("corpus", key) if self.read_only else self.cache.get_or_build("corpus", key, build)[0]
        if path is None:  # preflight before the first build: generate, write nothing
            return load_corpus(self.suite)
        return json.loads((path / "documents.json").read_text(encoding="utf-8"))

    @cached_property
    def dataset_tokenizer(self):
        """The policy tokenizer as loaded before π_SFT exists (renders conversations; None for train_bpe)."""
        from harness.suites.datasets import suite_tokenizer

        return suite_tokenizer(self.suite)

    @cached_property
    def dataset_prompts(self) -> tuple[list[str], list[str] | None]:
        """pairs.kind dataset: (pair prompts, evaluation prompts or None) drawn from the dataset."""
        from harness.suites.datasets import dataset_prompts

        return dataset_prompts(self.suite, self.dataset_tokenizer, self.preset.train_prompts, self.preset.eval_prompts,
                               field=f"presets.{self.preset_name}")

    @cached_property
    def judge(self):
        import dataclasses

        from harness.evaluation.judges import make_judge

        spec = self.suite.judge
        if spec.kind == "reward_model" and spec.model and self.suite.resolve_path(spec.model).is_dir():
            spec = dataclasses.replace(spec, model=str(self.suite.resolve_path(spec.model)))  # relative to the suite file
        return make_judge(spec, cache_root=self.cache.root.parent)

    @cached_property
    def reference_dir(self) -> Path:
        self.check_prompts()  # a preset the corpus cannot serve fails here, before π_SFT is trained
        path, built = self.cache.get_or_build("reference", self.reference_key, self._build_reference)
        if built:
            self.built.append("reference")
        return path

    @cached_property
    def tokenizer(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(self.reference_dir))

    def load_reference(self):
        from harness.training.models import load_policy

        from harness.training.device import place

        model, _ = load_policy(self.reference_dir, self.suite.policy.trust_remote_code)
        return place(model)  # on the run's device (harness.training.device)

    @cached_property
    def reference_model(self):
        """π_ref, frozen, shared by scoring passes in this process. Never trained in place."""
        model = self.load_reference()
        for p in model.parameters():
            p.requires_grad_(False)
        return model

    @cached_property
    def pair_prompts(self) -> list[str]:
        """The prompts preference pairs are made from: seeded training-side prompts of the training
        documents, or the distinct prompts of the pairs file."""
        s = self.suite
        if s.pairs.kind == "file":
            return pairs_file_prompts(s.resolve_path(s.pairs.path))
        if s.pairs.kind == "dataset":
            return self.dataset_prompts[0]
        return make_prompts(self.corpus[0], s, self.preset.train_prompts, "train",
                            field=f"presets.{self.preset_name}.train_prompts")

    @cached_property
    def eval_prompts(self) -> list[str]:
        """Evaluation-side prompts of the held-out documents; none equals a pair prompt (:func:`prompt_key`)."""
        s, n = self.suite, self.preset.eval_prompts
        if s.prompts.kind == "dataset":  # pairs.dataset.eval_split's prompts, none a pair prompt
            return self.dataset_prompts[1]
        held_out = self.corpus[1]
        # The corpus alone must give enough; sampled pair prompts are disjoint by construction (the
        # two sides never share a text), a pairs file's prompts are excluded on top.
        prompts = make_prompts(held_out, s, n, "eval", field=f"presets.{self.preset_name}.eval_prompts")
        if s.pairs.kind not in ("file", "dataset"):
            return prompts
        file_prompts = self.pair_prompts
        try:
            return make_prompts(held_out, s, n, "eval", exclude=file_prompts)
        except UserError:
            left = len(prompt_pool(held_out, s, "eval", exclude=file_prompts))
            raise UserError(f"{s.path}: pairs.path", s.pairs.path or s.pairs.dataset.path,
                            f"preset {self.preset_name} asks for {n} evaluation prompts, but only {left} "
                            f"held-out prompts are not among the file's {len(file_prompts)} prompts "
                            "(evaluation prompts never repeat a pair prompt)") from None

    def check_prompts(self) -> None:
        """Draw the pair and evaluation prompts (cheap, no model), raising the one-line UserError when
        the corpus cannot give the preset's counts."""
        self.pair_prompts
        self.eval_prompts

    @cached_property
    def eval_prompt_ids(self) -> list[list[int]]:
        return self.encode_prompts(self.eval_prompts, "evaluation.max_new_tokens",
                                   self.suite.evaluation.max_new_tokens)

    def encode_prompts(self, prompts: list[str], field: str, max_new_tokens: int) -> list[list[int]]:
        tok = self.tokenizer
        from harness.suites.prompting import encode_prompts

        ids = encode_prompts(tok, prompts, self.suite.prompts.chat_template)  # BOS + text, or the chat template
        limit = self.suite.policy.max_length
        worst = max(range(len(ids)), key=lambda i: len(ids[i]))
        if len(ids[worst]) + max_new_tokens > limit:
            raise UserError(self.suite.path, field,
                            f"prompt {prompts[worst][:40]!r} is {len(ids[worst])} tokens; with {max_new_tokens} "
                            f"new tokens it exceeds the model context policy.max_length={limit}")
        return ids

    @cached_property
    def pairs(self) -> pd.DataFrame:
        """All preference pairs (``split`` = train / valid) with reference log-probabilities."""
        self.check_prompts()
        path, built = self.cache.get_or_build("pairs", self.pairs_key, self._build_pairs)
        if built:
            self.built.append("pairs")
        pairs = pd.read_parquet(path / "pairs.parquet")
        key = {"pairs": path.name, "reference": self.reference_hash, "max_length": self.suite.policy.max_length}
        lp_path, built = self.cache.get_or_build("reflogps", key, lambda d: self._build_ref_logps(pairs, d))
        if built:
            self.built.append("reflogps")
        if not (pairs.split == "train").any():
            raise UserError(self.suite.path, "pairs", f"no usable training pairs from {self.preset.train_prompts} "
                            "prompts (every sampled pair tied under the judge); raise train_prompts or "
                            "samples_per_prompt, or train π_SFT longer")
        lp = pd.read_parquet(lp_path / "ref_logps.parquet")
        return pairs.assign(ref_chosen_logp=lp.ref_chosen_logp.to_numpy(),
                            ref_rejected_logp=lp.ref_rejected_logp.to_numpy())

    def pairs_load_report(self) -> dict | None:
        """pairs.kind dataset: the pairs artifact's load_report.json (rows, drops, length policy, gold check);
        built here if it is not yet."""
        if self.suite.pairs.kind != "dataset":
            return None
        path, built = self.cache.get_or_build("pairs", self.pairs_key, self._build_pairs)
        if built:
            self.built.append("pairs")
        f = path / "load_report.json"
        return json.loads(f.read_text()) if f.is_file() else None

    @property
    def train_pairs(self) -> pd.DataFrame:
        return self.pairs[self.pairs.split == "train"].reset_index(drop=True)

    @cached_property
    def baseline(self) -> pd.DataFrame:
        """π_SFT samples on the evaluation prompts with their gold rewards (win-rate opponent)."""
        path, built = self.cache.get_or_build("baseline", self.baseline_key, self._build_baseline)
        if built:
            self.built.append("baseline")
        return pd.read_parquet(path / "baseline.parquet")

    # ------------------------------------------------------------------ builders
    def _build_reference(self, out: Path) -> None:
        from harness.suites.sources import model_source, tokenizer_source
        from harness.training.models import build_model, load_tokenizer, save_policy, train_bpe_tokenizer
        from harness.training.pretrain import train_causal_lm

        s = self.suite
        # the corpus only when it is used (a pretrained base kept as π_SFT needs none: no dataset read for it)
        train_docs = self.corpus[0] if s.tokenizer.kind == "train_bpe" or s.reference.kind == "train_on_corpus" else []
        if s.tokenizer.kind == "train_bpe":
            tok = train_bpe_tokenizer(train_docs, s.tokenizer.vocab_size)
        else:
            tok = load_tokenizer(s.tokenizer, s.policy.trust_remote_code, source=tokenizer_source(s))
        if s.prompts.chat_template and not getattr(tok, "chat_template", None):
            raise UserError(s.path, "prompts.chat_template", "true, but the suite's tokenizer has no chat template")
        model = build_model(s.policy, tok, seeds.derive(s.seed, "init"), source=model_source(s))
        if s.reference.kind == "train_on_corpus":
            steps = self.reference_key["reference"]["steps"]
            log = train_causal_lm(model, tok, train_docs, s.reference, steps, s.policy.max_length,
                                  seeds.derive(s.seed, "pretrain"),
                                  resume_dir=self.cache.resume_dir("reference", self.reference_key))
            pd.DataFrame(log).to_json(out / "train_log.jsonl", orient="records", lines=True)
        save_policy(model, tok, out)

    def _build_pairs(self, out: Path) -> None:
        if self.suite.pairs.kind == "dataset":
            from harness.suites.datasets import write_dataset_pairs

            write_dataset_pairs(self, out)
            return
        if self.suite.pairs.kind == "file":
            from harness.suites.pairs import read_pairs_file

            df = read_pairs_file(self.suite.resolve_path(self.suite.pairs.path), self.tokenizer,
                                 self.suite.policy.max_length, self.suite.seed, self.suite.prompts.chat_template)
            df.to_parquet(out / "pairs.parquet")
            return
        from harness.suites.pairs import label_pairs
        from harness.evaluation.sampling.base import GenerationSettings, PolicyHandle

        s = self.suite
        prompts = self.pair_prompts
        prompt_ids = self.encode_prompts(prompts, "pairs.max_new_tokens", s.pairs.max_new_tokens)
        comp = self.sampler.sample(PolicyHandle(self.tokenizer, self.reference_model, self.reference_dir),
                                   prompt_ids, s.pairs.samples_per_prompt,
                                   GenerationSettings(s.pairs.max_new_tokens, 1.0, s.evaluation.batch_size),
                                   seed=seeds.derive(s.seed, "pair-sampling"), desc="sampling π_SFT for pairs")
        rewards = self.judge.score([prompts[i] for i in comp.prompt_index], comp.texts)
        samples = pd.DataFrame({"prompt_index": comp.prompt_index, "sample_index": comp.sample_index,
                                "prompt": [prompts[i] for i in comp.prompt_index],
                                "prompt_ids": [prompt_ids[i] for i in comp.prompt_index],
                                "completion": comp.texts, "completion_ids": comp.token_ids,
                                "finished": comp.finished, "gold_reward": rewards})
        samples.to_parquet(out / "samples.parquet")
        label_pairs(samples, s.pairs, seeds.derive(s.seed, "labels")).to_parquet(out / "pairs.parquet")

    def _build_ref_logps(self, pairs: pd.DataFrame, out: Path) -> None:
        from harness.training.logprobs import batched_sequence_logps

        model, pad, L = self.reference_model, self.tokenizer.pad_token_id, self.suite.policy.max_length
        P = pairs.prompt_ids.tolist()
        bar = progress(total=2, desc="reference log-probs", unit="pass")
        c = batched_sequence_logps(model, P, pairs.chosen_ids.tolist(), pad, 128, L).numpy()
        bar.update(1)
        r = batched_sequence_logps(model, P, pairs.rejected_ids.tolist(), pad, 128, L).numpy()
        bar.close()
        pd.DataFrame({"ref_chosen_logp": c, "ref_rejected_logp": r}).to_parquet(out / "ref_logps.parquet")

    def _build_baseline(self, out: Path) -> None:
        from harness.evaluation.sampling.base import GenerationSettings, PolicyHandle

        s = self.suite
        ev = s.evaluation
        if ev.baseline == "dataset":
            return self._build_dataset_baseline(out)
        comp = self.sampler.sample(PolicyHandle(self.tokenizer, self.reference_model, self.reference_dir),
                                   self.eval_prompt_ids, ev.samples_per_prompt,
                                   GenerationSettings(ev.max_new_tokens, ev.temperature, ev.batch_size),
                                   seed=seeds.derive(s.seed, "baseline-sampling"), desc="sampling π_SFT baseline")
        prompts = self.eval_prompts
        from harness.evaluation.judges import is_pairwise

        if is_pairwise(self.judge):  # a pairwise judge has no scalar reward; it judges win rates only
            rewards = np.full(len(comp.texts), np.nan)
        else:
            rewards = self.judge.score([prompts[i] for i in comp.prompt_index], comp.texts)
        pd.DataFrame({"prompt_index": comp.prompt_index, "sample_index": comp.sample_index,
                      "completion": comp.texts, "length": comp.lengths, "finished": comp.finished,
                      "gold_reward": rewards}).to_parquet(out / "baseline.parquet")

    def _build_dataset_baseline(self, out: Path) -> None:
        """``evaluation.baseline: dataset``: the opponent of every policy sample is the dataset's chosen
        response to its prompt (TL;DR's human reference summary, HH's chosen reply), not a π_SFT sample.
        Its length counts the response's tokens plus EOS, as a finished completion's does."""
        from harness.evaluation.judges import is_pairwise
        from harness.suites.datasets import eval_references

        s, prompts = self.suite, self.eval_prompts
        refs = eval_references(s, self.tokenizer, prompts)
        n = s.evaluation.samples_per_prompt
        idx = [i for i in range(len(prompts)) for _ in range(n)]
        texts = [refs[i] for i in idx]
        lengths = [len(self.tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in texts]
        rewards = (np.full(len(texts), np.nan) if is_pairwise(self.judge)
                   else self.judge.score([prompts[i] for i in idx], texts))
        pd.DataFrame({"prompt_index": idx, "sample_index": [k for _ in prompts for k in range(n)],
                      "completion": texts, "length": lengths, "finished": [True] * len(texts),
                      "gold_reward": rewards}).to_parquet(out / "baseline.parquet")


def _dataset_digest(suite: Suite, which: str = "pairs") -> dict:
    from harness.suites.datasets import source_digest

    return source_digest(suite, which)


def _file_digest(path: Path) -> str:
    import hashlib

    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    except FileNotFoundError:
        raise UserError(str(path), None, "preference file not found") from None
