"""Reward-model judge: any Hugging Face sequence-classification model with one output (local folder or
hub id) scores each (prompt, completion); fp32, padded batches, ``trust_remote_code`` off unless the
suite opts in."""
from __future__ import annotations

from typing import Sequence

import numpy as np


class RewardModelJudge:
    def __init__(self, name_or_path: str, target: str = "completion", trust_remote_code: bool = False,
                 batch_size: int = 32, max_length: int = 512):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "right"
        self.model = AutoModelForSequenceClassification.from_pretrained(
            name_or_path, num_labels=1, trust_remote_code=trust_remote_code, dtype=torch.float32).eval()
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.target, self.batch_size, self.max_length = target, batch_size, max_length
        self.identity = {"kind": "reward_model", "model": str(name_or_path), "target": target,
                         "revision": getattr(self.model.config, "_commit_hash", None),
                         "architecture": type(self.model).__name__}

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        import torch

        texts = list(completions) if self.target == "completion" else [p + c for p, c in zip(prompts, completions)]
        filler = self.tokenizer.bos_token or self.tokenizer.eos_token or " "
        texts = [t if t else filler for t in texts]  # an empty text would leave a row of padding only
        out = np.empty(len(texts), dtype=np.float64)
        with torch.no_grad():
            for i in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(texts[i:i + self.batch_size], return_tensors="pt", padding=True,
                                       truncation=True, max_length=self.max_length)
                logits = self.model(**batch).logits.float()
                out[i:i + len(logits)] = logits[:, 0].numpy()
        return out
