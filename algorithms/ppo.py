"""PPO-RLHF (Ziegler et al. 2019; Stiennon et al. 2020; Ouyang et al. 2022): the classic pipeline the
DPO paper compares against, and PPO-GT, its upper reference with the gold reward.

``ppo``: (1) fit a reward model to the suite's training preference pairs (TRL ``RewardTrainer``, a
sequence-classification head on the suite's base architecture initialised from π_SFT; cached per
suite, seed and reward-model config, see :mod:`harness.training.reward_model`; its held-out pairwise accuracy is
recorded with the run); (2) optimise the policy from π_ref against it with PPO and a per-token KL
penalty to π_ref (TRL ``trl.experimental.ppo``, behind :mod:`harness.adapters.trl_ppo`).

``ppo-gt``: the same PPO against the suite's gold reward (the judge scores each rollout's text).

KL, reward and win rate in the results come from the harness's evaluation on fresh samples, like
every algorithm's; TRL's own per-update numbers (reward, KL, entropy, clip fraction) go to the
training log only. A NaN loss or a training KL above ``max_kl`` ends the run as ``diverged``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from harness.core.config import hp
from harness.registry import Algorithm, register
from harness.training.hparams import LoraFields
from harness.training.reward_model import RewardModelFields


@dataclass
class PPOCommonConfig:
    lr: float = hp(1e-4, "policy and value-head learning rate (AdamW, linear decay to 0)", gt=0)
    kl_coef: float = hp(0.05, "KL coefficient β: each token's reward is −β·KL(π‖π_ref)", ge=0)
    kl_estimator: Literal["k1", "k3"] = hp("k1", "per-token KL estimate in the penalty (k1 = log π − log π_ref)")
    total_episodes: int = hp(512, "rollouts over training (prompts, one response each); rounded up to batches", ge=1)
    batch_size: int = hp(32, "prompts per PPO update (one rollout batch)", ge=2)
    num_mini_batches: int = hp(2, "mini-batches per PPO epoch (must divide batch_size)", ge=1)
    ppo_epochs: int = hp(2, "PPO epochs over each rollout batch", ge=1)
    response_length: int | None = hp(None, "new tokens per rollout (default: the suite's evaluation.max_new_tokens)",
                                     ge=1)
    temperature: float = hp(1.0, "rollout sampling temperature (TRL's default is 0.7)", gt=0)
    cliprange: float = hp(0.2, "PPO policy ratio clip ε", gt=0)
    vf_coef: float = hp(0.1, "value-loss weight", ge=0)
    cliprange_value: float = hp(0.2, "value clip", gt=0)
    gamma: float = hp(1.0, "discount", ge=0, le=1)
    lam: float = hp(0.95, "GAE λ", ge=0, le=1)
    whiten_rewards: bool = hp(False, "whiten per-token rewards in each batch")
    missing_eos_penalty: float | None = hp(None, "subtracted from the score of a rollout with no EOS (null = off)",
                                           ge=0)
    max_kl: float = hp(200.0, "divergence bound: TRL's training KL above this (nats/sequence) ends the run", gt=0)

    def validate(self):
        if self.batch_size % self.num_mini_batches:
            return "num_mini_batches", f"got {self.num_mini_batches}, must divide batch_size ({self.batch_size})"


@dataclass
class PPOConfig(LoraFields, RewardModelFields, PPOCommonConfig):
    value_init: Literal["reward_model", "reference"] = hp(
        "reward_model", "value network: a copy of the reward model, or π_SFT's body with a new head")


@dataclass
class PPOGTConfig(LoraFields, PPOCommonConfig):
    value_init: Literal["reference"] = hp("reference", "value network: π_SFT's body with a new head")


def _settings(cfg, ctx) -> dict:
    keys = ("lr", "kl_coef", "kl_estimator", "total_episodes", "batch_size", "num_mini_batches", "ppo_epochs",
            "temperature", "cliprange", "vf_coef", "cliprange_value", "gamma", "lam", "whiten_rewards",
            "missing_eos_penalty")
    s = {k: getattr(cfg, k) for k in keys}
    s["response_length"] = cfg.response_length or ctx.evaluation.max_new_tokens
    return s


def train_prompts(ctx) -> tuple[list[list[int]], dict[tuple, str]]:
    """The training prompts (token ids, BOS first) in first-seen order, and ids -> prompt text."""
    pairs = ctx.train_pairs
    ids, text = [], {}
    for p, t in zip(pairs.prompt_ids, pairs.prompt):
        key = tuple(int(x) for x in p)
        if key not in text:
            text[key] = t
            ids.append(list(key))
    return ids, text


def gold_reward_fn(ctx, prompt_text: dict[tuple, str]):
    """The suite's judge as a reward on token ids: the same decoding and scoring as evaluation."""
    tok, judge = ctx.tokenizer, ctx.judge

    def fn(prompts: list[list[int]], responses: list[list[int]]):
        texts = tok.batch_decode(responses, skip_special_tokens=True)
        return judge.score([prompt_text[tuple(p)] for p in prompts], texts).tolist()

    return fn


def value_from_reference(ctx, tokenizer):
    return ctx.classifier_from_reference(tokenizer, "value-init")


def check_ppo_launch(config, world: int):
    """Under a launcher of ``world`` processes: (field, problem) when an update's prompts do not split
    evenly over the processes, or a process's share not into ``num_mini_batches``; else None."""
    if config.batch_size % world:
        return "batch_size", f"{config.batch_size} prompts per update do not split evenly over {world} processes"
    if (config.batch_size // world) % config.num_mini_batches:
        return "num_mini_batches", (f"got {config.num_mini_batches}, must divide each process's share of the batch "
                                    f"({config.batch_size} / {world} = {config.batch_size // world})")
    return None


def run_ppo(algo: Algorithm, ctx, reward, value_model, tokenizer):
    """Shared by ``ppo`` and ``ppo-gt``: PPO from π_ref, returned with the suite vocabulary."""
    from harness.adapters import checkpoint_hook, extend_vocab, make_log_bridge, shrink_vocab
    from harness.adapters.trl_ppo import CANONICAL, NAN_KEYS, num_updates, train_ppo
    from harness.training.models import neutral_generation_config

    cfg = algo.config
    settings = _settings(cfg, ctx)
    prompts, _ = train_prompts(ctx)
    if len(prompts) < cfg.batch_size:
        from harness.core.errors import UserError

        raise UserError("--set", f"{algo.name}.batch_size",
                        f"got {cfg.batch_size}, larger than the {len(prompts)} training prompts")
    policy = ctx.init_policy(lora=False)  # with LoRA, TRL applies the adapters (π_ref: adapters disabled)
    peft_config = None
    if ctx.lora:
        from harness.training.lora import lora_config

        peft_config = lora_config(policy, ctx.lora, "lora_target_modules")
    extend_vocab(policy, tokenizer)
    total = num_updates(cfg.total_episodes, cfg.batch_size)
    bridge = make_log_bridge(ctx, CANONICAL, {"nan_keys": NAN_KEYS, "max_kl": cfg.max_kl},
                             on_step=checkpoint_hook(ctx, total, lambda: policy, ctx.tokenizer), total_steps=total,
                             desc=f"{algo.name} seed {ctx.seed}")
    try:
        facts = train_ppo(policy, value_model, reward, tokenizer, prompts, settings=settings,
                          seed=ctx.seed_for(algo.name), workdir=ctx.run_dir, callbacks=[bridge],
                          peft_config=peft_config)
    finally:
        bridge.close()
    shrink_vocab(policy, ctx.tokenizer)
    neutral_generation_config(policy)
    ctx.record(train_steps=facts["updates"], ppo_updates=facts["updates"], ppo_episodes=facts["episodes"],
               ppo_optimizer_steps=facts["optimizer_steps"], ppo_backend=facts["trl_backend"],
               train_prompts=len(prompts))
    from algorithms.rloo import record_data_parallel

    record_data_parallel(ctx, facts["model"], facts, "prompts")
    if peft_config is not None:
        from harness.training.lora import trainable_parameters

        trainable, total = trainable_parameters(facts["model"])
        ctx.record(lora_trainable_parameters=trainable, total_parameters=total)
    return facts["model"]  # with LoRA the PEFT model: the runner saves its adapter and evaluates it merged


@register("ppo", "PPO-RLHF: reward model fitted to the pairs (TRL RewardTrainer), then PPO with a KL penalty "
                 "to π_ref (TRL experimental PPO)", PPOConfig)
class PPO(Algorithm):
    patched_libraries = ("trl",)
    check_launch = staticmethod(check_ppo_launch)  # data parallel under a launcher

    def train(self, ctx):
        import copy

        from harness.adapters import trainer_tokenizer
        from harness.training.reward_model import record_reward_model, rm_settings

        rm, built = ctx.reward_model(rm_settings(self.config))
        record_reward_model(ctx, rm, built)
        tokenizer = trainer_tokenizer(ctx.tokenizer, padding_side="left")
        if self.config.value_init == "reward_model":
            value = copy.deepcopy(rm.model)
            for p in value.parameters():
                p.requires_grad_(True)
            value.train()
        else:
            value = value_from_reference(ctx, tokenizer)
        return run_ppo(self, ctx, rm.model, value, tokenizer)


@register("ppo-gt", "PPO against the suite's gold reward instead of a learned one (the DPO paper's PPO-GT)",
          PPOGTConfig)
class PPOGT(Algorithm):
    patched_libraries = ("trl",)
    check_launch = staticmethod(check_ppo_launch)  # data parallel under a launcher

    def train(self, ctx):
        from harness.adapters import trainer_tokenizer
        from harness.adapters.trl_ppo import FunctionReward

        tokenizer = trainer_tokenizer(ctx.tokenizer, padding_side="left")
        _, text = train_prompts(ctx)
        return run_ppo(self, ctx, FunctionReward(gold_reward_fn(ctx, text)), value_from_reference(ctx, tokenizer),
                       tokenizer)
