"""DPO, cDPO and IPO losses against an independent, element-by-element computation."""
import math

import numpy as np
import pytest
import torch

from algorithms.dpo import preference_loss


def _reference_losses(pc, pr, rc, rr, beta, eps, ipo):
    out = []
    for a, b, c, d in zip(pc, pr, rc, rr):
        h = (a - c) - (b - d)
        if ipo:
            out.append((h - 1 / (2 * beta)) ** 2)
        else:
            sig = lambda z: 1 / (1 + math.exp(-z))
            out.append(-(1 - eps) * math.log(sig(beta * h)) - eps * math.log(sig(-beta * h)))
    return np.array(out)


@pytest.mark.parametrize("beta,eps,ipo", [(0.1, 0.0, False), (0.5, 0.0, False), (0.1, 0.2, False),
                                          (2.0, 0.45, False), (0.1, 0.0, True), (1.0, 0.0, True)])
def test_losses_match_straightforward_formulas(beta, eps, ipo):
    rng = np.random.default_rng(0)
    logps = [rng.normal(-40, 8, 64) for _ in range(4)]
    losses, cr, rr = preference_loss(*[torch.tensor(x, dtype=torch.float64) for x in logps], beta, eps, ipo)
    np.testing.assert_allclose(losses.numpy(), _reference_losses(*logps, beta, eps, ipo), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(cr.numpy(), beta * (logps[0] - logps[2]), rtol=1e-12)
    np.testing.assert_allclose(rr.numpy(), beta * (logps[1] - logps[3]), rtol=1e-12)


def test_dpo_loss_is_log2_at_the_reference_and_cdpo_margin_saturates():
    z = torch.zeros(3, dtype=torch.float64)
    losses, _, _ = preference_loss(z, z, z, z, beta=0.1)
    np.testing.assert_allclose(losses.numpy(), math.log(2))
    # cDPO's per-pair optimum is σ(βh) = 1 − ε: the gradient in h vanishes there (bounded margin)
    beta, eps = 0.5, 0.1
    h_star = math.log((1 - eps) / eps) / beta
    h = torch.tensor([h_star], dtype=torch.float64, requires_grad=True)
    loss, _, _ = preference_loss(h, torch.zeros(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64),
                                 torch.zeros(1, dtype=torch.float64), beta, eps)
    loss.sum().backward()
    assert abs(h.grad.item()) < 1e-12


def test_dpo_gradient_weight_is_sigma_of_reward_gap():
    # ∂L/∂h = −β σ(r̂_l − r̂_w) (DPO paper, §4): large when the implicit reward ranks the pair wrongly
    beta = 0.3
    h = torch.tensor([-2.0, 0.0, 3.0], dtype=torch.float64, requires_grad=True)
    z = torch.zeros(3, dtype=torch.float64)
    loss, _, _ = preference_loss(h, z, z, z, beta)
    loss.sum().backward()
    np.testing.assert_allclose(h.grad.numpy(), -beta * torch.sigmoid(-beta * h.detach()).numpy(), rtol=1e-12)


# =============================================================================================
# The pairwise family: every loss against an element-by-element formula written independently
# (plain Python floats), and against TRL 1.12's own loss code where TRL has the method.
# =============================================================================================
def _logsig(z):
    """log σ(z), stable for both signs."""
    return -math.log1p(math.exp(-z)) if z >= 0 else z - math.log1p(math.exp(z))


def _sig(z):
    return math.exp(_logsig(z))


def _toy_pairs(n=48, seed=0):
    """Random pairs as per-token log-probabilities (so sums, means and lengths agree exactly)."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        tw = rng.uniform(-4.0, -0.02, rng.integers(1, 13))
        tl = rng.uniform(-4.0, -0.02, rng.integers(1, 13))
        rows.append({"tok_w": tw, "tok_l": tl, "w": float(tw.sum()), "l": float(tl.sum()),
                     "rw": float(tw.sum() + rng.normal(0, 3)), "rl": float(tl.sum() + rng.normal(0, 3))})
    return rows


def _lp(rows):
    from harness.training.pairwise import PairLogps

    t = lambda k: torch.tensor([r[k] for r in rows], dtype=torch.float64)
    n = lambda k: torch.tensor([float(len(r[k])) for r in rows], dtype=torch.float64)
    return PairLogps(t("w"), t("l"), t("rw"), t("rl"), n("tok_w"), n("tok_l"))


def _cfg(name, **values):
    from harness import registry

    spec = registry.get(name)
    return spec.cls(spec.make_config(values, "test"))


def _losses(algo, lp):
    from harness.training.pairwise import split_loss

    return split_loss(algo.loss(lp))[0].detach().numpy()


@pytest.mark.parametrize("beta,gamma", [(2.0, 1.0), (0.5, 0.0), (10.0, 3.0)])
def test_simpo_matches_formula(beta, gamma):
    rows = _toy_pairs()
    want = [-_logsig(beta / len(r["tok_w"]) * r["w"] - beta / len(r["tok_l"]) * r["l"] - gamma) for r in rows]
    np.testing.assert_allclose(_losses(_cfg("simpo", beta=beta, gamma=gamma), _lp(rows)), want, rtol=0, atol=1e-10)


def _log_odds(mean):
    p = math.exp(mean)
    return math.log(p / (1 - p))


@pytest.mark.parametrize("lam", [0.1, 0.5, 2.0])
def test_orpo_matches_formula(lam):
    rows = _toy_pairs()
    want = []
    for r in rows:
        mw, ml = r["w"] / len(r["tok_w"]), r["l"] / len(r["tok_l"])
        want.append(-mw - lam * _logsig(_log_odds(mw) - _log_odds(ml)))
    np.testing.assert_allclose(_losses(_cfg("orpo", lam=lam), _lp(rows)), want, rtol=0, atol=1e-10)


def test_orpo_log_odds_is_stable_near_probability_one():
    from algorithms.orpo import log_odds

    m = torch.tensor([-1e-7, -0.5, -0.6931471805599453, -0.8, -30.0], dtype=torch.float64)
    want = [math.log(math.exp(x)) - math.log(-math.expm1(x)) for x in m.tolist()]
    np.testing.assert_allclose(log_odds(m).numpy(), want, rtol=1e-12)


@pytest.mark.parametrize("beta,eps", [(0.1, 0.0), (0.1, 0.1), (0.5, 0.3), (2.0, 0.45)])
def test_robust_dpo_matches_formula_and_differs_from_cdpo(beta, eps):
    rows = _toy_pairs()
    want = []
    for r in rows:
        h = (r["w"] - r["rw"]) - (r["l"] - r["rl"])
        want.append(((1 - eps) * -_logsig(beta * h) - eps * -_logsig(-beta * h)) / (1 - 2 * eps))
    got = _losses(_cfg("rdpo", beta=beta, epsilon=eps), _lp(rows))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
    cdpo = _losses(_cfg("dpo", beta=beta, label_smoothing=eps), _lp(rows))
    if eps > 0:
        assert np.abs(got - cdpo).max() > 1e-3  # a different estimator, not a renamed cDPO
    else:
        np.testing.assert_allclose(got, cdpo, rtol=0, atol=1e-12)


@pytest.mark.parametrize("delta,lam", [(1.0, 0.0), (1.0, 0.05), (5.0, 0.5)])
def test_slic_matches_formula(delta, lam):
    rows = _toy_pairs()
    want = [max(0.0, delta - r["w"] + r["l"]) - lam * r["w"] for r in rows]
    np.testing.assert_allclose(_losses(_cfg("slic", delta=delta, lam=lam), _lp(rows)), want, rtol=0, atol=1e-10)


@pytest.mark.parametrize("beta,lam", [(0.1, 0.0), (0.1, 5.0), (0.5, 50.0)])
def test_dpop_matches_formula(beta, lam):
    rows = _toy_pairs()
    want = []
    for r in rows:
        cw, cl = r["w"] - r["rw"], r["l"] - r["rl"]
        want.append(-_logsig(beta * (cw - cl - lam * max(0.0, r["rw"] - r["w"]))))
    np.testing.assert_allclose(_losses(_cfg("dpop", beta=beta, lam=lam), _lp(rows)), want, rtol=0, atol=1e-10)
    if lam == 0:
        np.testing.assert_allclose(_losses(_cfg("dpo", beta=beta), _lp(rows)), want, rtol=0, atol=1e-10)


def _kto_inputs(seed, n=16, shift=0.0):
    rng = np.random.default_rng(seed)
    d = {"logps": rng.uniform(-60, -5, n), "ref": rng.uniform(-60, -5, n), "des": rng.random(n) < 0.5,
         "kl": rng.uniform(-60, -5, n)}
    d["kl_ref"] = d["kl"] - rng.normal(shift, 2.0, n)
    d["des"][0], d["des"][1] = True, False
    return d


@pytest.mark.parametrize("beta,wd,wu,shift", [(0.1, 1.0, 1.0, 1.5), (0.1, 1.0, 1.0, -1.5), (0.5, 1.33, 0.8, 3.0)])
def test_kto_matches_formula(beta, wd, wu, shift):
    from algorithms.kto import kto_loss

    d = _kto_inputs(1, shift=shift)
    z0 = max(0.0, float(np.mean(d["kl"] - d["kl_ref"])))
    want = []
    for lp, rf, des in zip(d["logps"], d["ref"], d["des"]):
        r = lp - rf
        want.append(wd * (1 - _sig(beta * (r - z0))) if des else wu * (1 - _sig(beta * (z0 - r))))
    t = lambda k: torch.tensor(d[k], dtype=torch.float64)
    losses, z, rewards = kto_loss(t("logps"), t("ref"), torch.tensor(d["des"]), t("kl"), t("kl_ref"), beta, wd, wu)
    np.testing.assert_allclose(losses.numpy(), want, rtol=0, atol=1e-10)
    assert abs(float(z) - z0) < 1e-12 and (z0 > 0) == (shift > 0)  # clamped at 0 when the estimate is negative
    np.testing.assert_allclose(rewards.numpy(), beta * (d["logps"] - d["ref"]), rtol=1e-12)


@pytest.mark.parametrize("name,values", [("dpo", {"beta": 0.3}), ("dpo", {"beta": 0.3, "label_smoothing": 0.2}),
                                         ("rdpo", {"beta": 0.3, "epsilon": 0.2}), ("simpo", {"beta": 2.0, "gamma": 1.0}),
                                         ("dpop", {"beta": 0.3, "lam": 5.0}), ("dpo", {"beta": 0.3, "loss": "ipo"})])
def test_gradient_weight_is_the_analytic_derivative(name, values):
    """The harness's generic weight (autograd through loss and reward) against each method's closed form."""
    from harness.training.pairwise import gradient_weight

    rows = _toy_pairs(seed=3)
    algo = _cfg(name, **values)
    w = gradient_weight(algo, _lp(rows)).numpy()
    want = []
    for r in rows:
        b = values["beta"]
        h = (r["w"] - r["rw"]) - (r["l"] - r["rl"])
        if name == "dpo" and values.get("loss") == "ipo":
            want.append(-2 * (h - 1 / (2 * b)) / b)
        elif name == "dpo":
            e = values.get("label_smoothing", 0.0)
            want.append((1 - e) * _sig(-b * h) - e * _sig(b * h))  # DPO: σ(r̂_l − r̂_w)
        elif name == "rdpo":
            e = values["epsilon"]
            want.append(((1 - e) * _sig(-b * h) + e * _sig(b * h)) / (1 - 2 * e))
        elif name == "simpo":
            m = b * r["w"] / len(r["tok_w"]) - b * r["l"] / len(r["tok_l"])
            want.append(_sig(-(m - values["gamma"])))
        else:
            pen = max(0.0, r["rw"] - r["w"])
            z = b * (h - values["lam"] * pen)
            want.append(_sig(-z) * (1 + (values["lam"] if pen > 0 else 0.0)))
    np.testing.assert_allclose(w, want, rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------------------------- TRL 1.12
class _TableLM(torch.nn.Module):
    """A stand-in causal LM whose log-softmax at the next token equals a chosen value: the logit row at
    position t has a at the id of token t+1 and 0 elsewhere, with a solving a − log(e^a + V − 1) = v.
    Each completion token gets its own id, so TRL's own log-prob code recovers our per-token values."""

    def __init__(self, table):
        super().__init__()
        self.table = torch.tensor(table, dtype=torch.float64)

    def forward(self, input_ids=None, attention_mask=None, **kw):
        from types import SimpleNamespace

        V = len(self.table)
        nxt = input_ids[:, 1:]
        v = self.table[nxt]
        a = v + math.log(V - 1) - torch.log(-torch.expm1(v))
        logits = torch.zeros(*input_ids.shape, V, dtype=torch.float64)
        logits[:, :-1].scatter_(-1, nxt.unsqueeze(-1), a.unsqueeze(-1))
        return SimpleNamespace(logits=logits)


class _Vocab:
    """Token ids for per-token log-probabilities; id 0 pads, id 1 is the one-token prompt."""

    def __init__(self):
        self.table = [-1.0, -1.0]

    def ids(self, values):
        start = len(self.table)
        self.table.extend(float(v) for v in values)
        return list(range(start, len(self.table)))

    def rows(self, completions):
        """(input_ids, attention_mask, completion_mask) of [prompt] + completion rows, right-padded."""
        seqs = [[1] + self.ids(c) for c in completions]
        L = max(len(s) for s in seqs)
        ids = torch.zeros(len(seqs), L, dtype=torch.long)
        att = torch.zeros(len(seqs), L, dtype=torch.long)
        comp = torch.zeros(len(seqs), L, dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, :len(s)] = torch.tensor(s)
            att[i, :len(s)] = 1
            comp[i, 1:len(s)] = 1
        return ids, att, comp


def _accelerator():
    from types import SimpleNamespace

    return SimpleNamespace(device=torch.device("cpu"), gather_for_metrics=lambda x: x, gather=lambda x: x)


@pytest.fixture(scope="module")
def trl_trainers():
    from harness.adapters import hide_vllm_from_trl, quiet_trl

    hide_vllm_from_trl()
    quiet_trl()
    from trl.experimental.cpo import CPOTrainer
    from trl.experimental.orpo import ORPOTrainer
    from trl.trainer.dpo_trainer import DPOTrainer
    from trl.trainer.kto_trainer import KTOTrainer

    return {"dpo": DPOTrainer, "kto": KTOTrainer, "cpo": CPOTrainer, "orpo": ORPOTrainer}


def _bare(cls, **attrs):
    """A TRL trainer object without its __init__ (which wants a model, data and an Accelerator): only
    the attributes its loss code reads, set to the values its config would give them."""
    from collections import defaultdict

    t = cls.__new__(cls)
    base = {"accelerator": _accelerator(), "aux_loss_enabled": False, "_total_train_tokens": 0,
            "_metrics": {"train": defaultdict(list), "eval": defaultdict(list)}, "is_encoder_decoder": False,
            "label_smoothing": 0.0}
    for k, v in {**base, **attrs}.items():
        object.__setattr__(t, k, v)
    return t


def trl_dpo_diffs(DPOTrainer, loss_type, beta, eps, ours, rows, normalise=False):
    """Max |TRL − ours| over pairs (one pair per TRL call) of the loss and of the implicit rewards."""
    loss_d = reward_d = 0.0
    for r in rows:
        voc = _Vocab()
        ids, att, comp = voc.rows([r["tok_w"], r["tok_l"]])
        model = _TableLM(voc.table)
        t = _bare(DPOTrainer, model=model, ld_alpha=None, precompute_ref_logps=True, f_divergence_type="reverse_kl",
                  loss_types=[loss_type], loss_weights=[1.0], beta=beta, label_smoothing=eps, use_weighting=False)
        inputs = {"input_ids": ids, "attention_mask": att, "completion_mask": comp,
                  "ref_chosen_logps": torch.tensor([r["rw"]], dtype=torch.float64),
                  "ref_rejected_logps": torch.tensor([r["rl"]], dtype=torch.float64)}
        with torch.no_grad():
            trl_loss = float(t._compute_loss(model, inputs, False))
        lp = _lp([r])
        if normalise:  # TRL's IPO divides each log-ratio by its completion length
            lp = lp.replace(chosen=lp.chosen / lp.chosen_tokens, ref_chosen=lp.ref_chosen / lp.chosen_tokens,
                            rejected=lp.rejected / lp.rejected_tokens, ref_rejected=lp.ref_rejected / lp.rejected_tokens)
        loss_d = max(loss_d, abs(trl_loss - float(_losses(ours, lp)[0])))
        rc, rr = ours.reward(_lp([r]))
        m = t._metrics["train"]
        reward_d = max(reward_d, abs(m["rewards/chosen"][-1] - float(rc[0])), abs(m["rewards/rejected"][-1] - float(rr[0])))
    return loss_d, reward_d


@pytest.mark.parametrize("loss_type,name,values", [
    ("sigmoid", "dpo", {"beta": 0.1}), ("sigmoid", "dpo", {"beta": 0.5}),
    ("robust", "rdpo", {"beta": 0.1, "epsilon": 0.2}), ("robust", "rdpo", {"beta": 0.5, "epsilon": 0.4}),
    ("ipo", "dpo", {"beta": 0.1, "loss": "ipo"}), ("ipo", "dpo", {"beta": 1.0, "loss": "ipo"})])
def test_dpo_family_matches_trl_dpo_trainer(trl_trainers, loss_type, name, values):
    """TRL DPOTrainer._compute_loss on the same per-token log-probabilities (via a stand-in model) and
    the same cached reference log-probabilities. IPO: TRL length-normalises the log-ratios, ours sums
    them (the DPO authors' convention), so ours is fed per-token means to compare."""
    ours = _cfg(name, **values)
    eps = values.get("epsilon", 0.0)
    loss_d, reward_d = trl_dpo_diffs(trl_trainers["dpo"], loss_type, values["beta"], eps, ours, _toy_pairs(24),
                                     normalise=loss_type == "ipo")
    assert loss_d < 1e-6 and (loss_type == "ipo" or reward_d < 1e-6), (loss_d, reward_d)


def test_cdpo_matches_trl_cpo_sigmoid_on_log_ratios(trl_trainers):
    """TRL 1.12's DPOTrainer 'sigmoid' loss ignores label_smoothing (no cDPO); CPO's cpo_loss with
    loss_type='sigmoid' and label_smoothing=ε is cDPO's formula when given the log-ratios."""
    rows = _toy_pairs()
    lp = _lp(rows)
    for beta, eps in ((0.1, 0.1), (0.5, 0.3)):
        t = _bare(trl_trainers["cpo"], alpha=0.0, loss_type="sigmoid", beta=beta, label_smoothing=eps)
        trl, _, _ = t.cpo_loss(lp.chosen_ratio, lp.rejected_ratio)
        ours = _losses(_cfg("dpo", beta=beta, label_smoothing=eps), lp)
        assert np.abs(trl.numpy() - ours).max() < 1e-6


def _cpo_batch(voc, r):
    ids, att, comp = voc.rows([r["tok_w"], r["tok_l"]])
    labels = torch.where(comp.bool(), ids, torch.full_like(ids, -100))
    return {"chosen_input_ids": ids[:1], "chosen_attention_mask": att[:1], "chosen_labels": labels[:1],
            "rejected_input_ids": ids[1:], "rejected_attention_mask": att[1:], "rejected_labels": labels[1:]}


def trl_cpo_diffs(CPOTrainer, loss_type, beta, gamma, cpo_alpha, ours_fn, rows):
    """Max |TRL CPOTrainer.get_batch_loss_metrics − ours_fn(row)| with one pair per call."""
    d = 0.0
    for r in rows:
        voc = _Vocab()
        batch = _cpo_batch(voc, r)
        t = _bare(CPOTrainer, alpha=0.0, loss_type=loss_type, beta=beta, simpo_gamma=gamma, cpo_alpha=cpo_alpha,
                  pad_token_id=0)
        with torch.no_grad():
            loss, _ = t.get_batch_loss_metrics(_TableLM(voc.table), batch)
        d = max(d, abs(float(loss) - ours_fn(r)))
    return d


@pytest.mark.parametrize("beta,gamma", [(2.0, 1.0), (0.5, 0.25)])
def test_simpo_matches_trl_cpo_simpo_without_nll(trl_trainers, beta, gamma):
    """TRL: CPOTrainer loss_type='simpo' with cpo_alpha=0 (its default cpo_alpha=1 adds the token-mean
    NLL of y_w: checked too)."""
    rows = _toy_pairs(24)
    simpo = _cfg("simpo", beta=beta, gamma=gamma)
    ours = lambda r: float(_losses(simpo, _lp([r]))[0])
    assert trl_cpo_diffs(trl_trainers["cpo"], "simpo", beta, gamma, 0.0, ours, rows) < 1e-6
    with_nll = lambda r: ours(r) - r["w"] / len(r["tok_w"])
    assert trl_cpo_diffs(trl_trainers["cpo"], "simpo", beta, gamma, 1.0, with_nll, rows) < 1e-6
    assert trl_cpo_diffs(trl_trainers["cpo"], "simpo", beta, gamma, 1.0, ours, rows) > 0.1


@pytest.mark.parametrize("delta,lam", [(1.0, 0.0), (1.0, 0.05), (4.0, 0.2)])
def test_slic_matches_trl_cpo_hinge(trl_trainers, delta, lam):
    """TRL: CPOTrainer loss_type='hinge' is relu(1 − β(log π_w − log π_l)); with β = 1/δ it is SLiC's
    hinge divided by δ. Its NLL is a token mean (cpo_alpha·mean), SLiC's a sequence sum (λ·sum), so
    cpo_alpha = λ·|y_w|/δ per pair makes the two equal."""
    rows = _toy_pairs(24)
    slic = _cfg("slic", delta=delta, lam=lam)
    d = 0.0
    for r in rows:
        d = max(d, trl_cpo_diffs(trl_trainers["cpo"], "hinge", 1 / delta, 0.0, lam * len(r["tok_w"]) / delta,
                                 lambda r: float(_losses(slic, _lp([r]))[0]) / delta, [r]))
    assert d < 1e-6


@pytest.mark.parametrize("lam", [0.1, 1.0])
def test_orpo_matches_trl_orpo_trainer(trl_trainers, lam):
    """TRL: ORPOTrainer.get_batch_loss_metrics, beta = λ. Its NLL averages over every attended token
    but the first, prompt included, over the whole batch; with one-token prompts and one pair per call
    that is the token-mean NLL of y_w, as here."""
    rows = _toy_pairs(24)
    orpo = _cfg("orpo", lam=lam)
    d = 0.0
    for r in rows:
        voc = _Vocab()
        batch = _cpo_batch(voc, r)
        t = _bare(trl_trainers["orpo"], beta=lam, padding_value=0)
        with torch.no_grad():
            loss, _ = t.get_batch_loss_metrics(_TableLM(voc.table), batch)
        d = max(d, abs(float(loss) - float(_losses(orpo, _lp([r]))[0])))
    assert d < 1e-6


def trl_kto_diff(KTOTrainer, beta, wd, wu, shift, seed):
    """|TRL KTOTrainer._compute_loss − mean of ours| on one batch of 16 examples, mixed labels."""
    from algorithms.kto import kto_loss

    rng = np.random.default_rng(seed)
    n = 16
    comps = [rng.uniform(-4, -0.02, rng.integers(1, 13)) for _ in range(n)]
    kl_comps = [rng.uniform(-4, -0.02, rng.integers(1, 13)) for _ in range(n)]
    des = rng.random(n) < 0.5
    des[0], des[1] = True, False
    ref = np.array([c.sum() for c in comps]) + rng.normal(0, 3, n)
    kl_ref = np.array([c.sum() for c in kl_comps]) - rng.normal(shift, 2, n)
    voc = _Vocab()
    ids, att, comp = voc.rows(comps)
    kids, katt, kcomp = voc.rows(kl_comps)
    model = _TableLM(voc.table)
    t = _bare(KTOTrainer, model=model, calculate_KL=True, precompute_ref_logps=True, use_liger_kernel=False,
              loss_type="kto", beta=beta, desirable_weight=wd, undesirable_weight=wu)
    inputs = {"input_ids": ids, "attention_mask": att, "completion_mask": comp, "label": torch.tensor(des),
              "KL_input_ids": kids, "KL_attention_mask": katt, "KL_completion_mask": kcomp,
              "ref_logps": torch.tensor(ref), "ref_KL_logps": torch.tensor(kl_ref)}
    with torch.no_grad():
        trl = float(t._compute_loss(model, inputs, False))
    f = lambda xs: torch.tensor([float(x.sum()) for x in xs], dtype=torch.float64)
    losses, z0, _ = kto_loss(f(comps), torch.tensor(ref), torch.tensor(des), f(kl_comps), torch.tensor(kl_ref),
                             beta, wd, wu)
    kl_trl = t._metrics["train"]["kl"][-1]
    return max(abs(trl - float(losses.mean())), abs(kl_trl - float(z0)))


@pytest.mark.parametrize("beta,wd,wu,shift", [(0.1, 1.0, 1.0, 1.5), (0.1, 1.0, 1.0, -1.5), (0.5, 1.33, 0.8, 3.0)])
def test_kto_matches_trl_kto_trainer(trl_trainers, beta, wd, wu, shift):
    """TRL: KTOTrainer._compute_loss, loss_type='kto', precomputed reference log-probabilities, KL on the
    given mismatched completions (clamped at 0 when negative: shift < 0)."""
    assert trl_kto_diff(trl_trainers["kto"], beta, wd, wu, shift, seed=int(abs(shift) * 10) + (7 if shift > 0 else 8)) < 1e-6
