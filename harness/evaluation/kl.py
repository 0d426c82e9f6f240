"""KL(π‖π_ref) on the policy's own samples: the one KL routine for every algorithm.

Per sequence, in nats, over completion tokens up to and including EOS (docs/metrics.md §3.1–3.4):
- ``kl``: exact per-step KL over the vocabulary, summed over the completion (the DPO paper's
  definition, footnote 3; Rao–Blackwellised, lowest variance). The headline number.
- ``kl_k1``: Σ_t log π(y_t|s_t) − log π_ref(y_t|s_t) (unbiased, high variance, can be negative).
- ``kl_k3``: Σ_t (r_t − 1) − log r_t with r_t = π_ref/π at the sampled token (unbiased, ≥ 0).
Both models are scored through :mod:`harness.training.logprobs` (forward in the run's precision on its
device, logits upcast to fp32 before every softmax), never with a sampling engine's
log-probabilities. Samples must come from π at ``temperature`` T with no top-k/top-p truncation; both
π and π_ref are then scored on logits/T, so every column is about KL(π_T‖π_ref,T), the KL between the
tempered policies, on exactly the distribution the samples come from (T = 1: KL(π‖π_ref)).
``policy_logp``/``ref_logp`` are log π_T(y|x) and log π_ref,T(y|x). Evaluation records T beside the
KL (``kl_temperature``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from harness.training.logprobs import collate, completion_logits


@torch.no_grad()
def sequence_kl(policy, reference, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]],
                pad_id: int, batch_size: int = 64, max_length: int | None = None,
                temperature: float = 1.0) -> dict[str, np.ndarray]:
    """Per-sequence KL(π_T‖π_ref,T) estimates [N] plus the two tempered sequence log-probabilities
    they come from. ``temperature``: the one the completions were sampled at."""
    from harness.training.device import current

    batch_size = min(batch_size, current().micro_batch_size or batch_size)  # --micro-batch-size bounds memory
    policy.eval()
    reference.eval()
    out = {k: [] for k in ("kl", "kl_k1", "kl_k3", "policy_logp", "ref_logp")}
    for i in range(0, len(prompts), batch_size):
        b = collate(prompts[i:i + batch_size], completions[i:i + batch_size], pad_id, max_length)
        lp_pi, targets = completion_logits(policy, b, temperature)
        lp_ref, _ = completion_logits(reference, b, temperature)
        mask = b.target_mask.to(lp_pi.device)
        exact_tok = (lp_pi.exp() * (lp_pi - lp_ref)).sum(-1)
        pi_t = lp_pi.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        ref_t = lp_ref.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        log_r = (ref_t - pi_t) * mask
        out["kl"].append((exact_tok * mask).sum(-1))
        out["kl_k1"].append((-log_r).sum(-1))
        out["kl_k3"].append(((log_r.exp() - 1 - log_r) * mask).sum(-1))
        out["policy_logp"].append((pi_t * mask).sum(-1))
        out["ref_logp"].append((ref_t * mask).sum(-1))
    return {k: (torch.cat(v).double().cpu().numpy() if v else np.zeros(0)) for k, v in out.items()}
