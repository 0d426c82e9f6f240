"""Prefix sharing in pairwise training (harness.training.logprobs.shared_prefix_logps): each prompt forwarded
once, chosen and rejected continued from its key/value cache, sequences bucketed by length. It must give
the joint path's loss and gradients (one forward over [chosen; rejected], the path every pairwise method
used before) within 1e-5 in fp32, on GPT-2 and Llama, sdpa and eager attention, with LoRA on and off, with
and without micro-batches, on prompts of unequal lengths cut by max_length."""
from __future__ import annotations

import itertools
import random
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

V, MAX_LEN = 48, 24


def _model(arch: str, attn: str = "sdpa", seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    if arch == "gpt2":
        cfg = GPT2Config(vocab_size=V, n_positions=MAX_LEN, n_embd=32, n_layer=2, n_head=2, bos_token_id=0,
                         eos_token_id=0, pad_token_id=0)
    else:
        cfg = LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=MAX_LEN,
                          bos_token_id=0, eos_token_id=0, pad_token_id=0)
    cfg._attn_implementation = attn
    model = (GPT2LMHeadModel if arch == "gpt2" else LlamaForCausalLM)(cfg)
    from harness.training.loop import disable_dropout

    disable_dropout(model)  # as TrainContext.init_policy hands the policy out
    assert model.config._attn_implementation == attn
    return model.train()


def _pairs(n: int = 7, seed: int = 0):
    """Prompts of 1..14 tokens (BOS first), completions of 1..11 tokens ending in EOS (id 0); two rows whose
    completions max_length cuts: one to a few tokens, one to a single token (scored from the prompt alone)."""
    rng = random.Random(seed)
    P = [[0] + [rng.randrange(1, V) for _ in range(rng.randint(0, 13))] for _ in range(n)]
    C = [[rng.randrange(1, V) for _ in range(rng.randint(0, 10))] + [0] for _ in range(n)]
    R = [[rng.randrange(1, V) for _ in range(rng.randint(0, 10))] + [0] for _ in range(n)]
    P[1] = [0] + [rng.randrange(1, V) for _ in range(MAX_LEN - 5)]   # completions cut to 4 tokens
    C[1] = [rng.randrange(1, V) for _ in range(9)] + [0]
    P[2] = [0] + [rng.randrange(1, V) for _ in range(MAX_LEN - 2)]   # cut to 1 token
    assert len({len(p) for p in P}) >= 5
    return P, C, R


def _lora(model):
    from harness.training.lora import apply_lora

    model = apply_lora(model, {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"})
    with torch.no_grad():  # PEFT starts B at 0: make the adapters change the forward too
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    return model.train()


def _ctx(model, P, C, R):
    """What pairwise_step reads of a TrainContext; reference log-probs away from the policy's, so the DPO
    log-ratios (and the gradient weights) are not all equal."""
    import pandas as pd

    from harness.training.pairwise import pair_logps

    z = torch.zeros(len(P))
    with torch.no_grad():
        lp = pair_logps(model, P, C, R, z, z, 0, MAX_LEN)
    g = torch.Generator().manual_seed(1)
    pairs = pd.DataFrame({"prompt_ids": P, "chosen_ids": C, "rejected_ids": R,
                          "ref_chosen_logp": (lp.chosen + torch.randn(len(P), generator=g)).numpy(),
                          "ref_rejected_logp": (lp.rejected + torch.randn(len(P), generator=g)).numpy()})
    return SimpleNamespace(train_pairs=pairs, tokenizer=SimpleNamespace(pad_token_id=0), max_length=MAX_LEN)


def _loss_and_grads(model, ctx, shared: bool, micro: int | None):
    """One training step's loss, logged metrics and gradients, as train_loop computes them."""
    from algorithms.dpo import DPO, DPOConfig
    from harness.training.device import micro_batches
    from harness.training.loop import _accumulate
    from harness.training.pairwise import pairwise_step

    step = pairwise_step(DPO(DPOConfig(beta=0.5)), model, ctx, shared=shared)
    assert step.shared is shared
    idx = np.array([3, 0, 6, 1, 5, 2, 4])
    model.zero_grad(set_to_none=True)
    chunks = micro_batches(idx, micro)
    if len(chunks) == 1:
        loss, metrics = step(idx)
        loss.backward()
    else:
        loss, metrics = _accumulate(step, chunks, idx, None, 1)
    grads = {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.requires_grad}
    return float(loss.detach()), metrics, grads


CASES = [(a, "sdpa", lora, micro) for a, lora, micro in itertools.product(("gpt2", "llama"), (False, True), (None, 3))]
CASES += [("gpt2", "eager", False, None), ("llama", "eager", True, 3)]


@pytest.mark.parametrize("arch,attn,lora,micro", CASES)
def test_shared_prefix_gives_the_joint_paths_loss_and_gradients(arch, attn, lora, micro):
    from harness.training.logprobs import supports_prefix_sharing

    model = _model(arch, attn)
    if lora:
        model = _lora(model)
    assert supports_prefix_sharing(model)
    P, C, R = _pairs()
    ctx = _ctx(model, P, C, R)
    loss_j, m_j, g_j = _loss_and_grads(model, ctx, False, micro)
    loss_s, m_s, g_s = _loss_and_grads(model, ctx, True, micro)
    assert abs(loss_j - loss_s) <= 1e-5 and loss_j > 0.1
    for k in ("logps/chosen", "logps/rejected", "rewards/margin", "gradweight/mean"):
        assert abs(m_j[k] - m_s[k]) <= 1e-5 * max(1.0, abs(m_j[k])), k
    assert g_j.keys() == g_s.keys() and g_j
    worst = max(float((g_j[k] - g_s[k]).abs().max()) for k in g_j)
    assert worst <= 1e-5, worst
    assert max(float(g.abs().max()) for g in g_j.values()) > 1e-2  # the gradients compared are not all ~0
    if not lora:  # the prompt reaches the loss through the cache: embedding rows of prompt-only tokens learn
        emb = next(k for k in g_s if k.endswith(("wte.weight", "embed_tokens.weight")))
        only_prompt = sorted({t for p in P for t in p} - {t for c in C + R for t in c})
        assert only_prompt and float(g_s[emb][only_prompt].abs().sum()) > 0


def test_shared_prefix_logps_match_collate_per_row():
    """Token counts follow collate's max_length cut (a prompt of max_length leaves 0 completion tokens, log-prob
    0); per-row log-probs equal the joint path's for three completions per prompt, any bucketing."""
    from harness.training.logprobs import collate, sequence_logps, shared_prefix_logps

    model = _model("llama").eval()
    P, C, R = _pairs()
    P[4] = [0] + [5] * (MAX_LEN - 1)
    D = [c[::-1] for c in R]
    batch = collate(P * 3, C + R + D, 0, MAX_LEN)
    with torch.no_grad():
        joint = sequence_logps(model, batch)
        for call_cost in (0, 24, 10 ** 6):
            lp, tokens = shared_prefix_logps(model, P, [C, R, D], 0, MAX_LEN, call_cost=call_cost)
            assert torch.equal(tokens, batch.target_mask.sum(-1))
            assert float((lp - joint).abs().max()) <= 1e-5
    assert tokens[4] == 0 and lp[4] == 0 and tokens[1] == 4 and tokens[2] == 1


def test_length_buckets_minimise_padded_tokens_plus_call_cost():
    from harness.training.logprobs import length_buckets

    def cost(buckets, lengths, c):
        return sum(len(b) * max(lengths[i] for i in b) + c for b in buckets)

    rng = random.Random(3)
    for _ in range(30):
        lengths = [rng.choice([0, rng.randint(1, 40)]) for _ in range(rng.randint(1, 7))]
        c = rng.choice([0, 5, 24, 1000])
        got = length_buckets(lengths, c)
        live = sorted((i for i, n in enumerate(lengths) if n), key=lambda i: (lengths[i], i))
        assert sorted(i for b in got for i in b) == sorted(live)  # every non-empty item once, empty ones left out
        best = min((cost([live[a:b] for a, b in zip((0,) + cuts, cuts + (len(live),))], lengths, c)
                    for k in range(len(live)) for cuts in itertools.combinations(range(1, len(live)), k)),
                   default=0)
        assert cost(got, lengths, c) == best
    assert length_buckets([200, 150, 201], 24) == [[1], [0, 2]]
    assert length_buckets([200, 150, 201], 1000) == [[1, 0, 2]]


def test_the_rule_shares_long_prompts_only_and_the_switch_overrides_it(monkeypatch):
    from harness.training import pairwise

    model = _model("gpt2")
    short = ([[0, 5, 6]] * 4, [[1] * 20] * 4, [[2] * 30] * 4)      # sentiment-like: prompt << completion
    long = ([[0] + [5] * 15] * 4, [[1] * 6] * 4, [[2] * 9] * 4)     # prompt >= mean completion
    assert not pairwise.use_prefix_sharing(model, *short, MAX_LEN)
    assert pairwise.use_prefix_sharing(model, *long, MAX_LEN)
    # max_length cuts completions first: 20 prompt tokens leave 4 per completion at max_length 24
    assert pairwise.use_prefix_sharing(model, [[0] + [5] * 19] * 2, [[1] * 30] * 2, [[2] * 30] * 2, MAX_LEN)
    monkeypatch.setattr(pairwise, "PREFIX_SHARING", "on")
    assert pairwise.use_prefix_sharing(model, *short, MAX_LEN)
    monkeypatch.setattr(pairwise, "PREFIX_SHARING", "off")
    assert not pairwise.use_prefix_sharing(model, *long, MAX_LEN)
    monkeypatch.setattr(pairwise, "PREFIX_SHARING", "auto")
    model.gradient_checkpointing_enable()  # the cache is off under gradient checkpointing: the joint path
    assert not pairwise.use_prefix_sharing(model, *long, MAX_LEN)


def test_the_joint_path_is_the_pre_sharing_computation_bit_for_bit(monkeypatch):
    """With sharing and packing off, the step computes exactly what the pairwise base computed before
    either existed: collate [chosen; rejected], one forward, the method's loss: equal losses and gradients,
    not merely close. (Packing, the joint path's default where it saves tokens, is tests/test_packing.py's.)"""
    from algorithms.dpo import DPO, DPOConfig, preference_loss
    from harness.training import logprobs
    from harness.training.logprobs import collate, sequence_logps
    from harness.training.pairwise import pairwise_step

    monkeypatch.setattr(logprobs, "PACKING", "off")

    model = _model("gpt2")
    P, C, R = _pairs()
    ctx = _ctx(model, P, C, R)
    idx = np.array([3, 0, 6, 1])
    pairs = ctx.train_pairs
    model.zero_grad(set_to_none=True)
    prompts = [P[i] for i in idx]
    logps = sequence_logps(model, collate(prompts + prompts, [C[i] for i in idx] + [R[i] for i in idx], 0, MAX_LEN))
    ref_c = torch.tensor(pairs.ref_chosen_logp.to_numpy(), dtype=torch.float32)[idx]
    ref_r = torch.tensor(pairs.ref_rejected_logp.to_numpy(), dtype=torch.float32)[idx]
    old, _, _ = preference_loss(logps[:4], logps[4:], ref_c, ref_r, 0.5)
    old.mean().backward()
    g_old = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    new, _ = pairwise_step(DPO(DPOConfig(beta=0.5)), model, ctx, shared=False)(idx)
    new.backward()
    assert torch.equal(old.mean(), new)
    assert all(torch.equal(g_old[k], p.grad) for k, p in model.named_parameters())
