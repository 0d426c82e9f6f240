"""The learned reward model of the RLHF pipeline (step 1 of PPO-RLHF; also best-of-n's ranker).

A sequence-classification head on the suite's base architecture, initialised from π_SFT's weights,
trained on the suite's *training* preference pairs (Bradley–Terry loss, through
:mod:`harness.adapters.trl_reward`). It is a suite artifact like π_SFT: built once per (π_ref, pairs,
seed, reward-model hyperparameters) in the artifact cache, so every run of a sweep that shares those
shares the model (``<cache>/<suite>/reward_model-<hash>/``).

The model lives in the trainer vocabulary (the suite's plus a distinct padding token, see
:mod:`harness.adapters`), reads the full prompt + completion, and is pooled at the last real token
(the EOS when the completion finished). Its held-out accuracy is measured here, on the ``valid``
pairs, by the same scoring code PPO's rollouts and best-of-n use: the fraction of pairs with
r(chosen) > r(rejected), ties counting ½.

Nothing heavy is imported at module level: algorithm modules import the hyperparameter fields.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from harness.core.config import hp

RM_FORMAT = 1  # bump when the build changes what a cached reward model holds


@dataclass
class RewardModelFields:
    """Reward-model hyperparameters, shared by every algorithm that uses the learned reward model
    (equal values -> the same cached model)."""
    rm_lr: float = hp(1e-3, "reward model: peak learning rate (AdamW, linear decay)", gt=0)
    rm_epochs: float = hp(1.0, "reward model: passes over the training pairs", gt=0)
    rm_batch_size: int = hp(32, "reward model: preference pairs per step", ge=1)
    rm_normalize: bool = hp(True, "reward model: scale its output to std 1 over the training responses")
    rm_lora_r: int = hp(0, "reward model: LoRA rank (0: full fine-tuning); default from the suite's lora: block",
                        ge=0, le=4096)
    rm_lora_alpha: float = hp(16.0, "reward model: LoRA alpha", gt=0)
    rm_lora_dropout: float = hp(0.0, "reward model: dropout on the LoRA branch", ge=0, lt=1)
    rm_lora_target_modules: str = hp("all-linear", "reward model: modules LoRA adapts (all-linear or names)")


def rm_settings(cfg: Any) -> dict:
    """The settings that make a reward model (its cache key): LoRA enters only when on, so the key of a
    fully fine-tuned reward model is unchanged."""
    s = {"lr": cfg.rm_lr, "epochs": cfg.rm_epochs, "batch_size": cfg.rm_batch_size, "normalize": cfg.rm_normalize}
    if getattr(cfg, "rm_lora_r", 0):
        s["lora"] = {"r": int(cfg.rm_lora_r), "alpha": float(cfg.rm_lora_alpha), "dropout": float(cfg.rm_lora_dropout),
                     "target_modules": str(cfg.rm_lora_target_modules)}
    return s


class RewardModel:
    """A loaded reward model: ``score(prompt_ids, completion_ids) -> np.ndarray`` (one float each)."""

    def __init__(self, path: Path, model, tokenizer, info: dict):
        self.path, self.model, self.tokenizer, self.info = Path(path), model, tokenizer, info

    @property
    def pad_token_id(self) -> int:
        return self.tokenizer.pad_token_id

    def score(self, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]],
              batch_size: int = 64, max_length: int | None = None):
        import numpy as np
        import torch

        from harness.training.device import autocast
        from harness.training.logprobs import model_device

        self.model.eval()
        dev = model_device(self.model)
        pad = self.pad_token_id
        out = []
        with torch.no_grad(), autocast():
            for i in range(0, len(prompts), batch_size):
                rows = [list(map(int, p)) + list(map(int, c))
                        for p, c in zip(prompts[i:i + batch_size], completions[i:i + batch_size])]
                if max_length is not None:
                    rows = [r[:max_length] for r in rows]
                L = max(len(r) for r in rows)
                ids = torch.full((len(rows), L), pad, dtype=torch.long)
                att = torch.zeros((len(rows), L), dtype=torch.long)
                for j, r in enumerate(rows):
                    ids[j, :len(r)] = torch.tensor(r, dtype=torch.long)
                    att[j, :len(r)] = 1
                out.append(self.model(input_ids=ids.to(dev), attention_mask=att.to(dev)).logits[:, 0].float())
        return torch.cat(out).double().cpu().numpy() if out else np.zeros(0)


def pairwise_accuracy(chosen_scores, rejected_scores) -> float:
    import numpy as np

    c, r = np.asarray(chosen_scores), np.asarray(rejected_scores)
    if len(c) == 0:
        return float("nan")
    return float(((c > r) + 0.5 * (c == r)).mean())


_LOADED: dict[str, RewardModel] = {}


def reward_model_key(art, seed: int, settings: dict) -> dict:
    from harness.core.hashing import content_hash

    return {"rm_format": RM_FORMAT, "reference": art.reference_hash, "pairs": content_hash(art.pairs_key),
            "max_length": art.suite.policy.max_length, "seed": int(seed), "rm": dict(settings)}


def get_reward_model(art, seed: int, settings: dict) -> tuple[RewardModel, bool]:
    """(reward model, built_now): the cached model for (π_ref, pairs, seed, settings), built if absent."""
    path, built = art.cache.get_or_build("reward_model", reward_model_key(art, seed, settings),
                                         lambda d: _build(art, seed, settings, d))
    if built:
        art.built.append("reward_model")
    key = str(path)
    if key not in _LOADED:
        _LOADED[key] = load_reward_model(path, art.suite.policy.trust_remote_code)
    return _LOADED[key], built


def load_reward_model(path: Path, trust_remote_code: bool = False) -> RewardModel:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = Path(path)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(path / "model"), use_safetensors=True, dtype=torch.float32, trust_remote_code=trust_remote_code)
    tok = AutoTokenizer.from_pretrained(str(path / "model"), trust_remote_code=trust_remote_code)
    for p in model.parameters():
        p.requires_grad_(False)
    from harness.training.device import place

    model = place(model).eval()
    return RewardModel(path, model, tok, json.loads((path / "info.json").read_text()))


def classifier_from_reference(art, tokenizer, seed: int):
    """A sequence-classification model (one output) with π_SFT's body and a new, seeded head, in the
    trainer vocabulary of ``tokenizer`` (see :mod:`harness.adapters`). Reward and value models."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from harness.adapters import extend_vocab, quiet_transformers

    torch.manual_seed(seed)
    with quiet_transformers():  # "score.weight newly initialised" is the point
        model = AutoModelForSequenceClassification.from_pretrained(
            str(art.reference_dir), num_labels=1, dtype=torch.float32, use_safetensors=True,
            trust_remote_code=art.suite.policy.trust_remote_code)
    extend_vocab(model, tokenizer)
    return model


def _build(art, seed: int, s: dict, out: Path) -> None:
    import time

    import numpy as np
    import pandas as pd
    import torch

    from harness.core import seeds
    from harness.adapters import quiet_transformers, trainer_tokenizer
    from harness.adapters.trl_reward import train_reward_model, trl_version

    t0 = time.time()
    tok = trainer_tokenizer(art.tokenizer, padding_side="right")
    model = classifier_from_reference(art, tok, seeds.derive(seed, "reward-model-init"))
    pairs = art.pairs
    train, valid = pairs[pairs.split == "train"], pairs[pairs.split == "valid"]
    P, C, R = ([list(x) for x in train[c]] for c in ("prompt_ids", "chosen_ids", "rejected_ids"))
    with quiet_transformers():
        logs = train_reward_model(model, tok, [p + c for p, c in zip(P, C)], [p + r for p, r in zip(P, R)],
                                  lr=s["lr"], epochs=s["epochs"], batch_size=s["batch_size"],
                                  max_length=art.suite.policy.max_length, seed=seeds.derive(seed, "reward-model"),
                                  workdir=out, lora=s.get("lora"))
    rm = RewardModel(out, model, tok, {})
    train_c, train_r = rm.score(P, C), rm.score(P, R)
    std = float(np.concatenate([train_c, train_r]).std())
    scale = 1.0
    if s["normalize"] and std > 0:
        scale = 1.0 / std
        with torch.no_grad():
            model.score.weight.mul_(scale)  # r -> r / std, inside the model: PPO reads the head directly
        train_c, train_r = train_c * scale, train_r * scale
    vP, vC, vR = ([list(x) for x in valid[c]] for c in ("prompt_ids", "chosen_ids", "rejected_ids"))
    valid_c, valid_r = (rm.score(vP, vC), rm.score(vP, vR)) if len(valid) else (np.zeros(0), np.zeros(0))
    info = {
        "train_pairs": int(len(train)), "valid_pairs": int(len(valid)),
        "train_accuracy": pairwise_accuracy(train_c, train_r), "valid_accuracy": pairwise_accuracy(valid_c, valid_r),
        "valid_margin": float((valid_c - valid_r).mean()) if len(valid) else float("nan"),
        "raw_score_std": std, "scale": scale, "train_steps": len(logs),
        "final_train_loss": logs[-1]["loss"] if logs else float("nan"),
        "seconds": round(time.time() - t0, 2), "trl": trl_version(), "settings": s,
        "architecture": type(model).__name__,
    }
    model.save_pretrained(out / "model", safe_serialization=True)
    tok.save_pretrained(out / "model")
    (out / "info.json").write_text(json.dumps(info, indent=1))
    pd.DataFrame(logs).to_json(out / "train_log.jsonl", orient="records", lines=True)


def record_reward_model(ctx, rm: RewardModel, built: bool) -> None:
    """Run-level facts about the reward model a run used (``metrics.json`` -> ``extra``)."""
    i = rm.info
    ctx.record(rm_valid_accuracy=i["valid_accuracy"], rm_train_accuracy=i["train_accuracy"],
               rm_valid_pairs=i["valid_pairs"], rm_valid_margin=i["valid_margin"], rm_scale=i["scale"],
               rm_artifact=rm.path.name, rm_built_by_this_run=bool(built), rm_build_seconds=i["seconds"])
