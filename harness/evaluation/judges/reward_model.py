"""Reward-model judge: any Hugging Face sequence-classification model with one output (local folder or
hub id) scores each (prompt, completion); fp32, padded batches, ``trust_remote_code`` off unless the
suite opts in."""
from __future__ import annotations

from typing import Sequence

import numpy as np


class RewardModelJudge:
    def __init__(self, name_or_path: str, target: str = "completion", trust_remote_code: bool = False,
                 batch_size: int = 32, max_length: int = 512, label: str | None = None):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "right"
        # label: a classifier with several outputs (e.g. siebert/sentiment-roberta-large-english), the reward
        # is p(label) under its softmax; otherwise a one-output reward model's score
        extra = {} if label else {"num_labels": 1}
        self.model = AutoModelForSequenceClassification.from_pretrained(
            name_or_path, trust_remote_code=trust_remote_code, dtype=torch.float32, **extra).eval()
        self.label_index = None
        if label:
            names = {str(v).lower(): int(k) for k, v in (self.model.config.id2label or {}).items()}
            if label.lower() not in names:
                from harness.core.errors import UserError

                raise UserError("judge", "label", f"{label!r} is not a label of {name_or_path}; its labels: "
                                f"{', '.join(str(v) for v in self.model.config.id2label.values())}")
            self.label_index = names[label.lower()]
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.target, self.batch_size, self.max_length = target, batch_size, max_length
        self.identity = {"kind": "reward_model", "model": str(name_or_path), "target": target,
                         "revision": getattr(self.model.config, "_commit_hash", None),
                         "architecture": type(self.model).__name__, **({"label": label} if label else {})}

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        import torch

        texts = list(completions) if self.target == "completion" else [p + c for p, c in zip(prompts, completions)]
        filler = self.tokenizer.bos_token or self.tokenizer.eos_token or " "
        texts = [t if t else filler for t in texts]  # an empty text would leave a row of padding only
        out = np.empty(len(texts), dtype=np.float64)
        from harness.training.device import autocast, place

        self.model = place(self.model)  # the run's device (harness.training.device), chosen in the worker
        dev = next(self.model.parameters()).device
        with torch.no_grad():
            for i in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(texts[i:i + self.batch_size], return_tensors="pt", padding=True,
                                       truncation=True, max_length=self.max_length)
                with autocast():
                    logits = self.model(**{k: v.to(dev) for k, v in batch.items()}).logits.float()
                if self.label_index is not None:
                    out[i:i + len(logits)] = logits.softmax(-1)[:, self.label_index].cpu().numpy()
                else:
                    out[i:i + len(logits)] = logits[:, 0].cpu().numpy()
        return out
