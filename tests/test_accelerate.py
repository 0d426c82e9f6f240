"""Data-parallel training of one run (harness/training/distributed.py): the native training loop
(harness/training/loop.py, which every native algorithm trains through) on 2 CPU processes over gloo,
started by torchrun (what ``accelerate launch`` does on several GPUs), against one process on the same
global batches: per-step losses, gradient norms and the final weights agree within float tolerance, and
only the main process writes.

The model is a small GPT-2 trained with a token-mean NLL over sequences of different lengths, batch 5
(uneven shares 3 + 2, weighted by tokens as SFT's loss is), so both the sharding and the weighting of
the all-reduce are exercised.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = r'''
import json, os, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
import numpy as np, torch
from transformers import GPT2Config, GPT2LMHeadModel
from harness.training import distributed
from harness.training.hparams import OptimConfig
from harness.training.loop import seeded_batches, train_loop

torch.set_num_threads(1)
torch.manual_seed(0)
model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=32, n_embd=32, n_layer=2, n_head=2,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))  # dropout off, as in every native run
model.train()
rng = np.random.default_rng(0)
lengths = rng.integers(4, 17, size=40)
data = [torch.tensor(rng.integers(0, 50, size=int(n))) for n in lengths]

def tokens(idx):
    return float(sum(len(data[i]) - 1 for i in idx))

def step(idx):
    total, n = torch.zeros(()), 0
    for i in idx:
        ids = data[i][None]
        logits = model(input_ids=ids).logits[:, :-1]
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, 50), ids[:, 1:].reshape(-1), reduction="sum")
        total, n = total + nll, n + ids.shape[1] - 1
    loss = total / n
    return loss, {"token_nll": float(loss.detach())}  # a per-token mean, as the step metrics are

class Ctx:
    resume_dir, save_every = None, 0
    def __init__(self): self.rows = []
    def checkpoint_steps(self, total): return []
    def record(self, **kw): pass
    def say(self, msg): pass
    def log(self, step, **m): self.rows.append({"step": step, **m})

ctx = Ctx()
batches = list(seeded_batches(len(data), 5, 1.0, seed=3))
cfg = OptimConfig(lr=3e-3, warmup_steps=1)
train_loop(model, batches, step, cfg, ctx, desc="dp", weight_fn=tokens)
state = {k: v.tolist() for k, v in model.state_dict().items() if v.dtype.is_floating_point}
mine = Path(sys.argv[1]) / f"rank{distributed.rank()}-of-{distributed.world_size()}.json"
mine.write_text(json.dumps({"digest": float(sum(torch.tensor(v).double().sum() for v in state.values()))}))
if distributed.is_main():
    (Path(sys.argv[1]) / "result.json").write_text(json.dumps({"world": distributed.world_size(), "log": ctx.rows,
                                                               "state": state}))
'''


KTO_SCRIPT = r'''
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
import numpy as np, pandas as pd, torch
from transformers import GPT2Config, GPT2LMHeadModel
from algorithms.kto import KTO, KTOConfig
from harness.training import distributed
from harness.training.logprobs import batched_sequence_logps

torch.set_num_threads(1)
V, PAD = 40, 0
cfg = GPT2Config(vocab_size=V, n_positions=32, n_embd=32, n_layer=2, n_head=2, resid_pdrop=0.0, embd_pdrop=0.0,
                 attn_pdrop=0.0, pad_token_id=PAD, eos_token_id=1, bos_token_id=1)

def model(kind):
    torch.manual_seed(0)
    m = GPT2LMHeadModel(cfg)
    with torch.no_grad():  # π_ref sharp, the policy near uniform: the mismatched pairs' log-ratio (z0) is > 0
        if kind == "policy":
            m.lm_head.weight.mul_(0.05)
        else:
            m.lm_head.weight.mul_(4.0)
    return m

rng = np.random.default_rng(1)
n = 12
P = [[1] + rng.integers(2, V, size=int(rng.integers(2, 5))).tolist() for _ in range(n)]
C, R = ([rng.integers(2, V, size=int(rng.integers(2, 7))).tolist() + [1] for _ in range(n)] for _ in range(2))
ref = model("ref").eval()
pairs = pd.DataFrame({"prompt_ids": P, "chosen_ids": C, "rejected_ids": R,
                      "ref_chosen_logp": batched_sequence_logps(ref, P, C, PAD, 64, 32).tolist(),
                      "ref_rejected_logp": batched_sequence_logps(ref, P, R, PAD, 64, 32).tolist()})

class Tok:
    pad_token_id = PAD

class Ctx:  # the parts of harness.execution.context.TrainContext that KTO and the training loop use
    resume_dir, save_every, lora, art, seed, data_seed = None, 0, None, None, 0, 3
    tokenizer, max_length, train_pairs = Tok(), 32, pairs
    def __init__(self): self.rows, self.extra = [], {}
    def init_policy(self, lora=True): return model("policy" if lora else "ref")
    def seed_for(self, purpose): return 5
    def checkpoint_steps(self, total): return []
    def record(self, **kw): self.extra.update(kw)
    def say(self, msg): pass
    def log(self, step, **m): self.rows.append({"step": step, **m})

ctx = Ctx()
trained = KTO(KTOConfig(lr=2e-3, warmup_steps=1, batch_size=5, epochs=1.0, beta=0.5)).train(ctx)
state = {k: v.tolist() for k, v in trained.state_dict().items() if v.dtype.is_floating_point}
digest = distributed.weights_digest(trained)
(Path(sys.argv[1]) / f"rank{distributed.rank()}-of-{distributed.world_size()}.json").write_text(json.dumps({"digest": digest}))
if distributed.is_main():
    (Path(sys.argv[1]) / "result.json").write_text(json.dumps({"world": distributed.world_size(), "log": ctx.rows,
                                                               "state": state}))
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(tmp: Path, nproc: int, source: str = SCRIPT, name: str = "dp") -> dict:
    out = tmp / f"{name}-n{nproc}"
    out.mkdir()
    script = tmp / f"train_{name}.py"
    script.write_text(source)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="1", PREFBENCH_QUIET="1")
    if nproc == 1:
        cmd = [sys.executable, str(script), str(out), str(ROOT)]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--nnodes=1",
               f"--master_port={_free_port()}", "--master_addr=127.0.0.1", str(script), str(out), str(ROOT)]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-4000:]
    result = json.loads((out / "result.json").read_text())
    result["ranks"] = sorted(f.name for f in out.glob("rank*.json"))
    result["digests"] = [json.loads((out / f).read_text())["digest"] for f in result["ranks"]]
    return result


@pytest.mark.slow
def test_two_processes_over_gloo_train_like_one_on_the_same_global_batch(tmp_path):
    import numpy as np

    one, two = _train(tmp_path, 1), _train(tmp_path, 2)
    assert one["world"] == 1 and two["world"] == 2
    assert two["ranks"] == ["rank0-of-2.json", "rank1-of-2.json"]
    assert two["digests"][0] == two["digests"][1]  # the two processes end with the same weights
    assert len(one["log"]) == len(two["log"]) == 8  # 40 sequences, batch 5
    for a, b in zip(one["log"], two["log"]):
        assert a["step"] == b["step"]
        # each process saw only its share; the token-weighted reduction restores the global batch's numbers
        for key in ("loss", "token_nll", "grad_norm", "lr"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), (a["step"], key, a[key], b[key])
    assert one["log"][-1]["loss"] < one["log"][0]["loss"]  # it trained
    moved = 0.0
    for name, w1 in one["state"].items():
        w1, w2 = np.asarray(w1), np.asarray(two["state"][name])
        # atol: AdamW divides by sqrt(v), so parameters whose gradient is ~0 analytically (attention key
        # biases) move by lr-sized steps driven by rounding noise; 5e-5 is 0.2% of the 8 steps' largest move
        np.testing.assert_allclose(w2, w1, rtol=1e-4, atol=5e-5, err_msg=name)
        moved = max(moved, float(np.abs(w1).max()))
    assert moved > 0


def test_a_single_process_is_not_distributed(monkeypatch):
    import numpy as np

    from harness.training import distributed

    for k in ("WORLD_SIZE", "RANK"):
        monkeypatch.delenv(k, raising=False)
    idx = np.arange(5)
    assert not distributed.active() and distributed.is_main()
    part, w = distributed.share(idx)
    assert part is idx and w is None
    assert distributed.reduce(None, 1.0, {"a": 1}, None) == (1.0, {"a": 1})
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert distributed.active() and not distributed.is_main()


@pytest.mark.slow
def test_kto_under_two_processes_takes_its_reference_point_over_the_global_batch(tmp_path):
    """KTO's loss couples the batch through z0, the mean log-ratio of mismatched pairs (x_i, y_{i-1}).
    Under a launcher each process holds part of the batch; z0 is still the global batch's (its terms
    summed over the processes), so the real KTO algorithm on 2 processes over gloo gives the losses, z0
    and final weights of 1 process. Batch 5 over 2 processes (shares 3 + 2): the rotation crosses the
    boundary between the shares, and a z0 of one share alone would change every loss."""
    import numpy as np

    one, two = _train(tmp_path, 1, KTO_SCRIPT, "kto"), _train(tmp_path, 2, KTO_SCRIPT, "kto")
    assert two["ranks"] == ["rank0-of-2.json", "rank1-of-2.json"] and two["digests"][0] == two["digests"][1]
    assert len(one["log"]) == len(two["log"]) == 5  # 24 examples (both sides of 12 pairs), batch 5
    assert all(r["kl"] > 0.05 for r in one["log"])  # z0 > 0: it enters every example's loss
    for a, b in zip(one["log"], two["log"]):
        assert a["step"] == b["step"] and set(a) == set(b)
        for key in ("loss", "kl", "grad_norm", "rewards/desirable", "rewards/undesirable", "logps/mean"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (a["step"], key, a[key], b[key])
    assert one["log"][-1]["loss"] != one["log"][0]["loss"]
    for name, w1 in one["state"].items():
        np.testing.assert_allclose(np.asarray(two["state"][name]), np.asarray(w1), rtol=1e-4, atol=5e-5,
                                   err_msg=name)


@pytest.mark.slow
def test_prefbench_run_under_torchrun_trains_each_run_on_two_processes(tmp_path):
    """The whole command under a launcher: both processes run the plan, each trained run is data
    parallel over them, only the main process writes (one results folder, the same runs), and the
    training curves match a single-process run of the same command."""
    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT", "PREFBENCH_FAULT")}
    env.update(PREFBENCH_CACHE=str(cache), PREFBENCH_QUIET="1", PREFBENCH_THREADS="1", ACCELERATE_USE_CPU="1")
    (tmp_path / "tmp").mkdir()
    env["TMPDIR"] = str(tmp_path / "tmp")  # where the other process keeps its copies (private to this test)
    args = ["run", str(ROOT / "tests" / "data" / "tiny.yaml"), "--algorithms", "dpo", "--seeds", "0,1",
            "--set", "dpo.batch_size=3", "--set", "dpo.epochs=2", "--set", "dpo.lr=0.002"]
    one = subprocess.run([sys.executable, "-m", "harness.cli", *args, "--results", str(tmp_path / "one")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
                          f"--master_port={_free_port()}", "--master_addr=127.0.0.1", "-m", "harness.cli", *args,
                          "--results", str(tmp_path / "two")], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=900)
    assert two.returncode == 0, two.stderr[-3000:]
    assert not list((tmp_path / "tmp").glob("prefbench-rank*"))  # the other process's copies are gone
    assert two.stdout.count("| dpo |") == 1  # one closing table: the main process's
    runs = sorted(p.name for p in (tmp_path / "one" / "tiny").iterdir() if not p.name.startswith("."))
    assert sorted(p.name for p in (tmp_path / "two" / "tiny").iterdir() if not p.name.startswith(".")) == runs
    trained = [r for r in runs if r.startswith("dpo")]
    assert len(trained) == 2
    for run in trained:
        a, b = ([json.loads(line) for line in (tmp_path / d / "tiny" / run / "train_log.jsonl").read_text().splitlines()]
                for d in ("one", "two"))
        assert [r["step"] for r in a] == [r["step"] for r in b] and len(a) >= 3
        for ra, rb in zip(a, b):
            for key in ("loss", "grad_norm", "rewards/margin"):
                assert rb[key] == pytest.approx(ra[key], rel=1e-4, abs=1e-6), (run, ra["step"], key)
        assert a[-1]["loss"] != a[0]["loss"]  # it trained


@pytest.mark.slow
def test_a_trl_backed_algorithm_runs_under_torchrun_with_the_global_batch_split_over_the_processes(tmp_path):
    """GRPO with the learned reward model under a launcher: the reward model (a suite artifact) is
    trained by one process while the other waits for it, then TRL trains the policy data parallel on
    the launch's process group. One results folder with one finished GRPO run, whose recorded global
    batch is the hyperparameters' (prompts_per_step × num_generations, half per process), and both
    processes end with the same policy weights (each says its digest). Online RL samples differently on
    each process, so no equality with a single-process run is claimed."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT", "PREFBENCH_FAULT")}
    env.update(PREFBENCH_CACHE=str(tmp_path / "cache"), PREFBENCH_QUIET="1", PREFBENCH_THREADS="1",
               ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1", TMPDIR=str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
                        f"--master_port={_free_port()}", "--master_addr=127.0.0.1", "-m", "harness.cli", "run",
                        str(ROOT / "tests" / "data" / "tiny.yaml"), "--algorithms", "grpo", "--seeds", "0",
                        "--set", "grpo.steps=2", "--set", "grpo.prompts_per_step=2", "--set", "grpo.num_generations=2",
                        "--set", "grpo.rm_batch_size=8", "--results", str(tmp_path / "results")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    assert not list((tmp_path / "tmp").glob("prefbench-rank*"))  # the other process's copies are gone
    assert p.stdout.count("| grpo |") == 1  # one closing table: the main process's
    runs = [d for d in (tmp_path / "results" / "tiny").iterdir() if not d.name.startswith(".")]
    grpo = [d for d in runs if d.name.startswith("grpo")]
    assert len(grpo) == 1 and len(runs) == 2  # and the reference row
    m = json.loads((grpo[0] / "metrics.json").read_text())
    assert m["status"] == "ok", m.get("failure")
    dp = m["extra"]["data_parallel"]
    assert dp["world_size"] == 2 and dp["global_batch"] == 2 * 2 and dp["per_device_batch"] == 2
    # one reward model, trained by whichever process took the artifact's lock first
    assert [d.name for d in (tmp_path / "cache" / "tiny").glob("reward_model-*")] == [m["extra"]["rm_artifact"]]
    assert m["extra"]["train_steps"] == 2
    log = [json.loads(line) for line in (grpo[0] / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    said = dict(re.findall(r"rank (\d) of 2: policy weights sha256 ([0-9a-f]{64})", p.stderr))
    assert sorted(said) == ["0", "1"] and said["0"] == said["1"] == dp["weights_sha256"]


@pytest.mark.parametrize("algorithm, problem", [
    ("grpo --set grpo.prompts_per_step=3 --set grpo.num_generations=3", "grpo.prompts_per_step: a step's 3 × 3 = 9"),
    ("ppo-gt --set ppo-gt.batch_size=4 --set ppo-gt.num_mini_batches=4", "ppo-gt.num_mini_batches: got 4, must divide"),
    ("kto --micro-batch-size 2", "micro-batches would change its update"),
    ("dpo --executor ray", "only the local executor")])
def test_what_cannot_train_data_parallel_is_refused_before_anything(tmp_path, algorithm, problem):
    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "1", "PREFBENCH_CACHE": str(tmp_path / "cache")}
    results = tmp_path / "results"
    p = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(ROOT / "tests" / "data" / "tiny.yaml"),
                        "--algorithms", *algorithm.split(), "--results", str(results)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prefbench: error: ") and problem in lines[0], p.stderr
    assert not results.exists() and not (tmp_path / "cache").exists()  # the preflight writes nothing


def test_a_trl_backed_algorithm_without_a_batch_split_stays_refused_under_a_launcher(monkeypatch):
    from harness import registry
    from harness.core.errors import UserError
    from harness.training import distributed

    class Wrapped(registry.Algorithm):  # a plugin wrapping a TRL trainer that does not say how to split it
        patched_libraries = ("trl",)

    run = type("Run", (), {"algorithm": "wrapped", "config": None})()
    monkeypatch.setattr(registry, "get", lambda name: type("Spec", (), {"cls": Wrapped}))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(UserError, match="TRL-backed without a data-parallel batch split"):
        distributed.check_plan([run])
    monkeypatch.setenv("WORLD_SIZE", "1")
    distributed.check_plan([run])  # alone: nothing to split
