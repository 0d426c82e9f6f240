"""RLOO and GRPO through TRL 1.12.0 (``trl.RLOOTrainer``, ``trl.GRPOTrainer``). The only code that
knows their API. The contract with the algorithms is :func:`train_online`: a policy, a reward
function over token ids, prompts, and plain settings in; the policy trained in place.

Both sample ``num_generations`` completions per prompt (temperature, no top-k/top-p), stop at EOS,
and use the group as the baseline: RLOO (Ahmadian et al. 2024) subtracts the leave-one-out mean
reward and puts the KL penalty in the reward, ``r − β·Σ_t (log π − log π_ref)`` (k1, per sequence);
GRPO (Shao et al. 2024) normalises rewards within the group and adds ``β·k3`` per token to the loss.
β is always set explicitly (GRPO's default of 0 means no KL term and no reference model: not RLHF).

TRL builds the reference model itself from ``policy.config._name_or_path`` (there is no
``ref_model`` argument): the harness's policies are loaded from π_SFT's folder, so that path is π_ref.
The suite tokenizer is used as is (pad = EOS is harmless here: TRL masks by the first EOS and by
explicit prompt masks), with the prompt's BOS given as text so TRL's tokenisation reproduces the
harness's prompt ids exactly (checked).

Under a launcher (``accelerate launch`` / ``torchrun``) the trainer runs data parallel through
accelerate on the launch's process group (:func:`harness.training.distributed.join`): a step's
``prompts_per_step × num_generations`` completions are split evenly over the processes (TRL's
per-device batch), each process samples its share with its own seed (TRL seeds per process), rewards
are gathered for the group baselines, and gradients are averaged (DDP). The global batch, and so the
hyperparameters, are those of a single process; the samples are not.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, Sequence

from harness.adapters import hide_vllm_from_trl, positions_from_attention_mask, quiet_transformers
from harness.training import distributed
from harness.training.device import trainer_args

# TRL's log keys -> the harness's canonical training-log names (units as in trl_ppo.CANONICAL)
CANONICAL = {"reward": "reward", "reward_std": "reward_std", "entropy": "entropy",
             "clip_fraction": "clip_ratio/region_mean", "loss": "loss", "grad_norm": "grad_norm",
             "length": "completions/mean_length", "lr": "learning_rate",
             # TRL logs a token-level mean; times the mean completion length it is the batch mean of the
             # per-sequence KL (both average over the same completions, EOS included)
             "kl": lambda logs: (logs["kl"] * logs["completions/mean_length"]
                                 if "kl" in logs and "completions/mean_length" in logs else None)}
NAN_KEYS = ["loss", "grad_norm", "reward", "kl"]


def prompt_texts(tokenizer, prompt_ids: Sequence[Sequence[int]], prompts: Sequence[str]) -> list[str]:
    """Prompt strings that TRL's tokenisation turns into exactly ``prompt_ids`` (BOS as its text)."""
    out = []
    for ids, text in zip(prompt_ids, prompts):
        ids = [int(i) for i in ids]
        t = (tokenizer.bos_token if ids and ids[0] == tokenizer.bos_token_id else "") + text
        got = tokenizer(text=t)["input_ids"]
        if got != ids:
            raise ValueError(f"prompt {text!r}: TRL would tokenise it as {got}, the harness uses {ids}")
        out.append(t)
    return out


def train_online(kind: str, policy, reward_fn: Callable[[list[str], list[list[int]], list[str]], Sequence[float]],
                 tokenizer, prompts: Sequence[str], *, settings: dict, seed: int, workdir: Path,
                 callbacks: list, peft_config=None) -> dict:
    """Optimise ``policy`` in place with ``kind`` = "rloo" or "grpo".

    ``peft_config``: LoRA. TRL wraps ``policy`` in a PEFT model whose adapters alone train; π_ref is the
    same weights with the adapters disabled (no second copy). The trained PEFT model is returned as
    ``facts["model"]`` (``policy`` then holds its adapter layers).

    ``reward_fn(prompts, completion_ids, completion_texts) -> floats``: prompts as given here,
    completion ids up to and including EOS, texts decoded without special tokens.
    ``settings``: lr, beta, steps, prompts_per_step, num_generations, max_completion_length,
    temperature, epsilon (clip), num_iterations, max_grad_norm; GRPO also loss_type, scale_rewards."""
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    s = settings
    out = Path(workdir) / f"trl_{kind}"
    distributed.join()  # under a launcher: accelerate uses the launch's process group (no-op alone)
    completions = s["prompts_per_step"] * s["num_generations"]
    common = dict(
        output_dir=str(out), **trainer_args(),  # device, precision, checkpointing: harness.training.device
        per_device_train_batch_size=distributed.per_device(completions, "batch of completions"),
        gradient_accumulation_steps=1,
        num_generations=s["num_generations"], max_completion_length=s["max_completion_length"],
        temperature=s["temperature"], top_p=1.0, top_k=0, beta=s["beta"], learning_rate=s["lr"],
        lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0, max_grad_norm=s["max_grad_norm"],
        num_iterations=s["num_iterations"], epsilon=s["epsilon"], max_steps=s["steps"], logging_steps=1,
        save_strategy="no", seed=seed, data_seed=seed, report_to="none", disable_tqdm=True,
        disable_dropout=True, log_completions=False, dataloader_num_workers=0,
        log_level_replica="passive")  # under a launcher the other processes keep the harness's log level
    if kind == "rloo":
        hide_vllm_from_trl()
        from trl import RLOOConfig as Config, RLOOTrainer as Trainer
    elif kind == "grpo":
        hide_vllm_from_trl()
        from trl import GRPOConfig as Config, GRPOTrainer as Trainer

        common.update(loss_type=s["loss_type"], scale_rewards=s["scale_rewards"])
    else:
        raise ValueError(kind)
    args = Config(**common)

    def reward(prompts, completions, completion_ids=None, **kw):
        return [float(x) for x in reward_fn(list(prompts), [list(c) for c in completion_ids], list(completions))]

    reward.__name__ = s.get("reward_name", "reward")
    ds = Dataset.from_dict({"prompt": list(prompts)})
    positions_from_attention_mask(policy)
    try:
        with quiet_transformers():
            trainer = Trainer(model=policy, reward_funcs=reward, args=args, train_dataset=ds,
                              processing_class=tokenizer, callbacks=callbacks, peft_config=peft_config)
            for cb in (PrinterCallback, ProgressCallback):
                trainer.remove_callback(cb)
            if getattr(trainer, "ref_model", None) is not None:
                positions_from_attention_mask(trainer.ref_model)
            elif s["beta"] != 0 and peft_config is None:  # with LoRA, π_ref = the adapters disabled
                raise RuntimeError(f"TRL {kind} built no reference model although beta={s['beta']}")
            trainer.train()
    finally:
        shutil.rmtree(out, ignore_errors=True)
    model = trainer.model if peft_config is not None else policy
    model.eval()
    return {"steps": int(s["steps"]), "completions": int(s["steps"] * s["prompts_per_step"] * s["num_generations"]),
            "trl_backend": f"trl {_trl_version()} {Trainer.__name__}", "model": model,
            # what TRL trained with: completions per process and per optimizer step over all processes
            "per_device_batch": int(args.per_device_train_batch_size),
            "global_batch": int(args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps)}


def _trl_version() -> str:
    import trl

    return trl.__version__
