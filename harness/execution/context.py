"""What an algorithm's ``train`` sees (:class:`TrainContext`): shared artifacts, its seed, logging and
checkpoint hooks."""
from __future__ import annotations

from pathlib import Path

from harness.core import seeds
from harness.core.progress import say


class TrainContext:
    """What an algorithm's ``train`` sees: shared artifacts, its seed, logging and checkpoint hooks."""

    def __init__(self, art, seed: int, run_dir: Path, n_checkpoints: int, evaluate_checkpoint,
                 resume_dir: Path | None = None, save_every: int = 0):
        self.resume_dir = resume_dir  # mid-run checkpoints (harness/training/resume.py); None: the backend has none
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

        from harness.training.loop import disable_dropout

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
