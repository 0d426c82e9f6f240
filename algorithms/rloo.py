"""RLOO (Ahmadian et al. 2024, "Back to Basics"): REINFORCE with a leave-one-out baseline over k
samples per prompt, through TRL's ``RLOOTrainer`` (behind :mod:`harness.adapters.trl_online`).

The reward is the learned reward model of the RLHF pipeline (the same cached model as ``ppo`` for
equal ``rm_*`` settings and seed; see :mod:`harness.training.reward_model`), or the suite's gold reward with
``reward=gold``. The KL penalty to π_ref is in the reward, r − β·Σ_t log π/π_ref, with β set
explicitly. Results come from the harness's evaluation; TRL's logs go to the training log.
The shared code for the group-sampling trainers (RLOO, GRPO) lives here; ``grpo`` reuses it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from harness.core.config import hp
from harness.registry import Algorithm, register
from harness.training.hparams import LoraFields
from harness.training.reward_model import RewardModelFields


@dataclass
class OnlineFields:
    reward: Literal["learned", "gold"] = hp("learned", "reward function: the learned reward model, or the gold judge")
    lr: float = hp(2e-4, "policy learning rate (AdamW, linear decay to 0)", gt=0)
    beta: float = hp(0.05, "KL weight β (always explicit: β = 0 would be no KL to π_ref at all)", ge=0)
    steps: int = hp(24, "optimizer steps, each on freshly sampled completions", ge=1)
    prompts_per_step: int = hp(8, "prompts per step", ge=1)
    num_generations: int = hp(4, "completions per prompt (the group / leave-one-out baseline)", ge=2)
    max_completion_length: int | None = hp(None, "new tokens per completion (default: the suite's "
                                                 "evaluation.max_new_tokens)", ge=1)
    temperature: float = hp(1.0, "sampling temperature during training", gt=0)
    epsilon: float = hp(0.2, "importance-ratio clip ε", gt=0)
    num_iterations: int = hp(1, "optimizer passes over each sampled batch (μ)", ge=1)
    max_grad_norm: float = hp(1.0, "gradient clipping norm", gt=0)
    max_kl: float = hp(200.0, "divergence bound: TRL's training KL above this (nats/sequence) ends the run", gt=0)


@dataclass
class OnlineConfig(LoraFields, RewardModelFields, OnlineFields):
    pass


def online_settings(cfg, ctx) -> dict:
    keys = ("lr", "beta", "steps", "prompts_per_step", "num_generations", "temperature", "epsilon",
            "num_iterations", "max_grad_norm")
    s = {k: getattr(cfg, k) for k in keys}
    s["max_completion_length"] = cfg.max_completion_length or ctx.evaluation.max_new_tokens
    s["reward_name"] = "gold" if cfg.reward == "gold" else "reward_model"
    return s


def check_online_launch(config, world: int):
    """Under a launcher of ``world`` processes: (field, problem) when a step's completions do not split
    evenly over the processes (each trains on an equal share), else None."""
    n = config.prompts_per_step * config.num_generations
    if n % world:
        return "prompts_per_step", (f"a step's {config.prompts_per_step} × {config.num_generations} = {n} completions "
                                    f"(prompts_per_step × num_generations) do not split evenly over {world} processes")
    return None


def record_data_parallel(ctx, model, facts: dict, unit: str) -> None:
    """Under a launcher: check that every process ends with the same policy, and record the batch TRL
    trained with (``extra.data_parallel``). Nothing alone."""
    from harness.training import distributed

    if distributed.active():
        digest = distributed.agree_on_weights(model)
        ctx.record(data_parallel=distributed.data_parallel_record(digest, facts["per_device_batch"],
                                                                  facts["global_batch"], unit))


def run_online(algo: Algorithm, ctx, kind: str, extra: dict | None = None):
    """Train with TRL's ``kind`` ("rloo" / "grpo") from π_ref against the configured reward."""
    from harness.adapters import checkpoint_hook, make_log_bridge, shrink_vocab
    from harness.adapters.trl_online import CANONICAL, NAN_KEYS, prompt_texts, train_online
    from harness.training.models import neutral_generation_config

    from algorithms.ppo import train_prompts

    cfg = algo.config
    tok, judge = ctx.tokenizer, ctx.judge
    ids, text = train_prompts(ctx)
    prompts = prompt_texts(tok, ids, [text[tuple(p)] for p in ids])
    original = dict(zip(prompts, (text[tuple(p)] for p in ids)))
    prompt_ids = dict(zip(prompts, ids))
    if cfg.reward == "gold":
        def reward_fn(ps, completion_ids, texts):
            return judge.score([original[p] for p in ps], texts)
    else:
        from harness.training.reward_model import record_reward_model, rm_settings

        rm, built = ctx.reward_model(rm_settings(cfg))
        record_reward_model(ctx, rm, built)

        def reward_fn(ps, completion_ids, texts):
            return rm.score([prompt_ids[p] for p in ps], completion_ids)

    policy = ctx.init_policy(lora=False)  # with LoRA, TRL applies the adapters (π_ref: adapters disabled)
    peft_config = None
    if ctx.lora:
        from harness.training.lora import lora_config

        peft_config = lora_config(policy, ctx.lora, "lora_target_modules")
    settings = {**online_settings(cfg, ctx), **(extra or {})}
    bridge = make_log_bridge(ctx, CANONICAL, {"nan_keys": NAN_KEYS, "max_kl": cfg.max_kl},
                             on_step=checkpoint_hook(ctx, cfg.steps, lambda: policy, tok), total_steps=cfg.steps,
                             desc=f"{algo.name} seed {ctx.seed}")
    try:
        facts = train_online(kind, policy, reward_fn, tok, prompts, settings=settings,
                             seed=ctx.seed_for(algo.name), workdir=ctx.run_dir, callbacks=[bridge],
                             peft_config=peft_config)
    finally:
        bridge.close()
    shrink_vocab(policy, tok)  # removes the position-id hook; the vocabulary is the suite's already
    neutral_generation_config(policy)
    ctx.record(train_steps=facts["steps"], online_completions=facts["completions"],
               online_backend=facts["trl_backend"], train_prompts=len(prompts), reward_function=cfg.reward)
    record_data_parallel(ctx, facts["model"], facts, "completions")
    if peft_config is not None:
        from harness.training.lora import trainable_parameters

        trainable, total = trainable_parameters(facts["model"])
        ctx.record(lora_trainable_parameters=trainable, total_parameters=total)
    return facts["model"]  # with LoRA the PEFT model: the runner saves its adapter and evaluates it merged


@register("rloo", "RLOO: k samples per prompt, leave-one-out baseline, KL penalty in the reward (TRL RLOOTrainer); "
                  "learned reward model or gold reward", OnlineConfig)
class RLOO(Algorithm):
    patched_libraries = ("trl",)
    check_launch = staticmethod(check_online_launch)  # data parallel under a launcher

    def variant(self) -> str:
        return "rloo-gt" if self.config.reward == "gold" else "rloo"

    def train(self, ctx):
        return run_online(self, ctx, "rloo")
