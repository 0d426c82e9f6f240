"""Reward-model training through TRL's ``RewardTrainer`` (trl 1.12.0). The only TRL code for it.

Pairs go in pre-tokenized (``chosen_ids``/``rejected_ids`` = prompt + completion ids, used as-is:
no EOS added, nothing re-tokenized), so the reward model sees exactly the token ids the harness
scores and PPO generates. Loss: −log σ(r(x, y_w) − r(x, y_l)) (Bradley–Terry), as in TRL.
Held-out accuracy is *not* taken from TRL (its ``eval_accuracy`` is a mean of per-batch means); the
caller scores the held-out pairs itself (:mod:`harness.training.reward_model`).

The reward model is a cached suite artifact: under a launcher one process builds it while the others
wait for it on the artifact's lock, like π_SFT, so it trains in that process alone
(:func:`harness.training.distributed.single_process`), and the launch resumes with the policy training.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Sequence

from harness.training.device import trainer_args


def train_reward_model(model, tokenizer, chosen: Sequence[Sequence[int]], rejected: Sequence[Sequence[int]], *,
                       lr: float, epochs: float, batch_size: int, max_length: int, seed: int,
                       workdir: Path, log_fn=None, lora: dict | None = None) -> list[dict[str, Any]]:
    """Train ``model`` (a sequence-classification model with ``num_labels=1``) in place on full
    sequences ``chosen[i]`` ≻ ``rejected[i]``. ``tokenizer`` pads (its pad token must be distinct
    from EOS, see :mod:`harness.adapters`). Returns TRL's per-step logs.

    ``lora`` (r, alpha, dropout, target_modules): TRL trains PEFT LoRA adapters (``peft_config``; the
    score head trains fully, as PEFT does for SEQ_CLS) and they are merged into ``model`` in place
    afterwards, so the caller holds a plain model either way."""
    from harness.training import distributed

    with distributed.single_process():  # under a launcher: this process alone (the others wait for the artifact)
        return _train(model, tokenizer, chosen, rejected, lr=lr, epochs=epochs, batch_size=batch_size,
                      max_length=max_length, seed=seed, workdir=workdir, log_fn=log_fn, lora=lora)


def _train(model, tokenizer, chosen, rejected, *, lr, epochs, batch_size, max_length, seed, workdir, log_fn,
           lora) -> list[dict[str, Any]]:
    from datasets import Dataset
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from harness.adapters import hide_vllm_from_trl
    from harness.core.progress import progress

    hide_vllm_from_trl()
    from trl import RewardConfig, RewardTrainer

    workdir = Path(workdir)
    ds = Dataset.from_dict({"chosen_ids": [list(map(int, c)) for c in chosen],
                            "rejected_ids": [list(map(int, r)) for r in rejected]})
    args = RewardConfig(
        output_dir=str(workdir / "trl_reward"),
        **trainer_args(),  # device, precision, checkpointing: harness.training.device
        per_device_train_batch_size=batch_size, num_train_epochs=epochs, learning_rate=lr,
        lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0, max_length=max_length,
        seed=seed, data_seed=seed, save_strategy="no", eval_strategy="no", report_to="none",
        logging_steps=1, disable_tqdm=True, dataloader_num_workers=0)
    LOGS: list[dict] = []

    class Progress(TrainerCallback):
        bar = None

        def on_train_begin(self, args, state, control, **kw):
            self.bar = progress(total=state.max_steps, desc="reward model", unit="step")

        def on_step_end(self, args, state, control, **kw):
            self.bar.update(1)

        def on_train_end(self, args, state, control, **kw):
            self.bar.close()

    class Logs(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            row = {"step": int(state.global_step), **{k: float(v) for k, v in (logs or {}).items()
                                                       if isinstance(v, (int, float))}}
            if "loss" in row:
                LOGS.append(row)
                if log_fn is not None:
                    log_fn(row)

    peft_config = None
    if lora:
        from peft import LoraConfig

        from harness.training.lora import check_targets, target_modules

        check_targets(model, lora["target_modules"], "rm_lora_target_modules")
        peft_config = LoraConfig(task_type="SEQ_CLS", r=lora["r"], lora_alpha=lora["alpha"],
                                 lora_dropout=lora["dropout"], target_modules=target_modules(lora["target_modules"]))
    trainer = RewardTrainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer,
                            callbacks=[Progress(), Logs()], peft_config=peft_config)
    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    if len(trainer.train_dataset) != len(ds):
        raise RuntimeError(f"RewardTrainer dropped {len(ds) - len(trainer.train_dataset)} pairs longer than "
                           f"max_length={max_length}")
    try:
        trainer.train()
    finally:
        shutil.rmtree(workdir / "trl_reward", ignore_errors=True)
    if peft_config is not None:
        trainer.model.merge_and_unload()  # folds the adapters into ``model`` itself (PEFT edits it in place)
    model.eval()
    return LOGS


def trl_version() -> str:
    import trl

    return trl.__version__
