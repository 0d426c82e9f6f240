"""Fabricated run folders with known structure, for tests and the analysis benchmark.

``write_fake_sweep`` writes config.json, metrics.json, train_log.jsonl and samples.parquet in the
results layout of ``harness.execution.runner`` without training anything: per-prompt difficulty shared by all
runs (as the real suites share their evaluation prompts), a per-group gain, a per-seed offset, and
a KL that grows as β shrinks. The numbers are a toy model, not a simulation of DPO.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from harness.core.hashing import content_hash
from harness.execution.results import STORE_MARKER, write_json

VERSIONS = {"python": "3.11.7", "numpy": "2.4.6", "pandas": "3.1.1", "scipy": "1.17.1", "torch": "2.13.0+cpu",
            "transformers": "5.19.0", "trl": "1.12.0"}


@dataclass
class FakeGroup:
    algorithm: str
    hyperparameters: dict
    gain: float = 0.0  # mean gold-reward gain over π_SFT
    kl: float = 0.0  # mean sequence KL (nats)
    length_shift: float = 0.0  # mean extra tokens over the baseline
    variant: str | None = None
    status: dict[int, str] = field(default_factory=dict)  # seed -> diverged | failed (default ok)
    versions: dict[int, dict] = field(default_factory=dict)  # seed -> library-version overrides


def default_groups(betas=(0.05, 0.1, 0.5)) -> list[FakeGroup]:
    """π_SFT, SFT and DPO at several β: smaller β, larger KL and (here) larger gain."""
    base = {"lr": 1e-4, "batch_size": 32}
    groups = [FakeGroup("reference", {}), FakeGroup("sft", dict(base), gain=0.05, kl=0.3, length_shift=1.0)]
    for b in betas:
        groups.append(FakeGroup("dpo", {**base, "beta": b, "loss": "sigmoid"}, gain=0.12 / (1 + 4 * b) + 0.05,
                                kl=0.4 / b, length_shift=4.0 / (1 + 5 * b)))
    return groups


def write_fake_sweep(root: Path | str, groups: list[FakeGroup] | None = None, seeds=(0, 1, 2), n_prompts: int = 64,
                     suite: str = "toy", preset: str = "smoke", checkpoints: int = 2, train_steps: int = 40,
                     samples_per_prompt: int = 1, seed: int = 0, log_steps: bool = True,
                     artifacts: dict | None = None) -> list[Path]:
    """Write one run folder per (group, seed) under ``root/suite``; returns their paths."""
    root = Path(root)
    (root / suite).mkdir(parents=True, exist_ok=True)
    marker = root / STORE_MARKER
    if not marker.exists():
        marker.write_text(json.dumps({"layout": 1}) + "\n")
    groups = default_groups() if groups is None else groups
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0.0, 0.3, n_prompts)
    n = n_prompts * samples_per_prompt
    prompt_index = np.repeat(np.arange(n_prompts), samples_per_prompt)
    sample_index = np.tile(np.arange(samples_per_prompt), n_prompts)
    base_reward = np.clip(difficulty[prompt_index] + rng.normal(0, 0.4, n), -1, 1)
    base_len = rng.poisson(30, n).astype(np.int64)
    paths = []
    for g_i, g in enumerate(groups):
        variant = g.variant or g.algorithm
        for s in seeds:
            r = np.random.default_rng([seed, g_i, s])
            key = {"g": g_i, "hp": g.hyperparameters, "v": variant}
            if preset != "smoke" or artifacts:  # other presets or artifacts are other runs (other ids)
                key.update(preset=preset, artifacts=artifacts)
            run_id = f"{g.algorithm}-s{s}-{content_hash(key, 10)}"
            d = root / suite / run_id
            d.mkdir(parents=True, exist_ok=True)
            status = g.status.get(s, "ok")
            versions = {**VERSIONS, **g.versions.get(s, {})}
            seed_off = r.normal(0, 0.02) if g.algorithm != "reference" else 0.0
            kl_scale = g.kl * np.exp(r.normal(0, 0.1))
            config = {"algorithm": g.algorithm, "variant": variant, "hyperparameters": g.hyperparameters, "seed": s,
                      "run_id": run_id, "preset_name": preset, "sampler": "hf",
                      "preset": {"eval_prompts": n_prompts, "eval_checkpoints": checkpoints, "train_prompts": 100},
                      "suite": {"name": suite, "version": 1, "evaluation": {
                          "temperature": 1.0, "max_new_tokens": 48, "samples_per_prompt": samples_per_prompt,
                          "batch_size": 64}},
                      "judge": {"kind": "vader", "target": "completion", "version": "3.3.2"},
                      "artifacts": artifacts or {"reference": "ref0", "baseline": "base0", "pairs": "pairs0"},
                      "library_versions": versions, "hardware": {"machine": "x86_64", "cpu": "fake", "cpu_count": 2},
                      "git_commit": "0" * 40}
            write_json(d / "config.json", config)
            steps = train_steps if g.algorithm != "reference" else 0
            trajectory, metrics, failure = [], {}, None
            fail_step = steps // 2 if status != "ok" else steps
            for k in range(1, checkpoints + 1):
                step = max(1, round(steps * k / (checkpoints + 1))) if steps else 0
                if not steps or step >= fail_step:
                    continue
                frac = k / (checkpoints + 1)
                trajectory.append({"step": step, "gold_reward": float(base_reward.mean() + frac * g.gain + seed_off
                                                                      + r.normal(0, 0.01)),
                                   "kl": float(frac * kl_scale), "win_rate": float(0.5 + frac * g.gain),
                                   "length": float(base_len.mean() + frac * g.length_shift)})
            if log_steps and steps:
                with open(d / "train_log.jsonl", "w") as f:
                    for t in range(1, fail_step + 1):
                        row = {"step": t, "loss": float(0.69 * np.exp(-t / steps) + r.normal(0, 0.02)),
                               "grad_norm": float(abs(r.normal(1.5, 0.3))), "lr": 1e-4}
                        if g.algorithm == "dpo":
                            row.update({"rewards/margin": float(t / steps + r.normal(0, 0.05)),
                                        "rewards/accuracy": float(min(1, 0.5 + 0.4 * t / steps + r.normal(0, 0.05)))})
                        f.write(json.dumps(row) + "\n")
            else:
                (d / "train_log.jsonl").write_text("")
            if status == "ok":
                gold = np.clip(difficulty[prompt_index] + g.gain + seed_off + r.normal(0, 0.4, n), -1, 1)
                if g.algorithm == "reference":
                    gold = np.clip(difficulty[prompt_index] + r.normal(0, 0.4, n), -1, 1)
                win = np.where(gold > base_reward, 1.0, np.where(gold < base_reward, 0.0, 0.5))
                kl = r.gamma(2.0, kl_scale / 2.0, n) if kl_scale > 0 else np.zeros(n)
                length = np.maximum(1, base_len + np.round(g.length_shift + r.normal(0, 3, n))).astype(np.int64)
                finished = r.uniform(size=n) > 0.2
                table = pa.table({"prompt_index": prompt_index, "sample_index": sample_index, "length": length,
                                  "finished": finished, "gold_reward": gold, "baseline_reward": base_reward,
                                  "baseline_length": base_len, "win": win, "kl": kl, "kl_k1": kl, "kl_k3": kl})
                pq.write_table(table, d / "samples.parquet")
                per_prompt_win = np.bincount(prompt_index, weights=win) / samples_per_prompt
                metrics = {"n_prompts": n_prompts, "n_samples": n, "gold_reward": float(gold.mean()),
                           "win_rate": float(per_prompt_win.mean()), "kl": float(kl.mean()),
                           "kl_k1": float(kl.mean()), "kl_k3": float(kl.mean()),
                           "kl_per_token": float(kl.sum() / length.sum()), "length": float(length.mean()),
                           "baseline_length": float(base_len.mean()), "truncation_rate": float(1 - finished.mean()),
                           "distinct_2": 0.4, "wins": int((win == 1).sum()), "ties": int((win == 0.5).sum()),
                           "losses": int((win == 0).sum())}
            else:
                failure = {"step": fail_step, "reason": "loss is NaN"} if status == "diverged" else \
                    {"reason": "RuntimeError: fabricated failure"}
            write_json(d / "metrics.json", {
                "run_id": run_id, "suite": suite, "suite_version": 1, "preset": preset, "algorithm": g.algorithm,
                "variant": variant, "hyperparameters": g.hyperparameters, "seed": s, "status": status,
                "failure": failure, "metrics": metrics, "trajectory": trajectory,
                "extra": {"train_steps": steps} if steps and status == "ok" else {}, "timing": {},
                "library_versions": versions})
            paths.append(d)
    return paths
