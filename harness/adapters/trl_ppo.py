"""PPO through TRL 1.12.0's ``trl.experimental.ppo.PPOTrainer``. The only code that knows its API.

``trl.experimental`` may change without notice (PPO is gone from trl 1.13 on): a change, or a swap
to another PPO backend, touches this file only. The contract with the algorithms is
:func:`train_ppo`: a policy, a value model, a reward (a sequence-classification model, or a Python
function of token ids for a gold reward), prompts as token ids, and plain settings in; the policy
trained in place. The trainer's per-update logs go to ``ctx.log`` through the callbacks the caller
passes (:func:`harness.adapters.make_log_bridge`).

What TRL 1.12.0 does with these: each update samples one
response per prompt for ``batch_size`` prompts at ``temperature`` (top-k 0, top-p 1), stops at EOS
(``stop_token="eos"``), scores prompt + response with the reward model at the last response token,
adds the per-token penalty −kl_coef·KL(π‖π_ref) (estimator ``kl_estimator``, at the same
temperature), and runs ``num_ppo_epochs`` × ``num_mini_batches`` clipped policy + value updates.
The tokenizer must pad with a token distinct from EOS (see :mod:`harness.adapters`).

Under a launcher (``accelerate launch`` / ``torchrun``) PPO runs data parallel through accelerate on
the launch's process group (:func:`harness.training.distributed.join`): each update's ``batch_size``
prompts are split evenly over the processes (TRL's per-device batch; its ``batch_size`` is the sum),
each process samples its rollouts with its own seed (TRL offsets it by rank), and policy and value
gradients are averaged (DDP). ``num_mini_batches`` then divides each process's share.
"""
from __future__ import annotations

import contextlib
import copy
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

from harness.adapters import hide_vllm_from_trl, quiet_transformers, quiet_trl, require_patch
from harness.training import distributed
from harness.training.device import trainer_args

# TRL's per-update log keys -> the harness's canonical training-log names. Units match the online
# trainers': kl in nats per sequence (TRL's estimator at the rollout temperature), entropy in nats
# per token (full-distribution entropy), clip_fraction the fraction of clipped token ratios.
CANONICAL = {"reward": "objective/scores", "kl": "objective/kl", "entropy": "policy/entropy_avg",
             "clip_fraction": "policy/clipfrac_avg", "sequence_neg_logp": "objective/entropy",
             "policy_loss": "loss/policy_avg", "value_loss": "loss/value_avg", "approx_kl": "policy/approxkl_avg",
             "rlhf_reward": "objective/rlhf_reward", "lr": "lr"}
NAN_KEYS = ["loss/policy_avg", "loss/value_avg", "objective/scores", "objective/kl"]


class FunctionReward:
    """Marker for a reward given as a Python function ``fn(prompt_ids_rows, response_ids_rows) -> floats``
    over token ids (prompt without padding; response up to and including its EOS, no padding)."""

    def __init__(self, fn: Callable[[list[list[int]], list[list[int]]], Sequence[float]]):
        self.fn = fn


def _function_reward_module(fn, pad_id: int):
    import torch

    class _FunctionRewardModule(torch.nn.Module):
        # The trainer only moves it (.to), disables its dropout, and hands it to get_reward.
        prefbench_function_reward = True

        def rewards(self, query_responses, context_length: int):
            q = query_responses[:, :context_length]
            r = query_responses[:, context_length:]
            prompts = [row[row != pad_id].tolist() for row in q]
            responses = []
            for row in r.tolist():
                responses.append(row[:row.index(pad_id)] if pad_id in row else row)
            return torch.as_tensor(list(fn(prompts, responses)), dtype=torch.float32, device=query_responses.device)

    return _FunctionRewardModule()


@contextlib.contextmanager
def _reward_dispatch(ppo_module):
    """Route TRL's ``get_reward`` for a function reward to the function (TRL calls the reward model
    through its backbone and score head, so a Python reward needs this hook; it is the only way to
    know where the prompt ends). Restored on exit."""
    require_patch("trl-ppo-get-reward")
    original = ppo_module.get_reward

    def get_reward(model, query_responses, pad_token_id, context_length):
        if getattr(model, "prefbench_function_reward", False):
            return None, model.rewards(query_responses, context_length), None
        return original(model, query_responses, pad_token_id, context_length)

    ppo_module.get_reward = get_reward
    try:
        yield
    finally:
        ppo_module.get_reward = original


def _skip_distributed_loading(trainer) -> None:
    """PPOTrainer never runs ``Trainer.__init__``, which sets this flag; transformers' saving reads it."""
    require_patch("trl-ppo-distributed-loading")
    trainer.is_distributed_loading_by_transformers = False


def train_ppo(policy, value_model, reward: Any, tokenizer, prompts: Sequence[Sequence[int]], *,
              settings: dict, seed: int, workdir: Path, callbacks: list, peft_config=None) -> dict:
    """Optimise ``policy`` in place with PPO. ``reward``: a sequence-classification model (num_labels
    1) or a :class:`FunctionReward`. ``settings``: lr, kl_coef, kl_estimator, total_episodes,
    batch_size, num_mini_batches, ppo_epochs, response_length, temperature, cliprange, vf_coef,
    cliprange_value, gamma, lam, whiten_rewards, missing_eos_penalty. Returns run facts (number of
    updates, optimizer steps, episodes). ``peft_config``: LoRA on the policy (TRL wraps it; π_ref is the
    same weights with the adapters disabled, no copy); the trained PEFT model is ``facts["model"]``."""
    quiet_trl()
    from datasets import Dataset
    from transformers import set_seed
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    hide_vllm_from_trl()
    import trl.experimental.ppo.ppo_trainer as ppo_module
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    s = settings
    out = Path(workdir) / "trl_ppo"
    ref = None
    if peft_config is None:
        ref = copy.deepcopy(policy).eval()
        for p in ref.parameters():
            p.requires_grad_(False)
    if isinstance(reward, FunctionReward):
        reward_module = _function_reward_module(reward.fn, tokenizer.pad_token_id)
    else:
        reward_module = reward
    distributed.join()  # under a launcher: accelerate uses the launch's process group (no-op alone)
    local = distributed.per_device(s["batch_size"], "batch of prompts")
    args = PPOConfig(
        output_dir=str(out), **trainer_args(),  # device, precision, checkpointing: harness.training.device
        per_device_train_batch_size=local, gradient_accumulation_steps=1,
        num_mini_batches=s["num_mini_batches"], num_ppo_epochs=s["ppo_epochs"],
        total_episodes=s["total_episodes"], response_length=s["response_length"],
        local_rollout_forward_batch_size=local, stop_token="eos",
        missing_eos_penalty=s.get("missing_eos_penalty"), kl_coef=s["kl_coef"], kl_estimator=s["kl_estimator"],
        cliprange=s["cliprange"], vf_coef=s["vf_coef"], cliprange_value=s["cliprange_value"],
        gamma=s["gamma"], lam=s["lam"], whiten_rewards=s["whiten_rewards"], temperature=s["temperature"],
        learning_rate=s["lr"], weight_decay=0.0, num_sample_generations=0, save_strategy="no",
        logging_steps=1, seed=seed, data_seed=seed, report_to="none", disable_tqdm=True,
        log_level_replica="passive")  # under a launcher the other processes keep the harness's log level
    ds = Dataset.from_dict({"input_ids": [list(map(int, p)) for p in prompts]})
    # PPOTrainer never runs Trainer.__init__ (which seeds everything): its mini-batch order comes from
    # numpy's global RNG, so without this a run would depend on what ran before it in the process
    set_seed(seed)
    try:
        with quiet_transformers():  # per-update "generation_config + generation arguments" notices
            trainer = PPOTrainer(args=args, processing_class=tokenizer, model=policy, ref_model=ref,
                                 reward_model=reward_module, value_model=value_model, train_dataset=ds,
                                 callbacks=callbacks, peft_config=peft_config)
            _skip_distributed_loading(trainer)  # trl 1.12 + transformers 5.19
            for cb in (PrinterCallback, ProgressCallback):
                trainer.remove_callback(cb)
            with _reward_dispatch(ppo_module):
                trainer.train()
    finally:
        shutil.rmtree(out, ignore_errors=True)
    facts = {"updates": int(args.num_total_batches), "episodes": int(args.num_total_batches * args.batch_size),
             "optimizer_steps": int(args.num_total_batches * s["ppo_epochs"] * s["num_mini_batches"]),
             "trl_backend": f"trl {_trl_version()} experimental.ppo.PPOTrainer",
             "model": trainer.policy_model if peft_config is not None else policy,
             # what TRL trained with: prompts per process and per update over all processes
             "per_device_batch": int(args.local_batch_size), "global_batch": int(args.batch_size)}
    facts["model"].eval()
    return facts


def num_updates(total_episodes: int, batch_size: int) -> int:
    """PPO updates TRL will run: ceil(total_episodes / batch_size) (it may run past total_episodes)."""
    return -(-int(total_episodes) // int(batch_size))


def _trl_version() -> str:
    import trl

    return trl.__version__
