"""Packed sequences (harness.training.logprobs.packed_sequence_logps): the sequences of a batch laid end to
end in rows with restarting position ids, no padding forwarded. It must give the padded batch's
log-probabilities, and the training losses and gradients built on them (DPO's joint path, SFT, KTO), within
1e-5 in fp32, on GPT-2 and Llama, sdpa and eager attention, with LoRA on and off, on sequences of unequal
lengths cut by max_length; and be used only where it saves tokens and the attention supports it."""
from __future__ import annotations

import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from test_prefix_sharing import MAX_LEN, V, _ctx, _lora, _model, _pairs  # noqa: E402


@pytest.fixture
def packing(monkeypatch):
    """Set the process-wide packing switch for one test."""
    from harness.training import logprobs

    def set_mode(mode):
        monkeypatch.setattr(logprobs, "PACKING", mode)

    return set_mode


def test_rows_hold_every_sequence_once_within_the_width_first_fit_decreasing():
    from harness.training.logprobs import pack_rows

    rng = random.Random(0)
    for _ in range(50):
        lengths = [rng.randint(0, 30) for _ in range(rng.randint(1, 40))]
        width = max(lengths + [1])
        rows = pack_rows(lengths, width)
        flat = sorted(i for r in rows for i in r)
        assert flat == [i for i, n in enumerate(lengths) if n > 0]
        assert all(sum(lengths[i] for i in r) <= width for r in rows)
        # first fit decreasing: an item went to a later row only because it did not fit an earlier one (whose
        # room only shrank afterwards), and every row lists its items longest first
        room = [width - sum(lengths[i] for i in r) for r in rows]
        assert all(lengths[i] > room[j] for k, r in enumerate(rows) for i in r for j in range(k))
        assert all([lengths[i] for i in r] == sorted((lengths[i] for i in r), reverse=True) for r in rows)
        assert pack_rows(lengths, width) == rows
    assert pack_rows([5, 3, 2, 4, 1], 5) == [[0], [3, 4], [1, 2]]
    with pytest.raises(ValueError, match="sequence 1 has 7 tokens"):
        pack_rows([3, 7], 5)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_log_probs_equal_the_padded_batchs(arch, attn, packing):
    from harness.training.logprobs import collate, packed_sequence_logps, packed_tokens, sequence_logps

    model = _model(arch, attn).eval()
    P, C, R = _pairs(9)
    C[4] = []  # an empty completion: scores 0 over 0 tokens
    padded, packed = packed_tokens(P + P, C + R, MAX_LEN)
    assert packed < padded  # these rows do pack
    for T in (1.0, 0.7):
        with torch.no_grad():
            lp, n = packed_sequence_logps(model, P + P, C + R, 0, MAX_LEN, temperature=T)
            batch = collate(P + P, C + R, 0, MAX_LEN)
            ref = sequence_logps(model, batch, temperature=T)
        assert torch.equal(n, batch.target_mask.sum(-1))
        assert lp[4] == 0 and n[4] == 0
        torch.testing.assert_close(lp, ref, rtol=0, atol=1e-5)
    # the padded form of a one-row batch is forwarded as one sequence (nothing to pack): still equal
    with torch.no_grad():
        one, _ = packed_sequence_logps(model, P[:1], C[:1], 0, MAX_LEN)
    torch.testing.assert_close(one, sequence_logps(model, collate(P[:1], C[:1], 0, MAX_LEN)), rtol=0, atol=1e-5)


def _dpo_step(model, ctx, idx):
    from algorithms.dpo import DPO, DPOConfig
    from harness.training.pairwise import pairwise_step

    model.zero_grad(set_to_none=True)
    loss, metrics = pairwise_step(DPO(DPOConfig(beta=0.5)), model, ctx, shared=False)(idx)
    loss.backward()
    return float(loss.detach()), metrics, {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}


def _sft_step(model, P, C, idx):
    """SFT's loss as algorithms/sft.py computes it: the token-mean NLL of the batch's completions."""
    from harness.training.logprobs import score

    model.zero_grad(set_to_none=True)
    lp, n = score(model, [P[i] for i in idx], [C[i] for i in idx], 0, MAX_LEN)
    loss = -(lp.sum() / n.sum())
    loss.backward()
    return float(loss.detach()), {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("arch,attn,lora", [("gpt2", "sdpa", False), ("llama", "sdpa", True),
                                            ("gpt2", "eager", True), ("llama", "eager", False)])
def test_packed_training_steps_give_the_padded_losses_and_gradients(arch, attn, lora, packing):
    from harness.training import logprobs

    model = _model(arch, attn)
    if lora:
        model = _lora(model)
    P, C, R = _pairs()
    ctx = _ctx(model, P, C, R)
    idx = np.array([3, 0, 6, 1, 5, 2, 4])
    out = {}
    for mode in ("off", "on"):
        packing(mode)
        calls = []
        real = logprobs.packed_sequence_logps
        logprobs.packed_sequence_logps = lambda *a, **k: calls.append(1) or real(*a, **k)
        try:
            out[mode] = _dpo_step(model, ctx, idx), _sft_step(model, P, C, idx)
        finally:
            logprobs.packed_sequence_logps = real
        assert bool(calls) == (mode == "on")  # the packed path did run (and only when on)
    (dpo_off, m_off, g_off), (sft_off, gs_off) = out["off"]
    (dpo_on, m_on, g_on), (sft_on, gs_on) = out["on"]
    assert abs(dpo_on - dpo_off) <= 1e-5 and abs(sft_on - sft_off) <= 1e-5
    assert abs(m_on["logps/chosen"] - m_off["logps/chosen"]) <= 1e-4
    for a, b in ((g_on, g_off), (gs_on, gs_off)):
        assert a.keys() == b.keys() and a
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-5, msg=k)
        assert any(float(v.abs().max()) > 1e-3 for v in a.values())  # gradients that can disagree


def test_auto_packs_only_batches_it_shortens_and_only_supported_attention(packing):
    from harness.training.logprobs import PACK_MIN_SAVING, packed_tokens, use_packing

    model = _model("llama")
    uneven = ([[0, 1]] * 3 + [[0] * 10], [[1, 2]] * 3 + [[3] * 10])  # 4 rows of 20 padded, 2 packed
    even = ([[0, 1, 2]] * 4, [[1, 2, 3]] * 4)
    assert packed_tokens(*uneven, None) == (80, 40)
    assert packed_tokens(*even, None) == (24, 24)
    packing("auto")
    assert use_packing(model, *uneven, None) and not use_packing(model, *even, None)
    # the threshold: 9 rows for 10 sequences (a tenth saved) pack; 10 rows for 11 (1/11 saved) do not
    assert PACK_MIN_SAVING == 0.1
    tenth = ([[0]] * 10, [[1] * 9] * 8 + [[1] * 4] * 2)
    eleventh = ([[0]] * 11, [[1] * 9] * 9 + [[1] * 3] * 2)
    assert packed_tokens(*tenth, None) == (100, 90) and use_packing(model, *tenth, None)
    assert packed_tokens(*eleventh, None) == (110, 100) and not use_packing(model, *eleventh, None)
    packing("on")
    assert use_packing(model, *even, None)
    packing("off")
    assert not use_packing(model, *uneven, None)
    packing("sideways")
    with pytest.raises(ValueError, match="PACKING must be auto, on or off"):
        use_packing(model, *uneven, None)
    packing("on")
    flash = _model("llama")
    flash.config._attn_implementation = "flash_attention_2"  # not tested here: never packed
    assert not use_packing(flash, *uneven, None)
    from transformers import GPT2Config, GPT2ForSequenceClassification

    head = GPT2ForSequenceClassification(GPT2Config(vocab_size=V, n_positions=MAX_LEN, n_embd=16, n_layer=1,
                                                    n_head=2, pad_token_id=0))
    assert not use_packing(head, *uneven, None)
