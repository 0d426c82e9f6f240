"""Hugging Face ``generate`` backend of the sampler interface."""
from __future__ import annotations

from typing import Sequence

import torch

from harness.core.progress import progress
from harness.training.device import autocast, place
from harness.training.logprobs import model_device
from harness.evaluation.sampling.base import Completions, GenerationSettings, PolicyHandle, finish_completions


class HFSampler:
    name = "hf"

    @torch.no_grad()
    def sample(self, policy: PolicyHandle, prompt_ids: Sequence[Sequence[int]], n: int,
               settings: GenerationSettings, seed: int, desc: str = "sampling") -> Completions:
        model = policy.model
        if model is None:
            from harness.training.models import load_policy

            model, _ = load_policy(policy.path)
            if policy.adapter_path is not None:  # a LoRA-trained policy: the adapter on its base
                from peft import PeftModel

                model = PeftModel.from_pretrained(model, str(policy.adapter_path))
            model = place(model)
        model.eval()
        dev = model_device(model)
        tok = policy.tokenizer
        from harness.suites.prompting import stop_token_ids

        eos, pad = stop_token_ids(tok), tok.pad_token_id  # EOS and a chat template's end-of-turn token
        torch.manual_seed(seed)  # one seed for the whole call: same prompts + batches -> same samples
        raw: list[list[int]] = []
        bs = max(1, settings.batch_size // n) if n <= settings.batch_size else 1
        bar = progress(total=len(prompt_ids) * n, desc=desc, unit="sample")
        for i in range(0, len(prompt_ids), bs):
            chunk = [list(p) for p in prompt_ids[i:i + bs] for _ in range(n)]
            L = max(len(p) for p in chunk)
            # left padding: every prompt ends at the same column, so new tokens line up
            ids = torch.tensor([[pad] * (L - len(p)) + p for p in chunk], dtype=torch.long)
            att = torch.tensor([[0] * (L - len(p)) + [1] * len(p) for p in chunk], dtype=torch.long)
            with autocast():  # the run's device and precision (harness.training.device)
                out = model.generate(input_ids=ids.to(dev), attention_mask=att.to(dev), do_sample=True,
                                     temperature=settings.temperature, top_k=0, top_p=1.0,
                                     max_new_tokens=settings.max_new_tokens, eos_token_id=eos, pad_token_id=pad)
            raw.extend(out[:, L:].tolist())
            bar.update(len(chunk))
        bar.close()
        return finish_completions(raw, eos, settings.max_new_tokens, tok, n, engine=self.name)
