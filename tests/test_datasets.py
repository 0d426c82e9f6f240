"""Preference datasets (harness/suites/datasets.py) and the shipped dataset suites, offline.

The hub cannot be reached here or in CI, so each shipped suite is exercised on a small fixture written
with EXACTLY its dataset's schema (field names, nesting, split files, as on the hub), found through
``PREFBENCH_DATASETS`` (a folder of local copies: <root>/<owner>/<name> stands for that hub id). The
suites' data sections are used as shipped; a test-only copy of each YAML swaps only the model, tokenizer
and reward model for tiny local ones (built from a config) and shrinks the presets.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import re
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from harness.cli import main
from harness.core.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
SUITES = ("imdb", "tldr", "hh-helpful", "ultrafeedback")
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")

TOPICS = ["bread", "tomatoes", "a bicycle", "tea", "a resume", "a garden", "sourdough", "a fence", "rice", "a lamp",
          "a kite", "soup", "a tent", "a violin", "paint", "a boat", "jam", "a drawer", "coffee", "a quilt"]
GOOD = ["wonderful", "delightful", "great", "lovely", "superb", "excellent"]
BAD = ["terrible", "awful", "boring", "dreadful", "dull", "poor"]


# ---------------------------------------------------------------------- fixtures with the real schemas
def _parquet(path: Path, rows: list[dict], schema: pa.Schema | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def _imdb(root: Path) -> None:
    """stanfordnlp/imdb: plain_text/{train,test,unsupervised}-00000-of-00001.parquet; text (string), label
    (ClassLabel neg=0 / pos=1, stored as int64)."""
    def review(i: int, pos: bool) -> str:
        w = (GOOD if pos else BAD)[i % 6]
        return (f"I watched this movie about {TOPICS[i % 20]} last night and it was {w}. The acting was {w} "
                f"and the story<br /><br />felt {w} from start to end. Number {i}.")
    schema = pa.schema([("text", pa.string()), ("label", pa.int64())])
    for split, n, off in (("train", 60, 0), ("test", 40, 1000), ("unsupervised", 10, 2000)):
        rows = [{"text": review(off + i, i % 2 == 0), "label": (i + 1) % 2 if split != "unsupervised" else -1}
                for i in range(n)]
        _parquet(root / "stanfordnlp/imdb/plain_text" / f"{split}-00000-of-00001.parquet", rows, schema)


def _hh(root: Path) -> None:
    """Anthropic/hh-rlhf: helpful-base/{train,test}.jsonl.gz, rows {"chosen": transcript, "rejected": transcript}
    (full "\\n\\nHuman: ...\\n\\nAssistant: ..." dialogues). The train split holds one pair with identical
    transcripts and one repeated row, as the real data does."""
    def row(i: int) -> dict:
        t = TOPICS[i % 20]
        head = f"\n\nHuman: How do I take care of {t}?"
        if i % 3 == 0:  # multi-turn: the prompt runs up to the LAST assistant turn
            head += f"\n\nAssistant: Do you mean {t} at home?\n\nHuman: Yes, at home, number {i}."
        else:
            head += f" Question {i}."
        return {"chosen": head + f"\n\nAssistant: Keep {t} clean and dry, and check it every week.",
                "rejected": head + "\n\nAssistant: I don't know."}
    for split, n, off in (("train", 40, 0), ("test", 20, 500)):
        rows = [row(off + i) for i in range(n)]
        if split == "train":
            rows.append(dict(rows[1]))  # a duplicate
            rows.append({"chosen": rows[2]["chosen"], "rejected": rows[2]["chosen"]})  # chosen == rejected
        p = root / "Anthropic/hh-rlhf/helpful-base" / f"{split}.jsonl.gz"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))


def _tldr_prompt(i: int) -> str:
    t = TOPICS[i % 20]
    return (f"SUBREDDIT: r/AskReddit\n\nTITLE: Help with {t} ({i})\n\nPOST: I have been trying to deal with {t} "
            f"for weeks and nothing works. My roommate says it is fine but I disagree.\n\nTL;DR:")


def _tldr(root: Path) -> None:
    """trl-lib/tldr-preference: data/{train,validation}-00000-of-00001.parquet, prompt/chosen/rejected strings;
    trl-lib/tldr: data/{train,validation,test}-00000-of-00001.parquet, prompt/completion strings."""
    s3 = pa.schema([("prompt", pa.string()), ("chosen", pa.string()), ("rejected", pa.string())])
    for split, n, off in (("train", 40, 0), ("validation", 20, 500)):
        rows = [{"prompt": _tldr_prompt(off + i), "chosen": f" struggling with {TOPICS[(off + i) % 20]}, need advice",
                 "rejected": " roommate"} for i in range(n)]
        _parquet(root / "trl-lib/tldr-preference/data" / f"{split}-00000-of-00001.parquet", rows, s3)
    s2 = pa.schema([("prompt", pa.string()), ("completion", pa.string())])
    for split, n, off in (("train", 40, 0), ("validation", 10, 500), ("test", 10, 900)):
        rows = [{"prompt": _tldr_prompt(off + i), "completion": f" cannot fix {TOPICS[(off + i) % 20]}, help"}
                for i in range(n)]
        _parquet(root / "trl-lib/tldr/data" / f"{split}-00000-of-00001.parquet", rows, s2)


UF_MESSAGES = pa.list_(pa.struct([("content", pa.string()), ("role", pa.string())]))
UF_SCHEMA = pa.schema([("prompt", pa.string()), ("prompt_id", pa.string()), ("chosen", UF_MESSAGES),
                       ("rejected", UF_MESSAGES), ("messages", UF_MESSAGES), ("score_chosen", pa.float64()),
                       ("score_rejected", pa.float64())])


def _ultrafeedback(root: Path) -> None:
    """HuggingFaceH4/ultrafeedback_binarized: data/{train,test}_{prefs,sft,gen}-00000-of-00001.parquet; prompt,
    prompt_id (sha256 hex), chosen/rejected/messages as [{content, role}] (user turn, then the assistant's),
    score_chosen, score_rejected."""
    def row(i: int) -> dict:
        q = f"Write one sentence about {TOPICS[i % 20]} (request {i})."
        good = [{"content": q, "role": "user"},
                {"content": f"Here is a {GOOD[i % 6]} sentence about {TOPICS[i % 20]}.", "role": "assistant"}]
        bad = [{"content": q, "role": "user"}, {"content": "No.", "role": "assistant"}]
        return {"prompt": q, "prompt_id": hashlib.sha256(q.encode()).hexdigest(), "chosen": good, "rejected": bad,
                "messages": good, "score_chosen": 8.5, "score_rejected": 3.0}
    for split, n, off in (("train_prefs", 40, 0), ("test_prefs", 20, 500), ("train_sft", 10, 1000),
                          ("test_sft", 5, 1500), ("train_gen", 10, 2000), ("test_gen", 5, 2500)):
        _parquet(root / "HuggingFaceH4/ultrafeedback_binarized/data" / f"{split}-00000-of-00001.parquet",
                 [row(off + i) for i in range(n)], UF_SCHEMA)


def write_hub_fixtures(root: Path) -> Path:
    for make in (_imdb, _hh, _tldr, _ultrafeedback):
        make(root)
    return root


def write_tiny_models(root: Path) -> dict[str, Path]:
    """A tiny chat-capable GPT-2 (policy and tokenizer, with a chat template), a 2-label sentiment classifier
    (NEGATIVE/POSITIVE, like siebert/sentiment-roberta-large-english) and a one-output reward model."""
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

    from harness.training.models import train_bpe_tokenizer

    texts = [f"{a} {b} {t}" for a in GOOD + BAD for b in GOOD + BAD for t in TOPICS][:2000]
    texts += ["<|user|> <|assistant|> <|end|> SUBREDDIT TITLE POST TL;DR Human Assistant"] * 5
    tok = train_bpe_tokenizer(texts, 400)
    tok.chat_template = CHAT_TEMPLATE
    out = {}
    torch.manual_seed(0)
    cfg = dict(vocab_size=len(tok), n_positions=1024, n_embd=32, n_layer=2, n_head=2, bos_token_id=tok.bos_token_id,
               eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    for name, model in (("policy", GPT2LMHeadModel(GPT2Config(**cfg))),
                        ("sentiment", GPT2ForSequenceClassification(GPT2Config(
                            **cfg, num_labels=2, id2label={0: "NEGATIVE", 1: "POSITIVE"},
                            label2id={"NEGATIVE": 0, "POSITIVE": 1}))),
                        ("reward", GPT2ForSequenceClassification(GPT2Config(**cfg, num_labels=1)))):
        path = root / f"tiny-{name}"
        model.save_pretrained(path, safe_serialization=True)
        tok.save_pretrained(path)
        out[name] = path
    return out


def test_suite_copy(name: str, folder: Path, models: dict[str, Path]) -> Path:
    """A test-only copy of ``suites/<name>.yaml``: data, prompts and pairs sections as shipped; the model,
    tokenizer and reward model swapped for the tiny local ones; presets shrunk."""
    data = yaml.safe_load((ROOT / "suites" / f"{name}.yaml").read_text())
    data["tokenizer"] = {"kind": "pretrained", "name_or_path": str(models["policy"])}
    data["policy"] = {"kind": "pretrained", "name_or_path": str(models["policy"]),
                      "max_length": data["policy"]["max_length"]}
    if data["judge"]["kind"] == "reward_model":
        data["judge"]["model"] = str(models["sentiment" if data["judge"].get("label") else "reward"])
    if data["reference"]["kind"] == "train_on_corpus":
        data["reference"].update(steps=3, batch_size=4)
    data["evaluation"].update(max_new_tokens=8, batch_size=8)
    if data["pairs"]["kind"] == "sampled":
        data["pairs"]["max_new_tokens"] = 8
    small = {"train_prompts": 8, "eval_prompts": 4, "algorithms": {"dpo": {"batch_size": 4, "epochs": 1.0},
                                                                    "sft": {"batch_size": 4, "epochs": 1.0}}}
    data["presets"] = {"smoke": dict(small), "full": dict(small, train_prompts=12)}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


test_suite_copy.__test__ = False  # a helper, not a test


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    write_hub_fixtures(root / "hub")
    models = write_tiny_models(root / "models")
    copies = {name: test_suite_copy(name, root, models) for name in SUITES}
    return {"hub": root / "hub", "models": models, "suites": copies, "root": root}


@pytest.fixture
def hub_env(offline, monkeypatch, tmp_path):
    monkeypatch.setenv("PREFBENCH_DATASETS", str(offline["hub"]))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # never the real hub, even where it is reachable
    monkeypatch.setenv("PREFBENCH_CACHE", str(tmp_path / "cache"))
    from harness.suites import datasets

    datasets._CACHE.clear()
    datasets._HUB.clear()
    yield offline
    datasets._HUB.clear()


def _artifacts(path: Path, tmp_path: Path, preset: str = "smoke"):
    from harness.evaluation.sampling import get_sampler
    from harness.execution.artifacts import SuiteArtifacts
    from harness.suites.spec import load_suite

    return SuiteArtifacts(load_suite(str(path)), preset, tmp_path / "cache", get_sampler("hf"))


# ---------------------------------------------------------------------- the four shipped suites
def test_shipped_suites_load_and_name_their_datasets():
    from harness.suites.spec import load_suite

    ids = {"imdb": "stanfordnlp/imdb", "tldr": "trl-lib/tldr-preference", "hh-helpful": "Anthropic/hh-rlhf",
           "ultrafeedback": "HuggingFaceH4/ultrafeedback_binarized"}
    for name in SUITES:
        s = load_suite(name)
        assert {"smoke", "full"} <= set(s.presets)
        where = s.data.name if s.pairs.kind == "sampled" else s.pairs.dataset.path
        assert where == ids[name]


@pytest.mark.parametrize("name,fmt", [("tldr", "standard"), ("hh-helpful", "implicit"),
                                      ("ultrafeedback", "conversational")])
def test_dataset_suites_read_their_fixture(hub_env, tmp_path, name, fmt):
    """load -> pairs (counts, formats) on the exact-schema fixture, as `run` does before any compute."""
    from harness.suites.datasets import preflight_pairs

    art = _artifacts(hub_env["suites"][name], tmp_path)
    art.check_prompts()
    rep = preflight_pairs(art)
    assert rep["format"] == fmt
    assert rep["pairs"] == rep["pairs_selected"] - rep["dropped_length"] > 0
    assert len(art.pair_prompts) == 8 and len(art.eval_prompts) == 4
    assert not set(art.pair_prompts) & set(art.eval_prompts)
    cols = rep["_cols"]
    if name == "hh-helpful":
        assert rep["identical"] == 1 and rep["duplicates"] == 1  # the fixture's planted rows
        assert all(p.startswith("\n\nHuman:") and p.endswith("\n\nAssistant:") for p in cols["prompt"])
        assert all("Human:" not in c for c in cols["chosen"])  # the prompt holds every earlier turn
        assert any(p.count("\n\nAssistant:") == 2 for p in cols["prompt"])  # multi-turn: up to the LAST turn
    if name == "ultrafeedback":
        assert all(p.startswith("<|user|>") and p.endswith("<|assistant|>") for p in cols["prompt"])
        assert all(c.endswith("<|end|>") and "<|user|>" not in c for c in cols["chosen"])
    if name == "tldr":
        assert all(p.endswith("TL;DR:") for p in cols["prompt"])


def test_imdb_suite_reads_train_reviews_and_test_prefixes(hub_env, tmp_path):
    art = _artifacts(hub_env["suites"]["imdb"], tmp_path)
    train, held_out = art.corpus
    assert len(train) == 60 and len(held_out) == 40  # data.split train; heldout_split test
    art.check_prompts()
    test_words = {w for doc in held_out for w in doc.split()}
    for p in art.eval_prompts:
        assert 2 <= len(p.split()) <= 8 and any(doc.startswith(p) for doc in held_out)
    assert all(set(p.split()) <= test_words for p in art.eval_prompts)


def test_reward_model_judge_with_a_label_scores_probabilities(hub_env):
    from harness.evaluation.judges import make_judge
    from harness.suites.spec import JudgeSpec

    judge = make_judge(JudgeSpec(kind="reward_model", model=str(hub_env["models"]["sentiment"]), label="positive"))
    r = judge.score(["a", "b"], ["a lovely film", "an awful film"])
    assert ((r > 0) & (r < 1)).all() and judge.identity["label"] == "positive"
    with pytest.raises(UserError, match="NEGATIVE, POSITIVE"):
        make_judge(JudgeSpec(kind="reward_model", model=str(hub_env["models"]["sentiment"]), label="joy"))


@pytest.mark.slow
def test_each_shipped_suite_trains_dpo_on_its_fixture(hub_env, tmp_path):
    """For every shipped suite: load -> π_SFT -> pairs (with reference log-probs) -> a few DPO steps."""
    import math

    from harness import registry
    from harness.execution.context import TrainContext

    for name in SUITES:
        art = _artifacts(hub_env["suites"][name], tmp_path)
        pairs = art.pairs
        assert len(art.train_pairs) > 0 and set(pairs.split) <= {"train", "valid"}
        assert all(ids[0] == art.tokenizer.bos_token_id for ids in pairs.prompt_ids)
        assert all(math.isfinite(x) for x in pairs.ref_chosen_logp)
        if art.suite.pairs.kind == "dataset":
            report = json.loads((next(art.cache.root.glob("pairs-*")) / "load_report.json").read_text())
            assert report["pairs"] == len(pairs) and report["format"] == art.suite.pairs.dataset.format
        run_dir = tmp_path / f"run-{name}"
        run_dir.mkdir()
        spec = registry.get("dpo")
        ctx = TrainContext(art, 0, run_dir, 0, None)
        try:
            model = spec.cls(spec.make_config({"batch_size": 2, "epochs": 1.0}, "test")).train(ctx)
        finally:
            ctx.close()
        log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
        assert len(log) >= 2 and all(math.isfinite(r["loss"]) for r in log if "loss" in r)
        assert model is not None


def test_check_passes_on_each_suite_copy(hub_env, capsys):
    for name in SUITES:
        capsys.readouterr()
        code = main(["check", str(hub_env["suites"][name])])
        out, err = capsys.readouterr()
        assert code == 0, out + err
        assert "no problems found" in out and re.search(r"^tokens: [\d,]+ per training epoch", out, re.M)
        assert re.search(r"^run time: about \d", out, re.M)
        if name != "imdb":
            assert re.search(r"-> \d+ pairs$", out, re.M)
        if name == "ultrafeedback":  # a scalar judge on dataset pairs: the gold check ran (the tiny reward model
            assert re.search(r"^gold check: mean gold reward chosen \S+ > rejected \S+ over 8 pairs$", out, re.M)
        else:  # is seeded); sampled pairs and a pairwise judge have none
            assert "gold check" not in out


def test_check_lists_every_problem_and_unreachable_hub_fails_in_seconds(tmp_path, monkeypatch, capsys):
    """The shipped suites offline: each hub id is one problem line naming the id and how to use a local copy."""
    monkeypatch.delenv("PREFBENCH_DATASETS", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    from harness.suites import datasets

    datasets._HUB.clear()
    t0 = time.perf_counter()
    code = main(["check", "hh-helpful"])
    seconds = time.perf_counter() - t0
    out, err = capsys.readouterr()
    datasets._HUB.clear()
    assert code == 2 and seconds < 30
    problems = out.split("problems (", 1)[1].splitlines()[1:]
    assert any("pairs.dataset.path: Anthropic/hh-rlhf" in p and "hf download Anthropic/hh-rlhf" in p
               and "PREFBENCH_DATASETS" in p for p in problems)
    assert any("EleutherAI/pythia-2.8b" in p for p in problems)
    assert len(problems) == len(set(problems)) and err.count("\n") == 1


def _user_suite(tmp_path: Path, rows: list[dict], extra: dict | None = None) -> str:
    (tmp_path / "prefs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = yaml.safe_load((ROOT / "tests" / "data" / "tiny.yaml").read_text())
    data.update(pairs={"kind": "dataset", "dataset": {"path": "prefs.jsonl", **(extra or {})}})
    p = tmp_path / "mine.yaml"
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(p)


def _rows(n: int, swap: bool = False) -> list[dict]:
    rows = [{"prompt": f"the film about {TOPICS[i % 20]} number {i} was",
             "chosen": f"{GOOD[i % 6]} and {GOOD[(i + 1) % 6]}", "rejected": f"{BAD[i % 6]} and {BAD[(i + 2) % 6]}"}
            for i in range(n)]
    if swap:
        for r in rows:
            r["chosen"], r["rejected"] = r["rejected"], r["chosen"]
    return rows


def test_gold_check_catches_inverted_pairs(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PREFBENCH_CACHE", str(tmp_path / "cache"))
    ok = _user_suite(tmp_path, _rows(30))
    assert main(["check", ok]) == 0
    out = capsys.readouterr().out
    m = re.search(r"gold check: mean gold reward chosen (\S+) > rejected (\S+)", out)
    assert m and float(m.group(1)) > float(m.group(2))
    (tmp_path / "b").mkdir()
    bad = _user_suite(tmp_path / "b", _rows(30, swap=True))
    assert main(["check", bad]) == 2
    out = capsys.readouterr().out
    assert "inverted labels" in out and "prefs.jsonl: chosen" in out


def test_length_policy_drop_and_truncate_are_counted(hub_env, tmp_path):
    from harness.suites.datasets import preflight_pairs

    rows = [{"prompt": "lovely tea " * (40 if i % 2 else 1) + TOPICS[i % 20], "rejected": "awful",
             "chosen": "great soup " * (30 if i % 3 == 0 else 1)} for i in range(24)]
    policy = {"tokenizer": {"kind": "pretrained", "name_or_path": str(hub_env["models"]["policy"])},
              "policy": {"kind": "pretrained", "name_or_path": str(hub_env["models"]["policy"]), "max_length": 128}}
    reports = {}
    for lp in ("drop", "truncate"):
        d = tmp_path / lp
        d.mkdir()
        path = _user_suite(d, rows, {"max_prompt_tokens": 32, "max_response_tokens": 24, "length_policy": lp})
        data = yaml.safe_load(Path(path).read_text())
        data.update(policy, presets={"smoke": {"train_prompts": 24, "eval_prompts": 4},
                                     "full": {"train_prompts": 24, "eval_prompts": 4}})
        Path(path).write_text(yaml.safe_dump(data))
        art = _artifacts(Path(path), d)
        art.check_prompts()
        reports[lp] = rep = preflight_pairs(art)
        cols = rep["_cols"]
        assert all(len(p) - 1 <= 32 for p in cols["prompt_ids"])
        assert all(len(c) <= 24 and len(r) <= 24 for c, r in zip(cols["chosen_ids"], cols["rejected_ids"]))
    over = reports["drop"]["dropped_length"]
    n = reports["drop"]["pairs_selected"]
    assert reports["drop"]["duplicates"] == 1 and n == 23  # rows 2 and 22 repeat each other
    assert 0 < over < n and reports["drop"]["truncated"] == 0 and reports["drop"]["pairs"] == n - over
    assert reports["truncate"]["truncated"] == over and reports["truncate"]["pairs"] == n


def test_unpaired_rows_are_paired_within_a_prompt(tmp_path):
    from harness.suites.datasets import PreferenceDataSpec, normalize, read_split

    rows = [{"prompt": "p1", "completion": "good one", "label": True}, {"prompt": "p1", "completion": "bad one", "label": False},
            {"prompt": "p1", "completion": "another good", "label": True}, {"prompt": "p2", "completion": "x", "label": False}]
    f = tmp_path / "kto.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = PreferenceDataSpec(path=str(f))
    ex = normalize(spec, read_split(spec, None, "train", "test"))
    assert ex.format == "unpaired"
    assert list(zip(ex.prompt, ex.chosen, ex.rejected)) == [("p1", "good one", "bad one")]
    assert ex.counts["unmatched"] == 2


def test_columns_map_a_dataset_onto_the_format(tmp_path):
    from harness.suites.datasets import PreferenceDataSpec, normalize, read_split

    f = tmp_path / "q.csv"
    f.write_text("question,better,worse\nwhat is tea,a drink,a rock\nwhat is rice,a grain,a car\n")
    spec = PreferenceDataSpec(path=str(f), columns={"prompt": "question", "chosen": "better", "rejected": "worse"})
    ex = normalize(spec, read_split(spec, None, "train", "test"))
    assert ex.format == "standard" and ex.chosen == ["a drink", "a grain"]
    with pytest.raises(UserError, match=r"q.csv: chosen: missing column.*better, question, worse"):
        normalize(PreferenceDataSpec(path=str(f)), read_split(spec, None, "train", "test"))


def test_sweep_files_cover_the_papers_grid():
    from harness.execution.plan import load_sweep_file, parse_sweeps, plan_runs
    from harness.suites.spec import load_suite

    suite = load_suite("imdb")
    dpo = load_sweep_file(str(ROOT / "suites/sweeps/imdb-dpo-beta.yaml"))
    assert parse_sweeps(dpo["sweep"]) == {"dpo": {"beta": [0.05, 0.1, 1, 5]}}
    runs = plan_runs(suite, dpo["preset"], dpo["algorithms"], dpo["seeds"], {}, "hf", parse_sweeps(dpo["sweep"]))
    assert sorted(r.config.beta for r in runs if r.algorithm == "dpo") == [0.05, 0.1, 1, 5]
    ppo = load_sweep_file(str(ROOT / "suites/sweeps/imdb-ppo-kl.yaml"))
    runs = plan_runs(suite, ppo["preset"], ppo["algorithms"], ppo["seeds"], {}, "hf", parse_sweeps(ppo["sweep"]))
    assert len([r for r in runs if r.algorithm == "ppo"]) == 4


# ---------------------------------------------------------------------- the user's own data (README example)
def user_example() -> str:
    """The suite YAML of docs/datasets.md's "Your own data" section, verbatim."""
    text = (ROOT / "docs" / "datasets.md").read_text()
    block = text.split("<!-- user-example -->", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    return block


def test_user_example_is_about_ten_lines():
    lines = [ln for ln in user_example().splitlines() if ln.strip() and not ln.strip().startswith("#")]
    assert 8 <= len(lines) <= 14


@pytest.mark.slow
def test_user_example_runs_end_to_end(hub_env, tmp_path, capsys):
    """Exactly the documented YAML, beside a preference file and a model folder, run with `prefbench run`."""
    import shutil

    shutil.copytree(hub_env["models"]["policy"], tmp_path / "my-model")
    shutil.copytree(hub_env["models"]["reward"], tmp_path / "my-reward-model")
    rows = _rows(40)  # vader-free: the documented example judges with a reward model
    (tmp_path / "my_prefs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "my-suite.yaml").write_text(user_example())
    capsys.readouterr()
    assert main(["check", str(tmp_path / "my-suite.yaml")]) == 0, capsys.readouterr()
    code = main(["run", str(tmp_path / "my-suite.yaml"), "--algorithms", "sft,dpo", "--results",
                 str(tmp_path / "results")])
    out, err = capsys.readouterr()
    assert code == 0, err
    table = [ln for ln in out.splitlines() if ln.startswith("| ")]
    assert any(ln.startswith("| dpo") for ln in table) and any(ln.startswith("| reference") for ln in table)
    steps = [ln for f in (tmp_path / "results").rglob("dpo-s0-*/train_log.jsonl") for ln in f.read_text().splitlines()]
    assert steps, "DPO took no optimizer step"
    # the report's protocol shows the data's load counts
    assert main(["report", "--results", str(tmp_path / "results"), "--dir", str(tmp_path / "report"),
                 "--resamples", "200"]) == 0
    protocol = (tmp_path / "report" / "report.md").read_text()
    line = next(ln for ln in protocol.splitlines() if ln.startswith("- **Pairs**:"))
    assert "my_prefs.jsonl" in line and "format standard: 40 rows" in line and "truncated" in line


# ---------------------------------------------------------------------- any rows: read, or one line naming the file
_TOK = {}


def _chat_tokenizer():
    if "tok" not in _TOK:
        from harness.training.models import train_bpe_tokenizer

        tok = train_bpe_tokenizer([f"{a} {t}" for a in GOOD + BAD for t in TOPICS], 300)
        tok.chat_template = CHAT_TEMPLATE
        _TOK["tok"] = tok
    return _TOK["tok"]


def _value_strategy():
    from hypothesis import strategies as st

    msg = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "tool"]),
                                 "content": st.text(max_size=12)})
    return st.one_of(st.text(max_size=20), st.lists(msg, max_size=4), st.none(), st.integers(), st.booleans(),
                     st.sampled_from(["\n\nHuman: hi\n\nAssistant: yes", "\n\nHuman: hi\n\nAssistant: no", ""]))


try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(rows=st.lists(st.dictionaries(st.sampled_from(["prompt", "chosen", "rejected", "completion", "label", "x"]),
                                         _value_strategy(), max_size=5), max_size=6),
           fmt=st.sampled_from(["auto", "standard", "conversational", "implicit", "unpaired"]))
    def test_property_any_rows_load_or_fail_in_one_line(tmp_path_factory, rows, fmt):
        from harness.suites.datasets import PreferenceDataSpec, normalize, read_split

        f = tmp_path_factory.mktemp("rows") / "p.jsonl"
        f.write_text("".join(json.dumps(r) + "\n" for r in rows))
        spec = PreferenceDataSpec(path=str(f), format=fmt)
        try:
            ex = normalize(spec, read_split(spec, None, "train", "test"), _chat_tokenizer())
        except UserError as e:
            line = e.one_line()
            assert str(f) in line and "\n" not in line and len(line) < 1500
            return
        assert len(ex.prompt) == len(ex.chosen) == len(ex.rejected) > 0
        assert all(isinstance(t, str) and t.strip() for t in ex.prompt + ex.chosen + ex.rejected)
        assert all(c != r for c, r in zip(ex.chosen, ex.rejected))
except ImportError:  # hypothesis is a test dependency (requirements.txt); without it this property is skipped
    pass


def test_tldr_and_hh_win_rates_are_against_the_datasets_responses(hub_env, tmp_path):
    """evaluation.baseline: dataset (tldr, hh-helpful): the win-rate opponent of each evaluation prompt is the
    dataset's chosen response to it (TL;DR's human summary, HH's chosen reply), not a π_SFT sample, and
    the headline table says whom the win rate is against."""
    import pandas as pd

    from harness.analysis.tables import win_opponent
    from harness.suites.datasets import eval_references, examples

    for name in ("tldr", "hh-helpful"):
        art = _artifacts(hub_env["suites"][name], tmp_path / name)
        assert art.suite.evaluation.baseline == "dataset"
        base = art.baseline
        prompts = art.eval_prompts
        assert list(base.prompt_index) == list(range(len(prompts))) and base.finished.all()
        refs = eval_references(art.suite, art.tokenizer, prompts)
        assert base.completion.tolist() == refs
        ex = examples(art.suite, art.suite.pairs.dataset.eval_split, art.tokenizer)
        chosen = dict(zip(ex.prompt, ex.chosen))
        assert all(chosen[p] == r for p, r in zip(prompts, refs))  # each prompt's own chosen response
    assert win_opponent(pd.DataFrame({"win_baseline": ["dataset", "dataset"]})) == "dataset reference"
    assert win_opponent(pd.DataFrame({"win_baseline": ["policy"]})) == "π_SFT"


def test_a_dataset_baseline_needs_dataset_prompts(tmp_path):
    from harness.core.errors import UserError
    from harness.suites.spec import load_suite

    bad = tmp_path / "bad.yaml"
    bad.write_text((Path(__file__).parent / "data" / "tiny.yaml").read_text().replace(
        "evaluation: {max_new_tokens: 16,", "evaluation: {baseline: dataset, max_new_tokens: 16,"))
    with pytest.raises(UserError, match="evaluation.baseline"):
        load_suite(str(bad))


def test_a_presets_evaluation_overrides_make_a_temperature_axis(tmp_path):
    """tldr's full-t* presets: the preset's evaluation: block overrides the suite's for its runs only; every
    temperature is its own run identity (and block), and a bad override is one line at load."""
    from harness.core.errors import UserError
    from harness.execution.plan import suite_identity
    from harness.suites.spec import load_suite

    s = load_suite("tldr")
    temps = {p: s.for_preset(p).evaluation.temperature for p in s.presets}
    assert temps["full"] == 1.0 and {temps[f"full-t{t}"] for t in ("0.25", "0.5", "0.75")} == {0.25, 0.5, 0.75}
    assert s.for_preset("full-t0.5").evaluation.baseline == "dataset" and s.evaluation.temperature == 1.0
    ids = {p: json.dumps(suite_identity(s.for_preset(p), p), sort_keys=True, default=str) for p in s.presets}
    assert len(set(ids.values())) == len(ids)
    tiny = (Path(__file__).parent / "data" / "tiny.yaml").read_text()
    for over, needle in (("{temperature: -1}", "presets.smoke.evaluation"), ("{colour: red}", "colour")):
        bad = tmp_path / "bad.yaml"
        bad.write_text(tiny.replace("  smoke:\n", f"  smoke:\n    evaluation: {over}\n", 1))
        with pytest.raises(UserError, match=needle):
            load_suite(str(bad))
