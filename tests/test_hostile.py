"""Hostile input: every malformed suite, sweep file, flag, environment variable, pairs file or results
folder stops in the preflight with one line naming the file (or flag) and the field, exit code 2,
nothing written, within a time and memory bound; a corrupt run in a results folder is reported and
skipped, never a crash.

Three parts:
- ``CORPUS``: named hostile cases, each run through ``harness.cli.main`` in-process (training is
  replaced by a tripwire, so a case that slipped through the preflight fails instead of computing);
- property-based tests (hypothesis) over the suite loader, the ``--set``/``--sweep`` parsers and the
  pairs reader: any generated input loads or raises the one-line ``UserError``, in bounded time and
  memory;
- the bombs (YAML alias bomb, ``--set dpo.epochs=1e9``, huge vocabulary / context / model) in a
  subprocess with a wall-clock and peak-RSS bound.
"""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.analysis.fake import FakeGroup, write_fake_sweep
from harness.cli import main
from harness.core.config import load_yaml, parse_scalar
from harness.core.errors import UserError
from harness.execution.plan import parse_sets, parse_sweeps
from harness.suites.pairs import load_pairs_table
from harness.suites.spec import load_suite

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "data" / "tiny.yaml"
TINY_DATA = yaml.safe_load(TINY.read_text())
CASE_SECONDS = 5.0  # every corpus case answers within this (most in well under a second)

BOMB = "".join([
    'lol: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n',
    *(f"l{i}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(8)),
])  # "billion laughs": 9^9 = 387,420,489 strings once expanded


# ---------------------------------------------------------------------- helpers for the corpus
class Ctx:
    """Files of one case, under a fresh temporary folder."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.results = tmp / "results"

    def suite(self, mutate=None, text: str | None = None, name: str = "hostile.yaml") -> str:
        p = self.tmp / name
        if text is None:
            data = json.loads(json.dumps(TINY_DATA))
            if mutate:
                mutate(data)
            text = yaml.safe_dump(data, sort_keys=False)
        p.write_text(text)
        return str(p)

    def raw(self, name: str, data: bytes) -> str:
        p = self.tmp / name
        p.write_bytes(data)
        return str(p)

    def pairs_suite(self, filename: str, content: bytes | None = None, table: pa.Table | None = None) -> str:
        """The tiny suite reading its pairs from ``filename`` (written from bytes or an Arrow table)."""
        p = self.tmp / filename
        if table is not None:
            pq.write_table(table, p)
        elif content is not None:
            p.write_bytes(content)
        return self.suite(lambda d: d.update(pairs={"kind": "file", "path": filename}))

    def sweep(self, text: str) -> str:
        p = self.tmp / "sweep.yaml"
        p.write_text(text)
        return str(p)


def at(path: str, value):
    """A suite mutation: set the dotted ``path`` to ``value``."""
    def f(d):
        *head, last = path.split(".")
        for k in head:
            d = d.setdefault(k, {})
        d[last] = value
    return f


def jsonl(*rows) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()


GOOD = {"prompt": "the film was", "chosen": "a quiet delight", "rejected": "a loud mess"}
TIMING = {"slowest": (0.0, "")}


def run_argv(ctx: Ctx, suite: str, *flags: str) -> list[str]:
    return ["run", suite, *flags, "--results", str(ctx.results)]


def tiny(ctx, *flags):
    return run_argv(ctx, str(TINY), *flags)


# (id, argv builder, substrings the one line must hold: where (file or flag), field, problem)
CORPUS: list[tuple[str, object, tuple[str, ...]]] = [
    # ---- --set: numbers finite and in range, values parsed safely
    ("set epochs 1e9 (billion-step shuffle)", lambda c: tiny(c, "--algorithms", "dpo", "--set", "dpo.epochs=1e9"),
     ("--set", "dpo.epochs", "optimizer steps")),
    ("set epochs .inf", lambda c: tiny(c, "--set", "dpo.epochs=.inf"), ("--set", "dpo.epochs", "finite")),
    ("set epochs nan", lambda c: tiny(c, "--set", "dpo.epochs=nan"), ("--set", "dpo.epochs", "expected a number")),
    ("set beta inf", lambda c: tiny(c, "--set", "dpo.beta=inf"), ("--set", "dpo.beta", "expected a number")),
    ("set beta .nan", lambda c: tiny(c, "--set", "dpo.beta=.nan"), ("--set", "dpo.beta", "finite")),
    ("set beta 1e309", lambda c: tiny(c, "--set", "dpo.beta=1e309"), ("--set", "dpo.beta", "finite")),
    ("set beta -.inf", lambda c: tiny(c, "--set", "dpo.beta=-.inf"), ("--set", "dpo.beta", "finite")),
    ("set lr 1e400", lambda c: tiny(c, "--set", "dpo.lr=1e400"), ("--set", "dpo.lr", "finite")),
    ("set lr huge integer", lambda c: tiny(c, "--set", "dpo.lr=" + "9" * 400), ("--set", "dpo.lr", "finite")),
    ("set batch_size float", lambda c: tiny(c, "--set", "dpo.batch_size=1e3"), ("--set", "dpo.batch_size", "integer")),
    ("set batch_size 10^23", lambda c: tiny(c, "--set", "dpo.batch_size=" + "9" * 23), ("dpo.batch_size", "out of range")),
    ("set batch_size 0", lambda c: tiny(c, "--set", "dpo.batch_size=0"), ("--set", "dpo.batch_size", ">= 1")),
    ("set beta list", lambda c: tiny(c, "--set", "dpo.beta=[1, 2]"), ("--set", "dpo.beta", "expected a number")),
    ("set beta mapping", lambda c: tiny(c, "--set", "dpo.beta={a: 1}"), ("--set", "dpo.beta", "expected a number")),
    ("set beta bool", lambda c: tiny(c, "--set", "dpo.beta=true"), ("--set", "dpo.beta", "expected a number")),
    ("set empty value", lambda c: tiny(c, "--set", "dpo.beta="), ("--set", "empty value")),
    ("set no key", lambda c: tiny(c, "--set", "=1"), ("--set", "ALGORITHM.KEY=VALUE")),
    ("set no dot", lambda c: tiny(c, "--set", "dpo=1"), ("--set", "ALGORITHM.KEY=VALUE")),
    ("set empty algorithm", lambda c: tiny(c, "--set", ".beta=1"), ("--set", "unknown algorithm")),
    ("set empty key", lambda c: tiny(c, "--set", "dpo.=1"), ("--set", "dpo.", "unknown key")),
    ("set recursive alias", lambda c: tiny(c, "--set", "dpo.loss=&x [*x]"), ("--set: dpo.loss", "recursive")),
    ("set alias bomb", lambda c: tiny(c, "--set", "dpo.loss=" + "{" + ", ".join(
        l.replace(": ", ": ", 1) for l in BOMB.strip().split("\n")) + "}"), ("--set: dpo.loss", "alias bomb")),
    ("set duplicate key", lambda c: tiny(c, "--set", "dpo.loss={a: 1, a: 2}"), ("--set: dpo.loss", "duplicate key")),
    ("set bad literal", lambda c: tiny(c, "--set", "dpo.loss=IPO"), ("--set", "dpo.loss", "allowed: sigmoid, ipo")),
    ("set algorithm not requested", lambda c: tiny(c, "--algorithms", "sft", "--set", "dpo.beta=1"),
     ("--set", "dpo", "not among --algorithms")),
    ("set control characters", lambda c: tiny(c, "--set", "dpo.loss=\x1b[31mred"), ("--set", "dpo.loss", "allowed")),
    # ---- --sweep
    ("sweep empty", lambda c: tiny(c, "--sweep", "dpo.beta="), ("--sweep", "no values")),
    ("sweep only commas", lambda c: tiny(c, "--sweep", "dpo.beta=,,,"), ("--sweep", "no values")),
    ("sweep inf", lambda c: tiny(c, "--sweep", "dpo.beta=0.1,inf"), ("--sweep", "dpo.beta", "expected a number")),
    ("sweep .nan", lambda c: tiny(c, "--sweep", "dpo.beta=0.1,.nan"), ("--sweep", "dpo.beta", "finite")),
    ("sweep lists", lambda c: tiny(c, "--sweep", "dpo.beta=[1],[2]"), ("--sweep", "dpo.beta", "expected a number")),
    ("sweep no equals", lambda c: tiny(c, "--sweep", "dpo.beta"), ("--sweep", "ALGORITHM.KEY=V1,V2")),
    ("sweep grid too large", lambda c: tiny(c, "--sweep", "dpo.lr=" + ",".join(f"{i}e-5" for i in range(1, 201)),
                                             "--sweep", "dpo.beta=" + ",".join(f"0.{i:03d}" for i in range(1, 101))),
     ("--sweep", "runs (sweep grid points", "at most 10,000")),
    ("sweep epochs 1e9", lambda c: tiny(c, "--algorithms", "dpo", "--sweep", "dpo.epochs=1,1e9"),
     ("--sweep", "dpo.epochs", "optimizer steps")),
    # ---- --seeds, --algorithms, --preset, --eval-checkpoints, --checkpoint-every, --sampler
    ("seeds empty", lambda c: tiny(c, "--seeds", ""), ("--seeds", "comma-separated integers")),
    ("seeds comma", lambda c: tiny(c, "--seeds", ","), ("--seeds", "comma-separated integers")),
    ("seeds negative", lambda c: tiny(c, "--seeds", "-1"), ("--seeds", "-1")),
    ("seeds underscore", lambda c: tiny(c, "--seeds", "1_000"), ("--seeds", "1_000")),
    ("seeds arabic digit", lambda c: tiny(c, "--seeds", "\u0663"), ("--seeds", "comma-separated integers")),
    ("seeds huge", lambda c: tiny(c, "--seeds", "99999999999"), ("--seeds", "0..4294967295")),
    ("seeds hex", lambda c: tiny(c, "--seeds", "0x10"), ("--seeds", "0x10")),
    ("seeds float", lambda c: tiny(c, "--seeds", "1.5"), ("--seeds", "1.5")),
    ("algorithms comma", lambda c: tiny(c, "--algorithms", ","), ("--algorithms", "no algorithm named")),
    ("algorithms empty", lambda c: tiny(c, "--algorithms", ""), ("--algorithms", "no algorithm named")),
    ("algorithms unknown", lambda c: tiny(c, "--algorithms", "dpo,xyz"), ("--algorithms", "xyz", "unknown algorithm")),
    ("algorithms 10k chars", lambda c: tiny(c, "--algorithms", "a" * 10_000), ("--algorithms", "unknown algorithm")),
    ("preset empty", lambda c: tiny(c, "--preset", ""), ("--preset", "empty preset name")),
    ("preset trailing newline", lambda c: tiny(c, "--preset", "smoke\n"), ("--preset", "unknown preset")),
    ("preset unknown", lambda c: tiny(c, "--preset", "huge"), ("--preset", "huge", "unknown preset")),
    ("eval-checkpoints negative", lambda c: tiny(c, "--eval-checkpoints", "-1"), ("--eval-checkpoints", "0..100")),
    ("eval-checkpoints 1e9", lambda c: tiny(c, "--eval-checkpoints", "1000000000"), ("--eval-checkpoints", "0..100")),
    ("eval-checkpoints not int", lambda c: tiny(c, "--eval-checkpoints", "x"), ("--eval-checkpoints", "invalid int")),
    ("checkpoint-every negative", lambda c: tiny(c, "--checkpoint-every", "-5"), ("--checkpoint-every", ">= 0")),
    ("checkpoint-every not int", lambda c: tiny(c, "--checkpoint-every", "abc"), ("--checkpoint-every", "invalid int")),
    ("sampler unknown", lambda c: tiny(c, "--sampler", "bogus"), ("--sampler", "bogus", "unknown sampler")),
    ("sampler empty", lambda c: tiny(c, "--sampler", ""), ("--sampler", "unknown sampler")),
    # ---- argparse, in the same one-line format
    ("unknown flag", lambda c: tiny(c, "--bogus"), ("--bogus", "unrecognized argument")),
    ("run without suite", lambda c: ["run"], ("suite", "missing (required)")),
    ("no command", lambda c: [], ("COMMAND", "missing (required)")),
    ("unknown command", lambda c: ["frobnicate"], ("COMMAND", "invalid choice")),
    ("list unknown", lambda c: ["list", "models"], ("what", "invalid choice")),
    # ---- --results
    ("results empty", lambda c: ["run", str(TINY), "--results", ""], ("--results", "empty path")),
    ("results NUL byte", lambda c: ["run", str(TINY), "--results", str(c.tmp / "a\x00b")], ("--results", "NUL byte")),
    ("results is a file", lambda c: ["run", str(TINY), "--results", c.raw("afile", b"x")],
     ("--results", "exists and is not a folder")),
    ("results name too long", lambda c: ["run", str(TINY), "--results", str(c.tmp / ("x" * 300))],
     ("--results", "unusable path")),
    ("results foreign folder", lambda c: ["run", str(TINY), "--results", str(Path(c.raw("mine.txt", b"x")).parent)],
     ("--results", "not a prefbench results folder")),
    # ---- the suite argument and file: encoding, format, size, YAML bombs
    ("suite empty name", lambda c: run_argv(c, ""), ("SUITE", "empty suite name")),
    ("suite name with newline", lambda c: run_argv(c, "tiny\n"), ("SUITE", "unknown suite")),
    ("suite path traversal", lambda c: run_argv(c, "../../etc/passwd"), ("SUITE", "unknown suite")),
    ("suite is a folder", lambda c: run_argv(c, str(_mkdir(c.tmp / "dir.yaml"))), ("dir.yaml", "is a folder")),
    ("suite symlink loop", lambda c: run_argv(c, _loop(c.tmp / "loop.yaml")), ("loop.yaml", "cannot read")),
    ("suite is a device", lambda c: run_argv(c, _symlink(c.tmp / "null.yaml", "/dev/null")),
     ("null.yaml", "not a regular file")),
    ("suite is a FIFO", lambda c: run_argv(c, _fifo(c.tmp / "fifo.yaml")), ("fifo.yaml", "not a regular file")),
    ("suite not UTF-8", lambda c: run_argv(c, c.raw("latin1.yaml", "name: caf\xe9\n".encode("latin-1"))),
     ("latin1.yaml", "line 1", "not valid UTF-8")),
    ("suite gzip", lambda c: run_argv(c, c.raw("gz.yaml", gzip.compress(TINY.read_bytes()))), ("gz.yaml", "gzip")),
    ("suite empty file", lambda c: run_argv(c, c.raw("empty.yaml", b"")), ("empty.yaml", "YAML mapping")),
    ("suite 300 KB", lambda c: run_argv(c, c.raw("big.yaml", b"# " + b"x" * 300_000 + b"\n")), ("big.yaml", "at most")),
    ("suite alias bomb", lambda c: run_argv(c, c.suite(text=BOMB)), ("hostile.yaml", "alias bomb")),
    ("suite recursive alias", lambda c: run_argv(c, c.suite(text="name: &n [*n]\n")), ("hostile.yaml", "recursive")),
    ("suite nested 100 deep", lambda c: run_argv(c, c.suite(text="name: " + "[" * 100 + "]" * 100 + "\n")),
     ("hostile.yaml", "nested more than 50")),
    ("suite nested 5000 deep", lambda c: run_argv(c, c.suite(text="name: " + "[" * 5000 + "]" * 5000 + "\n")),
     ("hostile.yaml", "nest")),
    ("suite duplicate presets", lambda c: run_argv(c, c.suite(text=TINY.read_text() + "presets: {smoke: {}}\n")),
     ("hostile.yaml", "duplicate key 'presets'")),
    ("suite duplicate nested key", lambda c: run_argv(c, c.suite(
        text=TINY.read_text().replace("vocab_size: 400}", "vocab_size: 400, vocab_size: 500}"))),
     ("hostile.yaml", "duplicate key 'vocab_size'")),
    ("suite is a list", lambda c: run_argv(c, c.suite(text="- name\n- version\n")), ("hostile.yaml", "YAML mapping")),
    ("suite python tag", lambda c: run_argv(c, c.suite(text="name: !!python/object/apply:os.system ['true']\n")),
     ("hostile.yaml", "YAML syntax error")),
    ("suite NUL byte", lambda c: run_argv(c, c.suite(text="name: a\x00b\n")), ("hostile.yaml", "YAML syntax error")),
    ("suite bad timestamp", lambda c: run_argv(c, c.suite(text="name: 2024-13-45\n")),
     ("hostile.yaml", "invalid YAML value")),
    ("suite 5000-digit number", lambda c: run_argv(c, c.suite(text="version: " + "9" * 5000 + "\n")),
     ("hostile.yaml", "invalid YAML value")),
    ("suite name trailing newline", lambda c: run_argv(c, c.suite(at("name", "tiny\n"))), ("hostile.yaml", "name", "allowed")),
    ("suite name slash", lambda c: run_argv(c, c.suite(at("name", "../escape"))), ("hostile.yaml", "name", "allowed")),
    ("suite preset name newline", lambda c: run_argv(c, c.suite(at("presets.smoke\n", {}))),
     ("hostile.yaml", "presets.smoke", "preset names")),
    ("suite unknown key 10k chars", lambda c: run_argv(c, c.suite(at("k" * 10_000, 1))), ("hostile.yaml", "unknown key")),
    # ---- suite values: finite, and within the resources they ask for
    ("vocab_size 1e9", lambda c: run_argv(c, c.suite(at("tokenizer.vocab_size", 10 ** 9))),
     ("hostile.yaml", "tokenizer.vocab_size", "<= 262144")),
    ("max_length 1e8", lambda c: run_argv(c, c.suite(at("policy.max_length", 10 ** 8))),
     ("hostile.yaml", "policy.max_length", "<= 65536")),
    ("model too large for memory", lambda c: run_argv(c, c.suite(at("policy.config", {"n_layer": 48, "n_embd": 65536,
                                                                                         "n_head": 4}))),
     ("hostile.yaml", "policy.config", "GiB to train")),
    ("heads do not divide width", lambda c: run_argv(c, c.suite(at("policy.config.n_head", 3))),
     ("hostile.yaml", "policy.config.n_head", "must divide")),
    ("config sets n_positions", lambda c: run_argv(c, c.suite(at("policy.config.n_positions", 64))),
     ("hostile.yaml", "policy.config.n_positions", "set by the harness")),
    ("config negative layers", lambda c: run_argv(c, c.suite(at("policy.config.n_layer", -1))),
     ("hostile.yaml", "policy.config.n_layer", "integer in")),
    ("config layers string", lambda c: run_argv(c, c.suite(at("policy.config.n_layer", "four"))),
     ("hostile.yaml", "policy.config.n_layer", "integer in")),
    ("n_documents 1e9", lambda c: run_argv(c, c.suite(at("data.n_documents", 10 ** 9))),
     ("hostile.yaml", "data.n_documents", "<= 100000")),
    ("temperature 1e309", lambda c: run_argv(c, c.suite(text=TINY.read_text().replace("temperature: 1.0",
                                                                                      "temperature: 1.0e+309"))),
     ("hostile.yaml", "evaluation.temperature", "finite")),
    ("temperature .nan", lambda c: run_argv(c, c.suite(text=TINY.read_text().replace("temperature: 1.0",
                                                                                     "temperature: .nan"))),
     ("hostile.yaml", "evaluation.temperature", "finite")),
    ("temperature 1e6", lambda c: run_argv(c, c.suite(at("evaluation.temperature", 1e6))),
     ("hostile.yaml", "evaluation.temperature", "<= 100")),
    ("eval max_new_tokens beyond context", lambda c: run_argv(c, c.suite(at("evaluation.max_new_tokens", 100_000))),
     ("hostile.yaml", "evaluation.max_new_tokens", "policy.max_length")),
    ("eval max_new_tokens + longest prompt", lambda c: run_argv(c, c.suite(at("evaluation.max_new_tokens", 44))),
     ("hostile.yaml", "evaluation.max_new_tokens", "words")),
    ("pairs max_new_tokens beyond context", lambda c: run_argv(c, c.suite(at("pairs.max_new_tokens", 47))),
     ("hostile.yaml", "pairs.max_new_tokens", "policy.max_length")),
    ("eval samples_per_prompt 1e6", lambda c: run_argv(c, c.suite(at("evaluation.samples_per_prompt", 10 ** 6))),
     ("hostile.yaml", "evaluation.samples_per_prompt", "<= 64")),
    ("eval batch_size 1e9", lambda c: run_argv(c, c.suite(at("evaluation.batch_size", 10 ** 9))),
     ("hostile.yaml", "evaluation.batch_size", "<= 4096")),
    ("pairs samples_per_prompt 1e5", lambda c: run_argv(c, c.suite(at("pairs.samples_per_prompt", 10 ** 5))),
     ("hostile.yaml", "pairs.samples_per_prompt", "<= 64")),
    ("eval prompts beyond the data", lambda c: run_argv(c, c.suite(at("presets.smoke.eval_prompts", 100_000))),
     ("hostile.yaml", "presets.smoke.eval_prompts", "the corpus yields only")),
    ("train prompts beyond the data", lambda c: run_argv(c, c.suite(at("presets.smoke.train_prompts", 50_000))),
     ("hostile.yaml", "presets.smoke.train_prompts", "the corpus yields only")),
    ("preset eval_checkpoints 1e9", lambda c: run_argv(c, c.suite(at("presets.smoke.eval_checkpoints", 10 ** 9))),
     ("hostile.yaml", "presets.smoke.eval_checkpoints", "<= 100")),
    ("preset epochs 1e9", lambda c: run_argv(c, c.suite(at("presets.smoke.algorithms.dpo.epochs", 1e9)),
                                             "--algorithms", "dpo"),
     ("hostile.yaml", "presets.smoke.algorithms", "dpo.epochs", "optimizer steps")),
    ("preset unknown algorithm", lambda c: run_argv(c, c.suite(at("presets.smoke.algorithms.nosuch", {}))),
     ("hostile.yaml", "nosuch", "unknown algorithm")),
    ("reference steps 1e12", lambda c: run_argv(c, c.suite(at("reference.steps", 10 ** 12))),
     ("hostile.yaml", "reference.steps", "<= 1000000")),
    ("reference batch 1e9", lambda c: run_argv(c, c.suite(at("reference.batch_size", 10 ** 9))),
     ("hostile.yaml", "reference.batch_size", "<= 4096")),
    ("seed negative", lambda c: run_argv(c, c.suite(at("seed", -1))), ("hostile.yaml", "seed", ">= 0")),
    ("seed 2^64", lambda c: run_argv(c, c.suite(at("seed", 2 ** 64))), ("hostile.yaml", "seed", "out of range")),
    ("version 0", lambda c: run_argv(c, c.suite(at("version", 0))), ("hostile.yaml", "version", ">= 1")),
    ("version string", lambda c: run_argv(c, c.suite(at("version", "1"))), ("hostile.yaml", "version", "integer")),
    ("judge timeout .inf", lambda c: run_argv(c, c.suite(text=TINY.read_text().replace("judge: {kind: vader}",
                                                                                      "judge: {timeout_s: .inf}"))),
     ("hostile.yaml", "judge.timeout_s", "finite")),
    ("flip_rate nan", lambda c: run_argv(c, c.suite(text=TINY.read_text().replace("max_new_tokens: 16}",
                                                                                  "max_new_tokens: 16, flip_rate: .nan}", 1))),
     ("hostile.yaml", "pairs.flip_rate", "finite")),
    ("min_words 0", lambda c: run_argv(c, c.suite(at("prompts.min_words", 0))), ("hostile.yaml", "prompts.min_words", ">= 1")),
    ("heldout_fraction 1", lambda c: run_argv(c, c.suite(at("data.heldout_fraction", 1.0))),
     ("hostile.yaml", "data.heldout_fraction", "< 1")),
    # ---- sweep files
    ("sweep file missing", lambda c: tiny(c, "--sweep-file", str(c.tmp / "none.yaml")), ("none.yaml", "not found")),
    ("sweep file is a folder", lambda c: tiny(c, "--sweep-file", str(_mkdir(c.tmp / "sw"))), ("sw", "is a folder")),
    ("sweep file not UTF-8", lambda c: tiny(c, "--sweep-file", c.raw("sw.yaml", b"seeds: [0]\n# \xff\xfe\n")),
     ("sw.yaml", "line 2", "not valid UTF-8")),
    ("sweep file gzip", lambda c: tiny(c, "--sweep-file", c.raw("sw.yaml", gzip.compress(b"seeds: [0]\n"))),
     ("sw.yaml", "gzip")),
    ("sweep file alias bomb", lambda c: tiny(c, "--sweep-file", c.sweep(BOMB)), ("sweep.yaml", "alias bomb")),
    ("sweep file duplicate key", lambda c: tiny(c, "--sweep-file", c.sweep("seeds: [0]\nseeds: [1]\n")),
     ("sweep.yaml", "duplicate key 'seeds'")),
    ("sweep file unknown key", lambda c: tiny(c, "--sweep-file", c.sweep("seed: [0]\n")), ("sweep.yaml", "seed", "unknown key")),
    ("sweep file empty algorithms", lambda c: tiny(c, "--sweep-file", c.sweep("algorithms: []\n")),
     ("sweep.yaml", "algorithms", "non-empty")),
    ("sweep file empty seeds", lambda c: tiny(c, "--sweep-file", c.sweep("seeds: []\n")), ("sweep.yaml", "seeds", "non-empty")),
    ("sweep file negative seed", lambda c: tiny(c, "--sweep-file", c.sweep("seeds: [-1]\n")), ("sweep.yaml", "seeds")),
    ("sweep file bool seed", lambda c: tiny(c, "--sweep-file", c.sweep("seeds: [true]\n")), ("sweep.yaml", "seeds")),
    ("sweep file preset list", lambda c: tiny(c, "--sweep-file", c.sweep("preset: [smoke]\n")),
     ("sweep.yaml", "preset", "preset name")),
    ("sweep file empty sweep list", lambda c: tiny(c, "--sweep-file", c.sweep("sweep: {dpo.beta: []}\n")),
     ("sweep.yaml", "sweep.dpo.beta", "non-empty list")),
    ("sweep file inf value", lambda c: tiny(c, "--sweep-file", c.sweep("sweep: {dpo.beta: [0.1, .inf]}\n")),
     ("sweep.yaml: sweep", "dpo.beta", "finite")),
    ("sweep file epochs 1e9", lambda c: tiny(c, "--algorithms", "dpo", "--sweep-file",
                                             c.sweep("set: {dpo.epochs: 1.0e+9}\n")),
     ("sweep.yaml: set", "dpo.epochs", "optimizer steps")),
    ("sweep file list", lambda c: tiny(c, "--sweep-file", c.sweep("- seeds\n")), ("sweep.yaml", "YAML mapping")),
    ("sweep file empty path", lambda c: tiny(c, "--sweep-file", ""), ("--sweep-file", "empty path")),
    # ---- pairs files: read and checked whole in the preflight
    ("pairs path is a folder", lambda c: run_argv(c, (_mkdir(c.tmp / "p.jsonl"), c.pairs_suite("p.jsonl"))[1]),
     ("p.jsonl", "is a folder")),
    ("pairs missing", lambda c: run_argv(c, c.pairs_suite("none.jsonl")), ("none.jsonl", "not found")),
    ("pairs symlink loop", lambda c: run_argv(c, (_loop(c.tmp / "l.jsonl"), c.pairs_suite("l.jsonl"))[1]),
     ("l.jsonl", "cannot read")),
    ("pairs gzip", lambda c: run_argv(c, c.pairs_suite("p.jsonl", gzip.compress(jsonl(GOOD)))), ("p.jsonl", "gzip")),
    ("pairs garbage parquet", lambda c: run_argv(c, c.pairs_suite("p.parquet", b"PAR1 this is not parquet")),
     ("p.parquet", "not a readable Parquet file")),
    ("pairs parquet named jsonl", lambda c: run_argv(c, c.pairs_suite("p.jsonl", _parquet_bytes(c))),
     ("p.jsonl", "a Parquet file")),
    ("pairs mixed rows", lambda c: run_argv(c, c.pairs_suite("p.jsonl", jsonl(GOOD, "[1, 2]"))),
     ("p.jsonl", "line 2", "expected an object")),
    ("pairs row missing a field", lambda c: run_argv(c, c.pairs_suite("p.jsonl", jsonl(GOOD, {"prompt": "a", "chosen": "b"}))),
     ("p.jsonl", "row 2: rejected", "missing")),
    ("pairs wrong dtype", lambda c: run_argv(c, c.pairs_suite("p.jsonl", jsonl({**GOOD, "chosen": 3}))),
     ("p.jsonl", "row 1: chosen", "got int")),
    ("pairs NaN", lambda c: run_argv(c, c.pairs_suite("p.jsonl", b'{"prompt": NaN, "chosen": "a", "rejected": "b"}\n')),
     ("p.jsonl", "row 1: prompt", "got float")),
    ("pairs duplicate key", lambda c: run_argv(c, c.pairs_suite(
        "p.jsonl", b'{"prompt": "a", "prompt": "b", "chosen": "c", "rejected": "d"}\n')),
     ("p.jsonl", "line 1", "duplicate key")),
    ("pairs deep nesting", lambda c: run_argv(c, c.pairs_suite("p.jsonl", b"[" * 100_000 + b"]" * 100_000 + b"\n")),
     ("p.jsonl", "line 1", "invalid JSON")),
    ("pairs 5000-digit number", lambda c: run_argv(c, c.pairs_suite("p.jsonl", b'{"prompt": ' + b"9" * 5000 + b"}\n")),
     ("p.jsonl", "line 1", "invalid JSON")),
    ("pairs invalid JSON", lambda c: run_argv(c, c.pairs_suite("p.jsonl", jsonl(GOOD) + b'{"prompt": "a",\n')),
     ("p.jsonl", "line 2", "invalid JSON")),
    ("pairs parquet int column", lambda c: run_argv(c, c.pairs_suite("p.parquet", table=pa.table(
        {"prompt": [1], "chosen": ["a"], "rejected": ["b"]}))), ("p.parquet", "prompt", "expected strings")),
    ("pairs parquet missing column", lambda c: run_argv(c, c.pairs_suite("p.parquet", table=pa.table(
        {"prompt": ["a"], "chosen": ["b"]}))), ("p.parquet", "rejected", "missing column")),
    ("pairs parquet null", lambda c: run_argv(c, c.pairs_suite("p.parquet", table=pa.table(
        {"prompt": ["a", None], "chosen": ["b", "c"], "rejected": ["c", "b"]}))), ("p.parquet", "row 2: prompt", "NoneType")),
    ("pairs csv", lambda c: run_argv(c, c.pairs_suite("p.csv", b"prompt,chosen,rejected\na,b,c\n")),
     ("p.csv", ".jsonl or .parquet")),
    ("pairs empty", lambda c: run_argv(c, c.pairs_suite("p.jsonl", b"\n\n")), ("p.jsonl", "no preference pairs")),
    ("pairs not UTF-8", lambda c: run_argv(c, c.pairs_suite("p.jsonl", '{"prompt": "caf\xe9"}\n'.encode("latin-1"))),
     ("p.jsonl", "not valid UTF-8")),
    ("pairs identical", lambda c: run_argv(c, c.pairs_suite("p.jsonl", jsonl({**GOOD, "rejected": GOOD["chosen"]}))),
     ("p.jsonl", "row 1: chosen", "identical")),
    ("pairs blank text", lambda c: run_argv(c, c.pairs_suite("p.jsonl", jsonl({**GOOD, "chosen": " \u2028 "}))),
     ("p.jsonl", "row 1: chosen", "empty text")),
    ("pairs prompt beyond context", lambda c: run_argv(c, c.pairs_suite("p.jsonl", jsonl({**GOOD, "prompt": "w " * 60}))),
     ("p.jsonl", "row 1: prompt", "policy.max_length")),
    # ---- environment
    ("PREFBENCH_THREADS abc", lambda c: (_env("PREFBENCH_THREADS", "abc"), tiny(c))[1], ("PREFBENCH_THREADS", "abc")),
    ("PREFBENCH_THREADS 0", lambda c: (_env("PREFBENCH_THREADS", "0"), tiny(c))[1], ("PREFBENCH_THREADS", "1..1024")),
    ("PREFBENCH_THREADS -1", lambda c: (_env("PREFBENCH_THREADS", "-1"), tiny(c))[1], ("PREFBENCH_THREADS", "-1")),
    ("PREFBENCH_THREADS 1e3", lambda c: (_env("PREFBENCH_THREADS", "1e3"), tiny(c))[1], ("PREFBENCH_THREADS", "1e3")),
    ("PREFBENCH_THREADS huge", lambda c: (_env("PREFBENCH_THREADS", "9" * 30), tiny(c))[1], ("PREFBENCH_THREADS", "1..1024")),
    ("PREFBENCH_VERBOSE yes", lambda c: (_env("PREFBENCH_VERBOSE", "yes"), tiny(c))[1], ("PREFBENCH_VERBOSE", "0 or 1")),
    ("PREFBENCH_QUIET 2", lambda c: (_env("PREFBENCH_QUIET", "2"), tiny(c))[1], ("PREFBENCH_QUIET", "0 or 1")),
    ("PREFBENCH_CACHE empty", lambda c: (_env("PREFBENCH_CACHE", ""), tiny(c))[1], ("PREFBENCH_CACHE", "empty path")),
    ("PREFBENCH_CACHE a file", lambda c: (_env("PREFBENCH_CACHE", c.raw("cachefile", b"")), tiny(c))[1],
     ("PREFBENCH_CACHE", "not a folder")),
    ("PREFBENCH_RESULTS empty", lambda c: (_env("PREFBENCH_RESULTS", ""), tiny(c))[1], ("PREFBENCH_RESULTS", "empty path")),
    # ---- report flags (a results folder with healthy runs; nothing in it may change)
    ("report kl-bound nan", lambda c: _report(c, "--kl-bound", "nan"), ("--kl-bound", "finite")),
    ("report kl-bound inf", lambda c: _report(c, "--kl-bound", "inf"), ("--kl-bound", "finite")),
    ("report kl-bound negative", lambda c: _report(c, "--kl-bound", "-1"), ("--kl-bound", "> 0")),
    ("report kl-bound text", lambda c: _report(c, "--kl-bound", "abc"), ("--kl-bound", "invalid float")),
    ("report resamples 10", lambda c: _report(c, "--resamples", "10"), ("--resamples", "100..")),
    ("report resamples 1e12", lambda c: _report(c, "--resamples", "1000000000000"), ("--resamples", "100..")),
    ("report format pdf", lambda c: _report(c, "--format", "pdf"), ("--format", "invalid choice")),
    ("report out is a folder", lambda c: _report(c, "--out", str(c.results)), ("--out", "is a folder")),
    ("report out in a missing folder", lambda c: _report(c, "--out", str(c.tmp / "no" / "t.md")), ("--out", "does not exist")),
    ("report out empty", lambda c: _report(c, "--out", ""), ("--out", "empty path")),
    ("report dir is a file", lambda c: _report(c, "--dir", c.raw("f.txt", b"x")), ("--dir", "exists and is not a folder")),
    ("report dir under a file", lambda c: _report(c, "--dir", str(Path(c.raw("g.txt", b"x")) / "sub")),
     ("--dir", "is not a folder")),
    ("report dir empty", lambda c: _report(c, "--dir", ""), ("--dir", "empty path")),
    ("report out and dir", lambda c: _report(c, "--out", str(c.tmp / "t.md"), "--dir", str(c.tmp / "rep")),
     ("--out", "cannot be combined with --dir")),
    ("report results empty", lambda c: ["report", "--results", ""], ("--results", "empty path")),
    ("report results is a file", lambda c: ["report", "--results", c.raw("r.txt", b"x")],
     ("--results", "no such results folder")),
    ("report suite traversal", lambda c: _report(c, "--suite", "../toy"), ("--suite", "not a suite name")),
    ("report suite newline", lambda c: _report(c, "--suite", "toy\n"), ("--suite", "not a suite name")),
]


def _mkdir(p: Path) -> Path:
    p.mkdir()
    return p


def _loop(p: Path) -> str:
    os.symlink(p.name, p)  # a link to itself
    return str(p)


def _symlink(p: Path, target: str) -> str:
    os.symlink(target, p)
    return str(p)


def _fifo(p: Path) -> str:
    os.mkfifo(p)
    return str(p)


def _parquet_bytes(c: Ctx) -> bytes:
    p = c.tmp / "x.parquet"
    pq.write_table(pa.table({k: [v] for k, v in GOOD.items()}), p)
    return p.read_bytes()


_ENV: dict[str, str] = {}


def _env(name: str, value: str) -> None:
    _ENV[name] = value


def _report(c: Ctx, *flags: str) -> list[str]:
    write_fake_sweep(c.results, [FakeGroup("reference", {}), FakeGroup("dpo", {"beta": 0.1}, gain=0.1)],
                     seeds=(0,), n_prompts=16)
    return ["report", "--results", str(c.results), "--resamples", "100", *flags]


# ---- pairs.kind dataset (harness/suites/datasets.py): file, row and field named, nothing written
def _dataset(c: Ctx, name: str, content: bytes | None = None, **dataset) -> str:
    """The tiny suite reading pairs.dataset from ``name`` (a file written from ``content``, or a folder)."""
    if content is not None:
        p = c.tmp / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content)
    return c.suite(lambda d: d.update(pairs={"kind": "dataset", "dataset": {"path": name, **dataset}}))


def _msgs(*roles: str) -> list[dict]:
    return [{"role": r, "content": f"{r} says hi"} for r in roles]


CORPUS += [
    ("dataset missing column", lambda c: run_argv(c, _dataset(c, "p.jsonl", jsonl(
        {"prompt": "a", "chosen": "b", "reject": "c"}))), ("p.jsonl", "rejected", "missing column", "reject")),
    ("dataset misnamed column mapping", lambda c: run_argv(c, _dataset(c, "p.jsonl", jsonl(GOOD),
                                                                       columns={"chosen": "better"})),
     ("p.jsonl", "better", "missing column")),
    ("dataset row missing a column", lambda c: run_argv(c, _dataset(c, "p.jsonl", jsonl(
        GOOD, {"prompt": "a", "chosen": "b"}))), ("p.jsonl", "row 2: rejected", "missing")),
    ("dataset no assistant turn", lambda c: run_argv(c, _dataset(c, "p.jsonl", jsonl(
        {"chosen": _msgs("user"), "rejected": _msgs("user")}))), ("p.jsonl", "row 1: chosen", "without an assistant turn")),
    ("dataset mixed formats", lambda c: run_argv(c, _dataset(c, "p.jsonl", jsonl(
        {"chosen": _msgs("user", "assistant"), "rejected": _msgs("user", "assistant")},
        {"chosen": "\n\nHuman: hi\n\nAssistant: yo", "rejected": "\n\nHuman: hi\n\nAssistant: no"}))),
     ("p.jsonl", "row 2: chosen", "mixed formats")),
    ("dataset empty split", lambda c: run_argv(c, _dataset(c, "p.jsonl", b"\n")), ("p.jsonl", "split train", "empty split")),
    ("dataset split not in folder", lambda c: run_argv(c, (c.raw("train.jsonl", jsonl(GOOD)),
                                                           _dataset(c, ".", split="test"))[1]),
     ("split test", "no file for this split", "train")),
    ("dataset not UTF-8", lambda c: run_argv(c, _dataset(c, "p.jsonl", jsonl(GOOD) + '{"prompt": "caf\xe9"}\n'.encode("latin-1"))),
     ("p.jsonl", "row 2", "not valid UTF-8")),
    ("dataset wrong type", lambda c: run_argv(c, _dataset(c, "p.jsonl", jsonl({**GOOD, "chosen": 3}))),
     ("p.jsonl", "row 1: chosen", "expected a string")),
    ("dataset rejected has another prompt", lambda c: run_argv(c, _dataset(c, "p.jsonl", jsonl(
        {"chosen": _msgs("user", "assistant"), "rejected": [{"role": "user", "content": "other"}] + _msgs("assistant")}))),
     ("p.jsonl", "row 1: rejected", "differs from chosen")),
    ("dataset implicit without marker", lambda c: run_argv(c, _dataset(c, "p.jsonl", jsonl(
        {"chosen": "just text", "rejected": "other text"}))), ("p.jsonl", "row 1: chosen", "Assistant:")),
    ("dataset unpaired bad label", lambda c: run_argv(c, _dataset(c, "p.jsonl", jsonl(
        {"prompt": "a", "completion": "b", "label": "maybe"}))), ("p.jsonl", "row 1: label", "true or false")),
    ("dataset not found", lambda c: run_argv(c, _dataset(c, "./none.jsonl")), ("none.jsonl", "not found")),
    ("dataset hub id unreachable", lambda c: (_env("HF_ENDPOINT", "http://127.0.0.1:9"),
                                              run_argv(c, _dataset(c, "someone/missing-ds")))[1],
     ("pairs.dataset.path", "someone/missing-ds", "not reachable", "hf download")),
    ("dataset csv missing column", lambda c: run_argv(c, _dataset(c, "p.csv", b"prompt,chosen\na,b\n")),
     ("p.csv", "rejected", "missing column")),
    ("dataset parquet empty split", lambda c: run_argv(c, _dataset(c, "p.parquet", _empty_parquet(c))),
     ("p.parquet", "empty split")),
]


def _empty_parquet(c: Ctx) -> bytes:
    p = c.tmp / "e.parquet"
    pq.write_table(pa.table({k: pa.array([], pa.string()) for k in GOOD}), p)
    data = p.read_bytes()
    p.unlink()
    return data


def _tree(root: Path) -> dict[str, int]:
    if not root.exists():
        return {}
    return {str(p): p.lstat().st_mtime_ns for p in sorted(root.rglob("*"))}


@pytest.fixture
def no_compute(monkeypatch):
    """Training and evaluation are replaced by a tripwire: a case that passed the preflight fails here."""
    import harness.execution.runner as runner

    def tripwire(*a, **k):
        raise AssertionError("the preflight let this input through: compute started")

    monkeypatch.setattr(runner, "execute", tripwire)
    yield


@pytest.mark.parametrize("name,build,expect", CORPUS, ids=[c[0] for c in CORPUS])
def test_hostile_input_is_one_line_exit_2_nothing_written(tmp_path, capsys, monkeypatch, no_compute, name, build, expect):
    monkeypatch.setenv("PREFBENCH_CACHE", str(tmp_path / "cache"))
    ctx = Ctx(tmp_path)
    _ENV.clear()
    argv = build(ctx)
    for k, v in _ENV.items():
        monkeypatch.setenv(k, v)
    before = _tree(tmp_path)
    capsys.readouterr()
    t0 = time.perf_counter()
    code = main(argv)
    seconds = time.perf_counter() - t0
    out, err = capsys.readouterr()
    assert code == 2, (code, err)
    lines = err.splitlines()
    line = err.rstrip("\n")
    assert len(lines) == 1 and err.endswith("\n") and line.startswith("prefbench: error: "), err
    for piece in expect:
        assert piece in line, f"{piece!r} not in {line!r}"
    assert out == ""
    assert _tree(tmp_path) == before, "something was written"
    assert not (tmp_path / "cache").exists()
    assert seconds < CASE_SECONDS, f"{seconds:.1f} s"


def test_corpus_size():
    names = [c[0] for c in CORPUS]
    assert len(names) == len(set(names))
    assert len(CORPUS) >= 100, len(CORPUS)


# ---------------------------------------------------------------------- corrupt results folders
def _corrupt_metrics(text):
    return lambda run: (run / "metrics.json").write_text(text)


def _samples(table):
    return lambda run: pq.write_table(table, run / "samples.parquet")


CORRUPTIONS = [
    ("metrics.json truncated", _corrupt_metrics('{"run_id": "x", "sui'), "metrics.json: invalid JSON"),
    ("metrics.json empty", _corrupt_metrics(""), "metrics.json: invalid JSON"),
    ("metrics.json a list", _corrupt_metrics("[1, 2]"), "metrics.json: not a JSON object"),
    ("metrics.json not UTF-8", lambda run: (run / "metrics.json").write_bytes(b'{"a": "\xff"}'), "metrics.json: not UTF-8"),
    ("metrics.json missing seed", lambda run: _edit_metrics(run, lambda m: m.pop("seed")), "metrics.json: missing seed"),
    ("metrics.json seed string", lambda run: _edit_metrics(run, lambda m: m.update(seed="zero")), "seed is not an integer"),
    ("metrics.json bad trajectory", lambda run: _edit_metrics(run, lambda m: m.update(trajectory=[{"step": "x"}])),
     "trajectory"),
    ("config.json truncated", lambda run: (run / "config.json").write_text("{"), "config.json: invalid JSON"),
    ("samples.parquet garbage", lambda run: (run / "samples.parquet").write_bytes(b"PAR1garbagePAR1"), "samples.parquet"),
    ("samples.parquet truncated", lambda run: (run / "samples.parquet").write_bytes(
        (run / "samples.parquet").read_bytes()[:200]), "samples.parquet"),
    ("samples.parquet no prompt_index", _samples(pa.table({"win": [1.0]})), "samples.parquet: no prompt_index"),
    ("samples.parquet text prompt_index", _samples(pa.table({"prompt_index": ["a"], "win": [1.0]})), "samples.parquet"),
    ("samples.parquet negative prompt_index", _samples(pa.table({"prompt_index": [-1], "win": [1.0]})),
     "prompt_index is not non-negative integers"),
]


def _edit_metrics(run: Path, edit) -> None:
    m = json.loads((run / "metrics.json").read_text())
    edit(m)
    (run / "metrics.json").write_text(json.dumps(m))


@pytest.mark.parametrize("name,corrupt,reason", CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS])
def test_report_skips_a_corrupt_run_and_says_so(tmp_path, capsys, name, corrupt, reason):
    groups = [FakeGroup("reference", {}), FakeGroup("dpo", {"beta": 0.1}, gain=0.1, kl=1.0)]
    paths = write_fake_sweep(tmp_path, groups, seeds=(0, 1), n_prompts=16)
    bad = [p for p in paths if p.name.startswith("dpo-s1")][0]
    corrupt(bad)
    capsys.readouterr()
    assert main(["report", "--results", str(tmp_path), "--resamples", "100"]) == 0
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert lines == [f"prefbench: skipped unreadable run toy/{bad.name} ({lines[0].split('(', 1)[1]}",
                     f"prefbench: skipped 1 unreadable run in {tmp_path}"], err
    assert reason in lines[0]
    assert "reference (π_SFT)" in out and "| dpo" in out  # the healthy runs still make the table


def test_several_corrupt_runs_are_counted_once_each(tmp_path, capsys):
    from harness.analysis import headline

    groups = [FakeGroup("reference", {}), FakeGroup("dpo", {"beta": 0.1}, gain=0.1, kl=1.0)]
    paths = write_fake_sweep(tmp_path, groups, seeds=(0, 1, 2), n_prompts=16)
    bad = [p for p in paths if p.name.startswith("dpo-s") and not p.name.startswith("dpo-s0")]
    for p in bad:
        (p / "metrics.json").write_text("{")
    capsys.readouterr()
    # the table at the end of `prefbench run` reads the plan's runs only: the same skip, no crash
    text = headline(tmp_path, "toy", {p.name for p in paths}, "csv", n_resamples=100)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and err[-1] == f"prefbench: skipped 2 unreadable runs in {tmp_path}", err
    assert "dpo" in text


def test_report_on_only_corrupt_runs_is_an_error_after_the_skip_lines(tmp_path, capsys):
    for p in write_fake_sweep(tmp_path, [FakeGroup("reference", {})], seeds=(0, 1), n_prompts=4):
        (p / "metrics.json").write_text("{truncated")
    capsys.readouterr()
    assert main(["report", "--results", str(tmp_path), "--resamples", "100"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 4 and err[2] == f"prefbench: skipped 2 unreadable runs in {tmp_path}"
    assert err[3] == f"prefbench: error: --results: {tmp_path}: no readable finished runs"


def test_is_complete_treats_a_corrupt_run_as_not_done(tmp_path, capsys):
    from harness.execution.results import ResultsStore

    paths = write_fake_sweep(tmp_path, [FakeGroup("reference", {})], seeds=(0,), n_prompts=4)
    store = ResultsStore(tmp_path)
    assert store.is_complete("toy", paths[0].name)
    (paths[0] / "metrics.json").write_bytes(b"\x00\x01")
    capsys.readouterr()
    assert not store.is_complete("toy", paths[0].name)  # so `run` redoes it instead of crashing at the end
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "metrics.json" in err and "redoing the run" in err


# ---------------------------------------------------------------------- output that is not a terminal
def test_a_closed_pipe_ends_quietly_without_a_traceback():
    """`prefbench list algorithms | head -3`: the reader is gone before prefbench writes."""
    p = subprocess.Popen([sys.executable, "-m", "harness.cli", "list", "algorithms"], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdout.close()  # like head, which has stopped reading
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 141 and err == "", err
    r = subprocess.run(["bash", "-c", f"{sys.executable} -m harness.cli list algorithms | head -3"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert len(r.stdout.splitlines()) == 3 and "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr, r.stderr


def test_no_progress_bars_when_stderr_is_not_a_terminal(monkeypatch, capsys):
    from harness.core.progress import progress

    monkeypatch.delenv("PREFBENCH_QUIET", raising=False)
    assert main(["list", "suites"]) == 0  # stderr is captured here: not a terminal
    assert os.environ.get("PREFBENCH_QUIET") == "1" and progress(total=3).disable


def test_an_explicit_quiet_setting_is_kept(monkeypatch, capsys):
    monkeypatch.setenv("PREFBENCH_QUIET", "0")
    assert main(["list", "suites"]) == 0
    assert os.environ["PREFBENCH_QUIET"] == "0"


# ---------------------------------------------------------------------- things that must load
def test_valid_jsonl_with_unicode_line_separators_loads(tmp_path):
    """U+2028, U+2029, U+0085 and friends are legal inside JSON strings; str.splitlines would split on them."""
    rows = [{"prompt": f"p{i} \u2028 x", "chosen": "a\u2029b\x85c\x1cd", "rejected": "e\u000bf\u000cg"} for i in range(3)]
    p = tmp_path / "p.jsonl"
    p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    df = load_pairs_table(p)
    assert df.to_dict("records") == rows


def test_a_byte_order_mark_and_crlf_are_accepted(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + jsonl(GOOD).replace(b"\n", b"\r\n"))
    assert load_pairs_table(p).to_dict("records") == [GOOD]
    s = tmp_path / "s.yaml"
    s.write_bytes(b"\xef\xbb\xbf" + TINY.read_bytes())
    assert load_suite(str(s)).name == "tiny"


def test_yaml_merge_keys_may_override_merged_values(tmp_path):
    assert load_yaml("base: &b {x: 1, y: 2}\nover:\n  <<: *b\n  x: 3\n", "f") == {"base": {"x": 1, "y": 2},
                                                                                 "over": {"x": 3, "y": 2}}


def test_seeded_batches_memory_does_not_grow_with_epochs():
    from harness.training.loop import seeded_batches

    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        g = seeded_batches(1000, 32, 1e9, seed=0)
        for _ in range(300):  # each epoch is 32 batches: 300 steps cross 9 permutations
            next(g)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000 and time.perf_counter() - t0 < 2


# ---------------------------------------------------------------------- the bombs, in a real process
BOMB_CASES = [
    ("suite alias bomb", lambda d: ["run", _write(d / "bomb.yaml", BOMB)], "alias bomb"),
    ("sweep-file alias bomb", lambda d: ["run", str(TINY), "--sweep-file", _write(d / "sw.yaml", BOMB)], "alias bomb"),
    ("--set alias bomb", lambda d: ["run", str(TINY), "--set", "dpo.loss={" + ", ".join(BOMB.strip().split("\n")) + "}"],
     "alias bomb"),
    ("--set dpo.epochs=1e9", lambda d: ["run", str(TINY), "--algorithms", "dpo", "--set", "dpo.epochs=1e9"],
     "optimizer steps"),
    ("tokenizer.vocab_size 1e9", lambda d: ["run", _write(d / "v.yaml", TINY.read_text().replace(
        "vocab_size: 400", "vocab_size: 1000000000"))], "tokenizer.vocab_size"),
    ("policy.max_length 1e8", lambda d: ["run", _write(d / "m.yaml", TINY.read_text().replace(
        "max_length: 48", "max_length: 100000000"))], "policy.max_length"),
    ("pairs file 100k-deep JSON", lambda d: ["run", _pairs_bomb(d)], "invalid JSON"),
]


def _write(p: Path, text: str) -> str:
    p.write_text(text)
    return str(p)


def _pairs_bomb(d: Path) -> str:
    (d / "deep.jsonl").write_bytes(b"[" * 100_000 + b"]" * 100_000 + b"\n")
    return _write(d / "pf.yaml", TINY.read_text().replace("pairs: {kind: sampled, samples_per_prompt: 3, max_new_tokens: 16}",
                                                          "pairs: {kind: file, path: deep.jsonl}"))


BOMB_SECONDS, BOMB_MAX_RSS_MB = 5.0, 300  # unbounded, these took minutes and asked for 5 to 70 GB


def _measure(argv: list[str], tmp: Path) -> tuple[subprocess.CompletedProcess, float, float]:
    # VmHWM: this process's peak resident memory (ru_maxrss would carry over pytest's own peak across exec)
    code = ("import re, sys, time; t = time.perf_counter(); from harness.cli import main; "
            "rc = main(sys.argv[1:]); hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()); "
            "print(f'{time.perf_counter() - t:.3f} {int(hwm.group(1)) / 1024:.0f}'); sys.exit(rc)")
    env = {**os.environ, "PREFBENCH_CACHE": str(tmp / "cache"), "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", code, *argv, "--results", str(tmp / "results")], capture_output=True,
                       text=True, cwd=ROOT, env=env, timeout=120)
    seconds, rss_mb = map(float, r.stdout.split()[-2:])
    return r, seconds, rss_mb


@pytest.mark.parametrize("name,build,message", BOMB_CASES, ids=[c[0] for c in BOMB_CASES])
def test_bombs_stop_in_bounded_time_and_memory(tmp_path, name, build, message):
    r, seconds, rss_mb = _measure(build(tmp_path), tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("prefbench: error: ") and message in r.stderr, r.stderr
    assert len(r.stderr) < 1000  # the message never prints the expanded value
    assert seconds < BOMB_SECONDS and rss_mb < BOMB_MAX_RSS_MB, (seconds, rss_mb)
    assert not (tmp_path / "results").exists() and not (tmp_path / "cache").exists()
    print(f"{name}: {seconds:.2f} s, peak RSS {rss_mb:.0f} MB")


# ---------------------------------------------------------------------- property-based tests
# 120 examples per property, derandomized (the same inputs every run: CI stays deterministic and fast);
# PREFBENCH_HYPOTHESIS_EXAMPLES=5000 explores further with fresh random inputs.
_EXPLORE = int(os.environ.get("PREFBENCH_HYPOTHESIS_EXAMPLES", "0"))
HYP = settings(max_examples=_EXPLORE or 120, deadline=2000, derandomize=not _EXPLORE, database=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
    st.sampled_from(["1e9", "-0", ".inf", "nan", "1_000", "0x1F", "~", "yes", "2024-13-45", "&a", "*a", "!!binary x"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                           max_size=4), max_leaves=12)


def _leaf_paths(d, prefix=()):
    for k, v in d.items():
        if isinstance(v, dict) and v:
            yield from _leaf_paths(v, prefix + (k,))
        yield prefix + (k,)


TINY_PATHS = sorted(set(_leaf_paths(TINY_DATA)))


def _one_line_error(e: UserError, where: str) -> None:
    line = e.one_line()
    assert len(line.splitlines()) == 1 and where in line and len(line) < 2000, line


def _bounded(fn):
    """Run ``fn`` and assert a wall-clock and traced-memory bound (per generated example)."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        return fn()
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert time.perf_counter() - t0 < 2.0 and peak < 64 * 2 ** 20, (time.perf_counter() - t0, peak)


@HYP
@given(path=st.sampled_from(TINY_PATHS), value=values)
def test_property_suite_with_any_value_anywhere_loads_or_is_one_line(tmp_path_factory, path, value):
    d = json.loads(json.dumps(TINY_DATA))
    node = d
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    f = tmp_path_factory.mktemp("s") / "s.yaml"
    f.write_text(yaml.dump(d, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), allow_unicode=True))
    try:
        _bounded(lambda: load_suite(str(f)))
    except UserError as e:
        _one_line_error(e, str(f))


@HYP
@given(text=st.one_of(st.text(max_size=300), st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
                      st.lists(st.sampled_from(["a: &x [1, 2]", "b: [*x, *x, *x]", "c: {<<: *x}", "name: tiny",
                                                "{", "[", "]", "- *x", "&y", "? ", "!!set {a}", "\t", "\x00",
                                                "version: 1", "presets: {smoke: {}, full: {}}", "name: tiny"]),
                               max_size=12).map("\n".join)))
def test_property_arbitrary_text_as_suite_loads_or_is_one_line(tmp_path_factory, text):
    f = tmp_path_factory.mktemp("t") / "t.yaml"
    f.write_bytes(text.encode("utf-8", errors="surrogatepass"))
    try:
        _bounded(lambda: load_suite(str(f)))
    except UserError as e:
        _one_line_error(e, str(f))


@HYP
@given(width=st.integers(1, 12), depth=st.integers(1, 12))
def test_property_alias_fanout_is_bounded(width, depth):
    """Alias chains of any width and depth: loaded when small, refused (quickly) when they expand past the limit."""
    lines = ["l0: &a0 [x, y]"] + [f"l{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]" for i in range(1, depth + 1)]
    text = "\n".join(lines) + "\n"
    try:
        data = _bounded(lambda: load_yaml(text, "f.yaml"))
        assert 2 * width ** depth <= 40_000 and isinstance(data, dict)
    except UserError as e:
        _one_line_error(e, "f.yaml")
        assert "alias bomb" in str(e) or "nested" in str(e)


set_items = st.one_of(
    st.text(max_size=40),
    st.builds(lambda a, k, v: f"{a}.{k}={v}", st.sampled_from(["dpo", "sft", "x", "", "dpo.dpo"]),
              st.sampled_from(["beta", "epochs", "lr", "batch_size", "loss", "label_smoothing", "", "nope"]),
              st.one_of(st.text(max_size=20), st.floats().map(repr), st.integers().map(str),
                        st.sampled_from([".inf", ".nan", "1e309", "[1,2]", "{a: 1, a: 2}", "&x [*x]", "ipo", ""]))))


@HYP
@given(items=st.lists(set_items, max_size=4))
def test_property_set_parser_and_config_build(items):
    from harness import registry

    def parse_and_build():
        for algo, vals in parse_sets(items).items():
            registry.get(algo, "--set").make_config(vals, "--set")

    try:
        _bounded(parse_and_build)
    except UserError as e:
        _one_line_error(e, "--set")


@HYP
@given(items=st.lists(set_items.map(lambda s: s + "," + s.split("=", 1)[-1]), max_size=3))
def test_property_sweep_parser_and_config_build(items):
    from harness import registry

    def parse_and_build():
        for algo, grid in parse_sweeps(items).items():
            spec = registry.get(algo, "--sweep")
            for key, vals in grid.items():
                for v in vals:
                    spec.make_config({key: v}, "--sweep")

    try:
        _bounded(parse_and_build)
    except UserError as e:
        _one_line_error(e, "--sweep")


@HYP
@given(text=st.text(max_size=60))
def test_property_parse_scalar_never_raises_anything_else(text):
    try:
        _bounded(lambda: parse_scalar(text))
    except UserError as e:
        _one_line_error(e, "--set")


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                           max_leaves=8)
pair_text = st.text(st.characters(codec="utf-8"), min_size=0, max_size=20)
rows = st.one_of(
    st.fixed_dictionaries({"prompt": pair_text, "chosen": pair_text, "rejected": pair_text}),
    st.dictionaries(st.sampled_from(["prompt", "chosen", "rejected", "extra"]), json_values | pair_text, max_size=4),
    json_values)


@HYP
@given(rows=st.lists(rows, max_size=6), ensure_ascii=st.booleans(), junk=st.binary(max_size=20), where=st.integers(0, 6))
def test_property_pairs_jsonl_loads_or_is_one_line(tmp_path_factory, rows, ensure_ascii, junk, where):
    lines = [json.dumps(r, ensure_ascii=ensure_ascii) for r in rows]
    if junk and where < len(lines):
        lines[where] = junk.decode("latin-1")
    f = tmp_path_factory.mktemp("p") / "p.jsonl"
    f.write_bytes(("\n".join(lines) + "\n").encode("utf-8", errors="surrogatepass"))
    valid = (not junk or where >= len(lines)) and rows and all(
        isinstance(r, dict) and all(isinstance(r.get(c), str) and r[c].strip() for c in ("prompt", "chosen", "rejected"))
        and r["chosen"] != r["rejected"] for r in rows)
    try:
        df = _bounded(lambda: load_pairs_table(f))
    except UserError as e:
        _one_line_error(e, str(f))
        assert not valid, f"a valid file was refused: {e}"
        return
    if valid:  # a valid file loads with its text exactly as written (U+2028 included)
        assert df.to_dict("records") == [{c: r[c] for c in ("prompt", "chosen", "rejected")} for r in rows]


@HYP
@given(data=st.binary(max_size=400), good_prefix=st.booleans())
def test_property_pairs_parquet_bytes_load_or_are_one_line(tmp_path_factory, data, good_prefix):
    d = tmp_path_factory.mktemp("q")
    f = d / "p.parquet"
    if good_prefix:  # a real Parquet file, cut or overwritten at some point
        pq.write_table(pa.table({k: [v] for k, v in GOOD.items()}), f)
        raw = f.read_bytes()
        data = raw[:len(data)] + data[len(raw):] if len(data) < len(raw) else data
    f.write_bytes(data)
    try:
        _bounded(lambda: load_pairs_table(f))
    except UserError as e:
        _one_line_error(e, str(f))
