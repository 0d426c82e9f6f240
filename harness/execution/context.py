"""What an algorithm's ``train`` sees (:class:`TrainContext`): the suite's shared artifacts, seeds,
logging and checkpoint hooks.

The interface, and the only way an algorithm reaches suite artifacts:

- data: ``tokenizer``, ``train_pairs`` (prompt, chosen and rejected token ids with cached reference
  log-probabilities), ``max_length``, ``judge`` (the suite's gold judge, for gold-reward baselines),
  ``evaluation`` (the suite's evaluation settings), ``reward_model(settings)`` (the learned reward model
  shared by every run with the same settings and seed), ``classifier_from_reference(tokenizer, purpose)``
  (a value model on π_SFT's body);
- policy: ``init_policy()``, a fresh trainable copy of π_ref with dropout off, on the run's device, with
  LoRA adapters when the run's config turns LoRA on (``lora``; see :mod:`harness.training.lora`);
- seeds: ``seed`` (the run's seed, for naming only) and ``seed_for(purpose)``, a seed derived from it
  for one purpose; ``data_seed`` is ``seed_for("data-order")``. Every random stream of a run is derived,
  so no two uses share a stream and a new use does not shift existing ones;
- records: ``log(step, **metrics)`` (train_log.jsonl), ``record(**facts)`` (metrics.json ``extra``),
  ``say(msg)``;
- checkpoints: ``checkpoint_steps(total)`` and ``checkpoint(step, model)`` evaluate along training;
  ``resume_dir``/``save_every``/``restore`` serve resumable training (:mod:`harness.training.resume`).

``art`` (the :class:`harness.execution.artifacts.SuiteArtifacts`) stays reachable for the harness's own
training plumbing; algorithms use the members above.
"""
from __future__ import annotations

from pathlib import Path

from harness.core import seeds, tracking
from harness.core.progress import say


class TrainContext:
    """What an algorithm's ``train`` sees: shared artifacts, its seed, logging and checkpoint hooks."""

    def __init__(self, art, seed: int, run_dir: Path, n_checkpoints: int, evaluate_checkpoint,
                 resume_dir: Path | None = None, save_every: int = 0, lora: dict | None = None):
        self.lora = lora  # LoRA settings of the run (harness.training.hparams.lora_settings), None: full fine-tuning
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

    @property
    def judge(self):
        return self.art.judge

    @property
    def evaluation(self):
        return self.art.suite.evaluation

    def reward_model(self, settings: dict):
        """(reward model, built by this call): cached per π_ref, pairs, run seed and settings."""
        from harness.training.reward_model import get_reward_model

        return get_reward_model(self.art, self.seed, settings)

    def classifier_from_reference(self, tokenizer, purpose: str):
        """A one-output sequence classifier with π_SFT's body and a new head seeded for ``purpose``
        (value models)."""
        from harness.training.reward_model import classifier_from_reference

        return classifier_from_reference(self.art, tokenizer, self.seed_for(purpose))

    def seed_for(self, purpose: str) -> int:
        return seeds.derive(self.seed, purpose)

    @property
    def data_seed(self) -> int:
        """The seed of the order in which training examples are visited."""
        return self.seed_for("data-order")

    def init_policy(self, lora: bool = True):
        """A fresh, trainable copy of π_ref: every algorithm starts from the same weights, on the run's
        device; with LoRA on, π_SFT with fresh adapters (only they train). ``lora=False``: without them,
        for a trainer that applies ``self.lora`` itself (TRL's, through ``peft_config``)."""
        import torch

        from harness.training import device
        from harness.training.loop import disable_dropout

        torch.manual_seed(self.seed_for("policy-init"))  # seeds any newly initialised heads
        model = self.art.load_reference()
        disable_dropout(model)
        res = device.current()
        if res.gradient_checkpointing and getattr(model, "supports_gradient_checkpointing", False):
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.config.use_cache = False
        if self.lora and lora:
            from harness.training.lora import apply_lora, trainable_parameters

            model = apply_lora(model, self.lora, "lora_target_modules")
            trainable, total = trainable_parameters(model)
            self.record(lora_trainable_parameters=trainable, total_parameters=total)
        model = device.place(model)
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
        tracking.log(step, metrics)  # --report-to (harness.core.tracking); a no-op by default

    def record(self, **facts) -> None:
        """Store run-level facts with the run's metrics (``metrics.json`` -> ``extra``)."""
        self.extra.update(facts)

    def checkpoint_steps(self, total: int) -> list[int]:
        n = self.n_checkpoints
        return sorted({max(1, round(total * k / (n + 1))) for k in range(1, n + 1)}) if n else []

    def checkpoint(self, step: int, model) -> None:
        metrics = self._evaluate_checkpoint(model, f"step {step}")
        self.trajectory.append({"step": step, **metrics})
        tracking.log(step, metrics, prefix="eval/")
        model.train()

    def close(self) -> None:
        self._log.close()
