"""The pairwise base and the algorithms on it: DPO/cDPO/IPO unchanged by the move (run ids, weights,
logs), every new algorithm trains with its implicit-reward diagnostics, and the report's
gradient-weight figure. Loss formulas and TRL agreement: tests/test_losses.py."""
from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness import registry

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "data" / "tiny.yaml"
NEW = ("simpo", "orpo", "kto", "rdpo", "slic", "dpop")
# the three DPO variants of the equivalence checks: (values, variant)
VARIANTS = [({}, "dpo"), ({"label_smoothing": 0.1}, "cdpo"), ({"loss": "ipo"}, "ipo")]
# run ids recorded with the pre-refactor DPO (git dd77b35 + working tree of the day). Tiny: smoke preset,
# --set dpo.batch_size=2 --set dpo.epochs=3 --eval-checkpoints 1; sentiment: smoke preset, defaults.
LEGACY_IDS = {"tiny": ["dpo-s0-47dc294df7", "dpo-s0-c1c4ebd2b9", "dpo-s0-ae351458ee"],
              "sentiment": ["dpo-s0-d344e71f72", "dpo-s0-974e9f7d91", "dpo-s0-09b9aa8d89"]}
LEGACY_DPO_FIELDS = {"lr": 1e-4, "batch_size": 32, "epochs": 1.0, "warmup_steps": 10, "weight_decay": 0.0,
                     "max_grad_norm": 10.0, "divergence_grad_norm": 1e6, "beta": 0.1, "loss": "sigmoid",
                     "label_smoothing": 0.0}


def test_new_algorithms_are_listed_and_documented():
    code = ("import sys; from harness.cli import main; main(['list', 'algorithms']); "
            "print('HEAVY', [m for m in ('torch', 'transformers', 'trl') if m in sys.modules], file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and "HEAVY []" in r.stderr, r.stderr
    for name in NEW + ("dpo", "sft"):
        assert f"\n{name}: " in "\n" + r.stdout, name
    from harness.training.pairwise import PairwiseAlgorithm

    for name in ("dpo", "simpo", "orpo", "rdpo", "slic", "dpop"):
        assert issubclass(registry.get(name).cls, PairwiseAlgorithm), name


def test_dpo_config_and_run_ids_are_those_of_the_legacy_dpo():
    """A run id hashes the resolved hyperparameters and the variant: the move keeps both, so DPO, cDPO
    and IPO runs keep their ids (and a finished legacy run is reused, not recomputed)."""
    from harness.execution.artifacts import SuiteArtifacts
    from harness.execution.plan import plan_runs
    from harness.suites.spec import load_suite

    from harness.training.hparams import LORA_KEYS, identity_hyperparameters

    spec = registry.get("dpo")
    # the lora_* fields (issue 10) enter the identity only with LoRA on, so full fine-tuning ids stay put
    assert identity_hyperparameters(dataclasses.asdict(spec.make_config({}, "t"))) == LEGACY_DPO_FIELDS
    assert list(LEGACY_DPO_FIELDS) == [f.name for f in dataclasses.fields(spec.config_cls) if f.name not in LORA_KEYS]
    for suite_name, sets, ckpt in (("tiny", {"batch_size": 2, "epochs": 3.0}, 1), ("sentiment", {}, None)):
        suite = load_suite(str(TINY) if suite_name == "tiny" else suite_name)
        hashes = SuiteArtifacts(suite, "smoke", Path("/nonexistent-cache")).hashes()
        ids = []
        for values, variant in VARIANTS:
            (run,) = [r for r in plan_runs(suite, "smoke", ["dpo"], [0], {"dpo": {**sets, **values}}, "hf",
                                           eval_checkpoints=ckpt, artifacts=hashes) if r.algorithm == "dpo"]
            assert run.variant == variant
            ids.append(run.run_id)
        assert ids == LEGACY_IDS[suite_name], (suite_name, ids)


# ------------------------------------------------------------------------------- the legacy loop
def _legacy_dpo_train(config, ctx):
    """The pre-refactor DPO.train, verbatim but for its class: the reference the move must reproduce."""
    import torch

    from algorithms.dpo import preference_loss
    from harness.training.logprobs import collate, sequence_logps
    from harness.training.loop import seeded_batches, train_loop

    cfg = config
    model = ctx.init_policy()
    pairs = ctx.train_pairs
    P, C, R = pairs.prompt_ids.tolist(), pairs.chosen_ids.tolist(), pairs.rejected_ids.tolist()
    ref_c = torch.tensor(pairs.ref_chosen_logp.to_numpy(), dtype=torch.float32)
    ref_r = torch.tensor(pairs.ref_rejected_logp.to_numpy(), dtype=torch.float32)
    pad = ctx.tokenizer.pad_token_id

    def step(idx):
        n = len(idx)
        prompts = [P[i] for i in idx]
        batch = collate(prompts + prompts, [C[i] for i in idx] + [R[i] for i in idx], pad, ctx.max_length)
        logps = sequence_logps(model, batch)
        losses, rc, rr = preference_loss(logps[:n], logps[n:], ref_c[idx], ref_r[idx], cfg.beta,
                                         cfg.label_smoothing, ipo=cfg.loss == "ipo")
        return losses.mean(), {
            "rewards/chosen": float(rc.mean()), "rewards/rejected": float(rr.mean()),
            "rewards/margin": float((rc - rr).mean()), "rewards/accuracy": float((rc > rr).float().mean()),
            "logps/chosen": float(logps[:n].detach().mean()), "logps/rejected": float(logps[n:].detach().mean()),
        }

    batches = list(seeded_batches(len(pairs), cfg.batch_size, cfg.epochs, ctx.data_seed))
    train_loop(model, batches, step, cfg, ctx, desc="legacy")
    return model


def _context(art, run_dir: Path, seed: int = 0, checkpoints: int = 1):
    """A real TrainContext whose evaluations along training record a checksum of the weights."""
    from harness.execution.context import TrainContext

    run_dir.mkdir(parents=True)

    def evaluate(model, label):
        return {"checksum": float(sum(p.double().sum() for p in model.parameters()))}

    return TrainContext(art, seed, run_dir, checkpoints, evaluate)


def _log(ctx) -> list[dict]:
    ctx.close()
    return [json.loads(line) for line in (ctx.run_dir / "train_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def tiny_art(smoke_cache):
    from harness.execution.artifacts import SuiteArtifacts
    from harness.suites.spec import load_suite

    art = SuiteArtifacts(load_suite(str(TINY)), "smoke", smoke_cache)
    art.train_pairs
    return art


@pytest.mark.slow
@pytest.mark.parametrize("values,variant", VARIANTS)
def test_pairwise_dpo_reproduces_the_legacy_loop_bit_for_bit(tiny_art, tmp_path, values, variant, monkeypatch):
    """Same weights after training (exactly), same per-step logs, same evaluations along training. The
    legacy loop scored padded batches; packing them (the default where it saves tokens) agrees within
    float rounding, which tests/test_packing.py checks, so it is off here."""
    import torch

    from harness.training import logprobs

    monkeypatch.setattr(logprobs, "PACKING", "off")
    torch.set_num_threads(1)
    spec = registry.get("dpo")
    cfg = spec.make_config({"batch_size": 2, "epochs": 3.0, **values}, "t")
    algo = spec.cls(cfg)
    assert algo.variant() == variant
    ctx_old, ctx_new = _context(tiny_art, tmp_path / "old"), _context(tiny_art, tmp_path / "new")
    old, new = _legacy_dpo_train(cfg, ctx_old), algo.train(ctx_new)
    so, sn = old.state_dict(), new.state_dict()
    assert so.keys() == sn.keys() and all(torch.equal(so[k], sn[k]) for k in so)
    assert not torch.equal(so["lm_head.weight"], tiny_art.load_reference().state_dict()["lm_head.weight"])
    assert ctx_old.trajectory == ctx_new.trajectory and len(ctx_new.trajectory) == 1
    lo, ln = _log(ctx_old), _log(ctx_new)
    assert len(lo) == len(ln) == ctx_new.extra["train_steps"] >= 6
    assert all(all(b[k] == v for k, v in a.items()) for a, b in zip(lo, ln))
    assert {"gradweight/p50", "gradweight/ess"} <= set(ln[0])  # the new lens, logged beside the old keys
    if variant == "dpo":  # at π_ref every DPO weight is σ(0) = ½ (within float rounding: the cached reference
        # log-probabilities were scored in packed batches of 128, the policy's here in padded batches of 2)
        assert ln[0]["gradweight/p10"] == pytest.approx(0.5, abs=1e-5)
        assert ln[0]["gradweight/p90"] == pytest.approx(0.5, abs=1e-5)


# ------------------------------------------------------------------------------- new algorithms
@pytest.fixture(scope="module")
def heldout_art(smoke_cache, tmp_path_factory):
    """The tiny suite with more training prompts, so that its pairs have a held-out (valid) split. Its
    π_SFT is the tiny suite's own (same reference key), shared through the session cache."""
    from harness.execution.artifacts import SuiteArtifacts
    from harness.suites.spec import load_suite

    path = tmp_path_factory.mktemp("suite") / "tiny.yaml"
    text = TINY.read_text().replace("train_prompts: 24", "train_prompts: 180")
    path.write_text(text.replace("samples_per_prompt: 3, max_new_tokens: 16", "samples_per_prompt: 4, max_new_tokens: 16"))
    art = SuiteArtifacts(load_suite(str(path)), "smoke", smoke_cache)
    assert (art.pairs.split == "valid").sum() >= 8
    return art


def _unpaired_file(art, path: Path) -> str:
    pairs = art.train_pairs
    with open(path, "w") as f:
        for row in pairs.itertuples():
            f.write(json.dumps({"prompt": row.prompt, "completion": row.chosen, "label": True}) + "\n")
            f.write(json.dumps({"prompt": row.prompt, "completion": row.rejected, "label": False}) + "\n")
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize("name,values", [("simpo", {}), ("orpo", {}), ("rdpo", {}), ("slic", {}), ("dpop", {}),
                                         ("kto", {}), ("kto", {"examples": "one"}), ("kto", {"unpaired_file": ""})])
def test_new_algorithm_trains_and_records_its_implicit_reward_lens(heldout_art, tmp_path, name, values):
    import torch

    torch.set_num_threads(1)
    if "unpaired_file" in values:
        values = {"unpaired_file": _unpaired_file(heldout_art, tmp_path / "unpaired.jsonl")}
    spec = registry.get(name)
    algo = spec.cls(spec.make_config({"batch_size": 8, **values}, "t"))
    ctx = _context(heldout_art, tmp_path / "run", checkpoints=0)
    model = algo.train(ctx)
    log = _log(ctx)
    steps = ctx.extra["train_steps"]
    assert len(log) == steps >= 3 and all(math.isfinite(r["loss"]) for r in log)
    assert {"gradweight/mean", "gradweight/p10", "gradweight/p50", "gradweight/p90", "gradweight/ess"} <= set(log[-1])
    ref = heldout_art.load_reference().state_dict()
    assert any(not torch.equal(v, ref[k]) for k, v in model.state_dict().items())
    ir = ctx.extra["implicit_reward"]
    traj = ir["trajectory"]
    assert traj[0]["step"] == 0 and traj[-1]["step"] == steps and len(traj) >= 3
    assert ir["n_pairs"] == int((heldout_art.pairs.split == "valid").sum())
    for e in traj:
        assert 0.0 <= e["accuracy"] <= 1.0 and 0.0 <= e["gold_accuracy"] <= 1.0
        assert e["spearman_gold_gap"] is None or -1.0 <= e["spearman_gold_gap"] <= 1.0
    if name in ("rdpo", "dpop", "kto"):  # rewards relative to π_ref: every margin is 0 at step 0
        assert traj[0]["accuracy"] == 0.5 and traj[0]["mean_margin"] == 0.0
    if name == "kto":
        ex = ctx.extra["kto_examples"]
        n = len(heldout_art.train_pairs)
        assert ex["desirable"] + ex["undesirable"] == (n if values.get("examples") == "one" else 2 * n)
        assert "kl" in log[0] and all(r["kl"] >= 0 for r in log)


def test_heldout_ranking_summary_against_scipy():
    from scipy.stats import spearmanr

    from harness.training.pairwise import ranking_summary, spearman

    rng = np.random.default_rng(0)
    gap = rng.uniform(0.01, 1.5, 200)
    margin = gap + rng.normal(0, 1.0, 200)
    margin[:5] = 0.0
    s = ranking_summary(margin, gap)
    assert s["n_pairs"] == 200
    assert s["accuracy"] == pytest.approx(np.mean((margin > 0) + 0.5 * (margin == 0)))
    assert s["spearman_gold_gap"] == pytest.approx(spearmanr(margin, gap).statistic, abs=1e-12)
    flipped = gap.copy()
    flipped[:50] *= -1  # label noise: the chosen response has the lower gold reward
    s = ranking_summary(margin, flipped)
    assert s["gold_accuracy"] == pytest.approx(np.mean(np.sign(margin[5:] * flipped[5:]) > 0) * 195 / 200 + 2.5 / 200)
    assert spearman([1, 1, 1], [1, 2, 3]) is None and spearman([1, 2], [1, 2]) is None
    s = ranking_summary(margin, np.full(200, np.nan))  # a pairs file: no gold rewards
    assert s["gold_accuracy"] is None and s["spearman_gold_gap"] is None and s["accuracy"] is not None


def test_kto_rejects_a_bad_unpaired_file(tmp_path, tiny_lm):
    from algorithms.kto import read_unpaired
    from harness.core.errors import UserError

    _, tok = tiny_lm
    spec = registry.get("kto")
    with pytest.raises(UserError, match="unpaired_file.*not a .jsonl file"):
        spec.make_config({"unpaired_file": str(tmp_path / "missing.jsonl")}, "--set")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b c", "label": true}\n{"prompt": "a", "completion": 3, "label": false}\n')
    with pytest.raises(UserError, match="line 2"):
        read_unpaired(str(bad), tok, 16)
    bad.write_text('{"prompt": "a", "completion": "b c", "label": true}\n')
    with pytest.raises(UserError, match="both desirable"):
        read_unpaired(str(bad), tok, 16)
    bad.write_text('{"prompt": "a", "completion": "b c", "label": true}\n{"prompt": "b", "completion": "d", "label": false}\n')
    P, Y, L = read_unpaired(str(bad), tok, 16)
    assert P == [[4, 0], [4, 1]] and Y == [[1, 2, 4], [3, 4]] and L == [True, False]


# ------------------------------------------------------------------------------- the report figure
def test_report_draws_the_gradient_weight_figure(tmp_path, monkeypatch):
    """``report --dir`` figures: one gradient-weight figure per algorithm that logged gradient weights."""
    from types import SimpleNamespace

    from harness.analysis import _figures, summary
    from harness.analysis import plots as P
    from harness.analysis.collect import collect_blocks
    from harness.analysis.fake import default_groups, write_fake_sweep
    from harness.analysis.options import Options

    res = tmp_path / "results"
    write_fake_sweep(res, default_groups(betas=(0.1, 0.5)), seeds=(0, 1), n_prompts=32, checkpoints=0, train_steps=20)
    for mpath in res.glob("toy/dpo-*/metrics.json"):
        run = mpath.parent
        rows = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
        with open(run / "train_log.jsonl", "w") as f:
            for r in rows:
                w = 0.5 * math.exp(-r["step"] / 10)
                f.write(json.dumps({**r, "gradweight/mean": w, "gradweight/p10": w / 2, "gradweight/p50": w,
                                    "gradweight/p90": min(1.0, 2 * w), "gradweight/ess": 0.9}) + "\n")
        m = json.loads(mpath.read_text())
        m["extra"]["implicit_reward"] = {"trajectory": [{"step": s, "accuracy": 0.5 + s / 100,
                                                         "spearman_gold_gap": s / 50} for s in (0, 10, 20)]}
        mpath.write_text(json.dumps(m))
    for other in ("plot_frontier", "plot_seed_stability", "plot_sensitivity", "plot_expected_max",
                  "plot_training_curves", "plot_bradley_terry"):  # slow to draw, and tested elsewhere
        monkeypatch.setattr(P, other, lambda *a, **k: None)
    (block,) = collect_blocks(res, "toy")
    opts = Options(n_resamples=200, formats=("png",))
    r = {"frontier": SimpleNamespace(points=[]), "gs": summary.group_stats(block, opts), "swept": [],
         "expected_max": None, "trained": ["sft", "dpo"], "bt": None}
    _figures(block, r, opts, tmp_path / "figures", "")
    assert set(r["figs"]) == {"gradient_weight_dpo"}  # SFT logs no gradient weights: no figure
    assert [p.name for p in r["figs"]["gradient_weight_dpo"]] == ["gradient_weight_dpo.png"]
    assert (tmp_path / "figures" / "gradient_weight_dpo.png").stat().st_size > 10000
