"""Judges: the suite schema, the reward-model judge, and the pairwise LLM judge (parsing, the
both-order logic, retries, the verdict cache) against a local fake endpoint and, where vLLM is
installed, against a real ``vllm serve`` process on loopback."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from harness.evaluation.judges import VaderJudge, completions_from_run, make_judge, pairwise_win_scores
from harness.evaluation.judges.llm import PAIRWISE_PROMPTS, JudgeError, PairwiseLLMJudge, combine_orders, parse_verdict
from harness.suites.spec import JudgeSpec


# ---------------------------------------------------------------------------------------------- schema
def test_judge_spec_defaults_to_vader_and_checks_new_kinds(tmp_path):
    from harness.core.config import build
    from harness.core.errors import UserError

    assert JudgeSpec().kind == "vader" and isinstance(make_judge(JudgeSpec()), VaderJudge)
    spec = build(JudgeSpec, {"kind": "llm_pairwise", "model": "m", "base_url": "http://127.0.0.1:9/v1",
                             "cache_dir": str(tmp_path)}, "suite.yaml")
    j = make_judge(spec)
    assert j.identity["prompt_version"] == "dpo-c-v1" and j.identity["temperature"] == 0.0
    with pytest.raises(UserError):
        build(JudgeSpec, {"kind": "gpt"}, "suite.yaml")
    with pytest.raises(UserError, match="base_url"):
        make_judge(JudgeSpec(kind="llm_pairwise", model="m"))
    with pytest.raises(UserError, match="model"):
        make_judge(JudgeSpec(kind="reward_model"))
    with pytest.raises(UserError, match="prompt_version"):
        make_judge(JudgeSpec(kind="llm_pairwise", model="m", base_url="http://x/v1", prompt_version="v0",
                             cache_dir=str(tmp_path)))


# ---------------------------------------------------------------------------------------------- parsing
@pytest.mark.parametrize("reply, verdict", [
    ("Comparison: the first is tighter.\nPreferred: A", 1),
    ("Comparison: ...\nPreferred: B", 2),
    ("**Preferred:** B", 2), ("preferred: response a", 1), ("Preferred: \"A\"", 1), ("Preferred: 2", 2),
    ("Preferred: A\nPreferred: B", None),          # both named: unparseable
    ("I preferred a shorter answer", None),        # prose, no verdict line
    ("", None), (None, None), ("Preferred: C", None),
])
def test_parse_verdict(reply, verdict):
    assert parse_verdict(reply) == verdict


@pytest.mark.parametrize("reply, verdict", [
    # issue #17: the article "a" is not a verdict, and only the declared answer line counts
    ("Comparison: B is preferred: a clear winner.\nPreferred: B", 2),
    ("Preferred: a tie", None),
    ("Comparison: I'd say preferred: B.\nPreferred: A", 1),
    ("Preferred: A is shorter, B is clearer.\nPreferred: B", 2),
    ("Preferred: A, though B is close", None),
    ("Preferred: A or B", None), ("Preferred: both", None), ("Preferred: neither", None),
    ("Preferred: B\nPreferred: A", None),                                 # contradicts itself
    ("Comparison: x\nPreferred: B\nOn reflection, A reads better.", None),  # the verdict is not the last line
    ("Comparison: x\nPreferred: A\nPreferred: A", 1),
    ("Comparison: x\nPreferred: **B**", 2), ("Comparison: x\n**Preferred: A**", 1),
    ("Comparison: x\nPreferred: Response B.", 2), ("Preferred: (B)", 2), ("Preferred:A", 1),
    ("Comparison: x\nPreferred: A  \n\n", 1), ("Comparison: x\r\nPreferred: B\r\n", 2),
])
def test_parse_verdict_reads_the_declared_line_strictly(reply, verdict):
    assert parse_verdict(reply) == verdict


def test_both_order_combination():
    # (verdict with A shown first, verdict with B shown first) -> score of A
    assert combine_orders(1, 2) == (1.0, "consistent")      # A preferred in both orders
    assert combine_orders(2, 1) == (0.0, "consistent")      # B preferred in both orders
    assert combine_orders(1, 1) == (0.5, "inconsistent")    # always the first shown: position bias
    assert combine_orders(2, 2) == (0.5, "inconsistent")
    assert combine_orders(None, 2) == (0.5, "unparseable")
    assert combine_orders(1, None) == (0.5, "unparseable")


def test_prompts_are_versioned_templates():
    for text in PAIRWISE_PROMPTS.values():
        filled = text.format(prompt="<P>", first="<FIRST>", second="<SECOND>")
        assert "Preferred: A" in filled and filled.index("<P>") < filled.index("<FIRST>") < filled.index("<SECOND>")


# ---------------------------------------------------------------------------------------------- fake endpoint
class FakeEndpoint:
    """An OpenAI-compatible /v1/chat/completions on loopback. ``policy(first, second)`` returns the
    reply: a text, None (``content: null``) or a tuple (text, finish_reason); the first ``fail_first``
    requests get HTTP 503. ``texts`` holds the prompt of every answered request."""

    def __init__(self, policy, fail_first: int = 0, status: int = 503):
        self.policy, self.fail_left, self.status, self.hits = policy, fail_first, status, 0
        self.texts: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.hits += 1
                if outer.fail_left > 0:
                    outer.fail_left -= 1
                    self.send_response(outer.status)
                    self.end_headers()
                    self.wfile.write(b"busy")
                    return
                text = body["messages"][0]["content"]
                outer.texts.append(text)
                first = text.split("Response A:\n")[1].split("\n\nResponse B:")[0]
                second = text.split("Response B:\n")[1].split("\n\n")[0]
                reply, finish = outer.policy(first, second), "stop"
                if isinstance(reply, tuple):
                    reply, finish = reply
                data = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply},
                                                "finish_reason": finish}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _judge(url, tmp_path, **kw):
    kw.setdefault("backoff_s", 0.01)
    return PairwiseLLMJudge("fake", url, cache_dir=tmp_path / "cache", **kw)


def test_llm_judge_both_orders_counters_and_cache(tmp_path):
    def policy(first, second):
        if "garbled" in first + second:
            return "no idea"
        if "biased" in first + second:
            return "Comparison: x\nPreferred: A"        # always the first shown
        return "Comparison: y\nPreferred: " + ("A" if len(first) > len(second) else "B")  # the longer one

    ep = FakeEndpoint(policy)
    try:
        judge = _judge(ep.url, tmp_path)
        prompts = ["p1", "p2", "p3", "p4", "p5"]
        a = ["long answer", "x", "biased one", "garbled", "same"]
        b = ["short", "longer one", "biased two!", "other", "same"]
        res = judge.compare(prompts, a, b)
        assert res.scores.tolist() == [1.0, 0.0, 0.5, 0.5, 0.5]
        assert res.outcomes == ["consistent", "consistent", "inconsistent", "unparseable", "identical"]
        assert (res.consistent, res.inconsistent, res.unparseable, res.identical) == (2, 1, 1, 1)
        assert res.order_consistency_rate == pytest.approx(2 / 3)
        # 4 distinct pairs x 2 orders, identical: none; the garbled pair's replies are asked twice more
        assert res.requests == 8 + 2 * 2 and ep.hits == 12 and res.rejected_replies == 6 and res.unresolved == 1
        assert res.identity == judge.identity and res.identity["model"] == "fake"
        again = _judge(ep.url, tmp_path).compare(prompts, a, b)   # a fresh judge: the cache is on disk
        assert again.cache_hits == 6 and again.requests == 6 and ep.hits == 18   # only verdicts were cached
        assert again.scores.tolist() == res.scores.tolist()
        # a different prompt version or temperature is a different judge: no stale verdicts
        other = _judge(ep.url, tmp_path, prompt_version="dpo-s-v1").compare(prompts[:1], a[:1], b[:1])
        assert other.requests == 2
        scores, info = pairwise_win_scores(judge, prompts, a, b)
        assert info["order_consistency_rate"] == pytest.approx(2 / 3) and info["wins"] == 1
        assert info["judge"]["prompt_version"] == "dpo-c-v1"
    finally:
        ep.close()


def test_llm_judge_retries_with_backoff_then_answers(tmp_path):
    ep = FakeEndpoint(lambda f, s: "Preferred: A", fail_first=2)
    try:
        judge = _judge(ep.url, tmp_path, max_retries=3, concurrency=1)
        t0 = time.perf_counter()
        res = judge.compare(["p"], ["x"], ["y"])
        assert ep.hits == 4 and judge.requests_made == 4      # 2 failures + 2 answers
        assert time.perf_counter() - t0 >= 0.01 + 0.02       # backoff 0.01 s, then 0.02 s
        assert res.outcomes == ["inconsistent"]
    finally:
        ep.close()
    ep = FakeEndpoint(lambda f, s: "Preferred: A", fail_first=100)
    try:
        with pytest.raises(JudgeError, match="gave up after 3 attempts"):
            _judge(ep.url, tmp_path, max_retries=2, concurrency=1).compare(["q"], ["x"], ["y"])
    finally:
        ep.close()
    ep = FakeEndpoint(lambda f, s: "Preferred: A", fail_first=100, status=401)
    try:
        with pytest.raises(JudgeError, match="HTTP 401"):   # not retried: a client error stays an error
            _judge(ep.url, tmp_path, max_retries=5, concurrency=1).compare(["r"], ["x"], ["y"])
        assert ep.hits == 1
    finally:
        ep.close()
    with socket.socket() as s:  # nothing listens: a transport error, retried, then reported
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    with pytest.raises(JudgeError, match="ConnectionError"):
        _judge(dead, tmp_path, max_retries=1, concurrency=1).compare(["s"], ["x"], ["y"])


def test_failed_replies_are_retried_never_cached_and_counted(tmp_path):
    """Issue #17.1: an empty reply (content null) or one cut off by max_tokens is not a verdict: it is
    asked again (bounded), never cached, and a pair left without a verdict is counted as unresolved."""
    calls: dict[tuple, int] = {}

    def policy(first, second):
        calls[first, second] = calls.get((first, second), 0) + 1
        if first + second in ("xy", "yx"):      # null content once, then a verdict: the longer one... "x"
            return None if calls[first, second] == 1 else "Comparison: c\nPreferred: " + ("A" if first == "x" else "B")
        return ("Comparison: both responses are long and the judge ran out of", "length")  # always cut off

    ep = FakeEndpoint(policy)
    try:
        prompts, a, b = ["p", "q"], ["x", "u"], ["y", "v"]
        res = _judge(ep.url, tmp_path).compare(prompts, a, b)
        assert res.outcomes == ["consistent", "unparseable"] and res.scores.tolist() == [1.0, 0.5]
        retries = 2                                          # the default bound on re-asking
        assert res.requests == 2 * 2 + 2 * (1 + retries) == ep.hits
        assert res.unresolved == 1 and res.summary()["unresolved"] == 1
        scores, info = pairwise_win_scores(_judge(ep.url, tmp_path), prompts, a, b)
        assert info["unresolved"] == 1 and info["ties"] == 1 and info["win_rate"] == 0.75
        # the verdicts of the resolved pair were cached; the unresolved pair is asked again every run
        hits = ep.hits
        again = _judge(ep.url, tmp_path).compare(prompts, a, b)
        assert again.cache_hits == 2 and again.requests == 2 * (1 + retries) == ep.hits - hits
        assert again.unresolved == 1
        # the endpoint recovers: the pair resolves without any stale tie in the way
        ep.policy = lambda f, s: "Comparison: c\nPreferred: A"
        fixed = _judge(ep.url, tmp_path).compare(prompts[1:], a[1:], b[1:])
        assert fixed.outcomes == ["inconsistent"] and fixed.unresolved == 0 and fixed.requests == 2
    finally:
        ep.close()


def test_cache_key_is_the_structured_triple_and_the_judge_revision(tmp_path):
    """Issue #17.3: a response containing the template's delimiter must not make two different
    (prompt, A, B) triples share a cached verdict; a new ``revision`` of the judge gets fresh verdicts."""
    from harness.core.hashing import non_default

    ep = FakeEndpoint(lambda f, s: "Comparison: c\nPreferred: A")
    try:
        delim = "\n\nResponse B:\n"
        one = _judge(ep.url, tmp_path).compare(["p"], ["x" + delim + "y"], ["z"])
        two = _judge(ep.url, tmp_path).compare(["p"], ["x"], ["y" + delim + "z"])
        assert one.requests == 2 and two.requests == 2 and two.cache_hits == 0
        assert len(set(ep.texts)) == 3   # two of the four prompts render identically, and were both sent
        # the same triple under another deployment of the same model name: asked again, then cached
        r2 = _judge(ep.url, tmp_path, revision="2024-06-redeploy")
        assert r2.compare(["p"], ["x"], ["y" + delim + "z"]).requests == 2
        assert _judge(ep.url, tmp_path, revision="2024-06-redeploy").compare(
            ["p"], ["x"], ["y" + delim + "z"]).requests == 0
        assert r2.identity["revision"] == "2024-06-redeploy" and "revision" not in _judge(ep.url, tmp_path).identity
        # the judge's settings are part of the key as well
        assert _judge(ep.url, tmp_path, max_tokens=64).compare(["p"], ["x"], ["y" + delim + "z"]).requests == 2
        # the suite field: settable, in the identity, and absent from run ids while left at its default
        spec = JudgeSpec(kind="llm_pairwise", model="fake", base_url=ep.url, cache_dir=str(tmp_path / "cache"),
                         revision="2024-06-redeploy")
        assert make_judge(spec).identity["revision"] == "2024-06-redeploy"
        assert non_default(JudgeSpec()) == {} and "revision" not in non_default(JudgeSpec(kind="llm_pairwise"))
    finally:
        ep.close()


# ---------------------------------------------------------------------------------------------- scalar judges
def test_reward_model_judge_scores_in_padded_batches(tmp_path):
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification

    from harness.suites.reviews import generate_reviews
    from harness.training.models import train_bpe_tokenizer

    texts = generate_reviews(200, seed=1)
    tok = train_bpe_tokenizer(texts, 320)
    torch.manual_seed(0)
    rm = GPT2ForSequenceClassification(GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2,
                                                  n_head=2, num_labels=1, pad_token_id=tok.pad_token_id,
                                                  bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)).eval()
    rm.save_pretrained(tmp_path / "rm")
    tok.save_pretrained(tmp_path / "rm")
    judge = make_judge(JudgeSpec(kind="reward_model", model=str(tmp_path / "rm"), batch_size=3,
                                 target="prompt_and_completion", max_length=64))
    prompts = ["The film", "A", "This movie", "Honestly,"]
    comps = [" was great.", " dull plot and a weak ending", "", " fine"]
    got = judge.score(prompts, comps)
    with torch.no_grad():  # one text at a time, no padding: the batched scores must agree
        want = [rm(**tok(p + c, return_tensors="pt")).logits[0, 0].item() for p, c in zip(prompts, comps)]
    assert judge.score([""], [""]).shape == (1,)  # an empty text is scored, not an error
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert got.dtype == np.float64 and judge.identity["kind"] == "reward_model"
    scores, info = pairwise_win_scores(judge, prompts, comps, comps[::-1])
    assert scores.tolist() == [float(x) for x in (got > got[::-1]) + 0.5 * (got == got[::-1])]
    assert info["judge"]["model"] == str(tmp_path / "rm")


def test_win_rate_against_another_run(tmp_path):
    import pandas as pd

    pd.DataFrame({"prompt_index": [0, 0, 1], "sample_index": [0, 1, 0],
                  "completion": ["good movie", "bad", "terrible film"]}).to_parquet(tmp_path / "samples.parquet")
    ref = completions_from_run(tmp_path, [1, 0], [0, 0])
    assert ref == ["terrible film", "good movie"]
    scores, info = pairwise_win_scores(VaderJudge(), ["p", "q"], ["wonderful", "awful"], ref)
    assert scores.tolist() == [1.0, 0.0] and info["judge"]["kind"] == "vader"
    with pytest.raises(KeyError):
        completions_from_run(tmp_path, [5], [0])


# ---------------------------------------------------------------------------------------------- real vllm serve
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory):
    pytest.importorskip("vllm")
    import requests
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from harness.suites.reviews import generate_reviews
    from harness.training.models import train_bpe_tokenizer

    folder = tmp_path_factory.mktemp("judge-model")
    tok = train_bpe_tokenizer(generate_reviews(300, seed=2) + [t.format(prompt="", first="", second="")
                                                                for t in PAIRWISE_PROMPTS.values()], 400)
    tok.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}assistant:{% endif %}")
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=1024, n_embd=64, n_layer=1, n_head=2,
                               bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)).save_pretrained(folder)
    tok.save_pretrained(folder)
    port = _free_port()
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", VLLM_CPU_NUM_OF_RESERVED_CPU="0",
               VLLM_ENABLE_V1_MULTIPROCESSING="0", VLLM_CPU_OMP_THREADS_BIND="nobind")
    env.setdefault("OMP_NUM_THREADS", "2")
    log = open(folder / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder),
                             "--served-model-name", "tiny-judge", "--host", "127.0.0.1", "--port", str(port),
                             "--dtype", "float32", "--max-model-len", "1024", "--enforce-eager", "--max-num-seqs", "16",
                             "--seed", "0", "--distributed-executor-backend", "uni"],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + float(os.environ.get("PREFBENCH_VLLM_SERVE_TIMEOUT", "300"))
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vllm serve exited with {proc.returncode}:\n" + (folder / "server.log").read_text()[-3000:])
            try:
                if requests.get(url + "/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail("vllm serve not ready in time:\n" + (folder / "server.log").read_text()[-3000:])
            time.sleep(1)
        yield url + "/v1"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_llm_judge_against_real_vllm_serve(vllm_server, tmp_path):
    """A random tiny model's verdicts are noise: this checks the protocol, parsing, both orders and the
    cache. Structured output (a vLLM request field passed through ``extra_body``) restricts the reply to
    the two verdict lines, so both orders parse and the consistency logic is exercised on real replies."""
    prompts = ["The film", "This movie", "Honestly,", "The plot"]
    a = [" was a delight.", " dragged on.", " I loved it.", " made no sense."]
    b = [" was dull.", " was wonderful.", " it was fine.", " was clever."]
    judge = PairwiseLLMJudge("tiny-judge", vllm_server, temperature=1.0, max_tokens=16, cache_dir=tmp_path,
                             extra_body={"structured_outputs": {"choice": ["Preferred: A", "Preferred: B"]},
                                         "seed": 0})
    res = judge.compare(prompts, a, b)
    assert res.requests == 8
    assert res.unparseable == 0, res.replies
    assert res.consistent + res.inconsistent == 4  # a random model: often "A" both times (position bias)
    assert all(v in ((1, 2), (2, 1), (1, 1), (2, 2)) for v in res.verdicts)
    for (v1, v2), s in zip(res.verdicts, res.scores):
        assert s == combine_orders(v1, v2)[0]
    assert 0 <= res.order_consistency_rate <= 1
    again = PairwiseLLMJudge("tiny-judge", vllm_server, temperature=1.0, max_tokens=16, cache_dir=tmp_path,
                             extra_body={"structured_outputs": {"choice": ["Preferred: A", "Preferred: B"]},
                                         "seed": 0}).compare(prompts, a, b)
    assert again.requests == 0 and again.verdicts == res.verdicts
    # free text from a random model: whatever it says, every item is counted exactly once; a reply
    # without a verdict (8 tokens: usually cut off) is asked at most twice more, and never cached
    free = PairwiseLLMJudge("tiny-judge", vllm_server, max_tokens=8, cache_dir=tmp_path).compare(prompts, a, b)
    assert 8 <= free.requests <= 8 * 3 and free.consistent + free.inconsistent + free.unparseable == 4
    assert free.rejected_replies == free.requests - sum(v is not None for pair in free.verdicts for v in pair)
