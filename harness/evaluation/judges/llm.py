"""Pairwise LLM judge behind any OpenAI-compatible chat endpoint (``vllm serve``, hosted APIs).

Protocol (docs/metrics.md §2.3), per (prompt, A, B):

1. Ask twice, once with A shown first and once with B shown first, using a versioned prompt
   (:data:`PAIRWISE_PROMPTS`; the default ``dpo-c-v1`` follows the spirit of the DPO paper's
   comparison prompt that also asks for concision, App. C.2). The reply ends with a line
   ``Preferred: A`` or ``Preferred: B`` naming the position of the better response (A = shown first).
2. Parse each reply strictly (:func:`parse_verdict`): the verdict is the reply's last non-empty line,
   and that whole line must be the verdict. A reply without one (an empty reply, ``content: null``,
   a reply cut off by ``max_tokens``, prose) is asked again, up to ``parse_retries`` more times.
3. Both orders parsed and agreeing on the same *response*: consistent, the score of A is 1 or 0. Both
   parsed but each preferring whichever came first (or second): inconsistent (position bias), scored
   as a tie (½). Either order still without a verdict after the retries: *unresolved* (outcome
   ``unparseable``), scored as a tie and counted (``unresolved`` beside the win rate). Identical texts
   are a tie without a request.
4. ``order_consistency_rate`` = consistent / (consistent + inconsistent), over items with both replies parsed.

Transport errors, HTTP 429 and 5xx are retried with exponential backoff; other HTTP errors stop the
evaluation with the server's message. Replies that hold a verdict, and only those, are cached on disk
(SQLite), so a re-run makes no request for them and asks again for every unresolved one. The cache key
hashes the structured question (a hash of each of prompt, first and second response, so no text can
make two questions render alike), the prompt version and its template text, and the judge's settings
(model, base_url, ``revision``, temperature, max_tokens, extra request fields). ``revision`` is a
label the user sets for the deployment behind the model name: a re-deployed endpoint under the same
name gets fresh verdicts. The judge's identity (model, base_url, revision when set, prompt version,
temperature, max_tokens) goes with every win rate.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

# Versioned comparison prompts. Never edit a published version: add a new key instead, because the
# version is part of every stored win rate and of the verdict-cache key. {prompt}, {first} and
# {second} are filled in; the reply must end with "Preferred: A" or "Preferred: B" (A = shown first).
PAIRWISE_PROMPTS = {
    # concision-aware comparison, in the spirit of the DPO paper's (C) prompt
    "dpo-c-v1": (
        "You are comparing two responses written for the same query. Decide which response is more "
        "helpful to the person who wrote the query. Prefer a response that answers well without "
        "padding: extra length is not a merit in itself.\n\n"
        "Query:\n{prompt}\n\n"
        "Response A:\n{first}\n\n"
        "Response B:\n{second}\n\n"
        "Reply in exactly two lines. Line 1 starts with \"Comparison:\" and gives one sentence that "
        "contrasts the two responses. Line 2 is \"Preferred: A\" or \"Preferred: B\", naming the better "
        "response, and nothing else."
    ),
    # plain quality comparison, in the spirit of the DPO paper's (S) prompt (no concision clause)
    "dpo-s-v1": (
        "Two responses to the same query follow. Which one serves the query better?\n\n"
        "Query:\n{prompt}\n\n"
        "Response A:\n{first}\n\n"
        "Response B:\n{second}\n\n"
        "Reply in exactly two lines. Line 1 starts with \"Comparison:\" and gives one sentence that "
        "contrasts the two responses. Line 2 is \"Preferred: A\" or \"Preferred: B\", and nothing else."
    ),
}
DEFAULT_PROMPT_VERSION = "dpo-c-v1"

# One whole line, once markdown emphasis (* _ `) is removed: "Preferred:", optionally "Response", one
# label (A/B or 1/2, optionally quoted or bracketed), an optional full stop, and nothing else.
_VERDICT_LINE = re.compile(r"preferred\s*:\s*(?:response\s*)?([\"'(\[]?)\s*([ab12])\s*([\"')\]]?)\s*\.?",
                           re.IGNORECASE)
_CLOSERS = {"": "", "\"": "\"", "'": "'", "(": ")", "[": "]"}
_LABELS = {"1": 1, "2": 2, "a": 1, "b": 2}


def _verdict_line(line: str) -> int | None:
    m = _VERDICT_LINE.fullmatch(re.sub(r"[*_`]", "", line).strip())
    if m is None or _CLOSERS[m.group(1)] != m.group(3):
        return None
    return _LABELS[m.group(2).lower()]


def parse_verdict(reply: str | None) -> int | None:
    """1 or 2 (the position of the preferred response: 1 = shown first), or None when the reply
    declares no verdict. The declared answer line is the reply's last non-empty line; it must be the
    verdict and nothing else: ``Preferred: A``, ``**Preferred:** B``, ``Preferred: Response A.``,
    ``Preferred: (B)``, or 1/2 for A/B. An earlier line that is itself a verdict line naming the other
    response makes the reply contradict itself (None). Words after the label (``Preferred: a tie``,
    ``Preferred: A, though B is close``) are not a verdict; a verdict-like phrase inside another line
    (``Comparison: B is preferred: a clear winner.``) is not read."""
    if not isinstance(reply, str):
        return None
    lines = [line for line in reply.splitlines() if line.strip()]
    if not lines:
        return None
    declared = _verdict_line(lines[-1])
    if declared is None:
        return None
    if any(v is not None and v != declared for v in map(_verdict_line, lines[:-1])):
        return None
    return declared


def combine_orders(v_ab: int | None, v_ba: int | None) -> tuple[float, str]:
    """Score of A and outcome from the verdict with A first (``v_ab``) and with B first (``v_ba``).
    Outcome: consistent | inconsistent | unparseable."""
    if v_ab is None or v_ba is None:
        return 0.5, "unparseable"
    a_first = 1.0 if v_ab == 1 else 0.0      # A was response 1
    a_second = 1.0 if v_ba == 2 else 0.0     # A was response 2
    if a_first == a_second:
        return a_first, "consistent"
    return 0.5, "inconsistent"


@dataclass
class PairwiseResult:
    scores: np.ndarray                  # [N] score of A: 1, 0.5 or 0
    outcomes: list[str]                 # [N] consistent | inconsistent | unparseable | identical
    verdicts: list[tuple]               # [N] (verdict with A first, verdict with B first), 1 | 2 | None
    identity: dict
    replies: list[tuple] = field(default_factory=list)  # [N] (reply with A first, reply with B first)
    requests: int = 0                   # HTTP requests made by this call (0 on a fully cached re-run)
    cache_hits: int = 0
    rejected_replies: int = 0           # replies without a verdict (null, cut off, unparseable), retried or not
    counts: dict = field(default_factory=dict)

    @property
    def consistent(self) -> int:
        return self.outcomes.count("consistent")

    @property
    def inconsistent(self) -> int:
        return self.outcomes.count("inconsistent")

    @property
    def unparseable(self) -> int:
        return self.outcomes.count("unparseable")

    @property
    def identical(self) -> int:
        return self.outcomes.count("identical")

    @property
    def unresolved(self) -> int:
        """Pairs left without a verdict in at least one order after the retries, scored as ties."""
        return self.unparseable

    @property
    def order_consistency_rate(self) -> float:
        judged = self.consistent + self.inconsistent
        return self.consistent / judged if judged else float("nan")

    @property
    def win_rate(self) -> float:
        return float(self.scores.mean()) if len(self.scores) else float("nan")

    def summary(self) -> dict:
        """Counters for metrics.json (``metrics.judge``). ``unresolved``: pairs scored as ties because
        no verdict was obtained in one order or both, after the bounded retries (= ``unparseable``,
        kept under its old name); ``rejected_replies``: replies that held no verdict, including those
        a retry then replaced."""
        return {"judge": self.identity, "consistent": self.consistent, "inconsistent": self.inconsistent,
                "unparseable": self.unparseable, "unresolved": self.unresolved, "identical": self.identical,
                "order_consistency_rate": self.order_consistency_rate,
                "judge_requests": self.requests, "judge_cache_hits": self.cache_hits,
                "rejected_replies": self.rejected_replies}


class JudgeError(RuntimeError):
    pass


def default_cache_dir(cache_root: Path | None = None) -> Path:
    if cache_root is not None:
        return Path(cache_root) / "_judge"
    root = os.environ.get("PREFBENCH_CACHE")
    if root:
        return Path(root) / "_judge"
    return Path(os.environ.get("PREFBENCH_RESULTS", "results")) / "_cache" / "_judge"


class VerdictCache:
    """Judge replies on disk: one SQLite file, key -> reply text. Safe across threads and processes.
    :class:`PairwiseLLMJudge` stores only replies that hold a verdict."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / "verdicts.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, reply TEXT, created REAL)")

    def _connect(self):
        return sqlite3.connect(self.path, timeout=30)

    def get_many(self, keys: Sequence[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        with self._lock, self._connect() as db:
            for i in range(0, len(keys), 500):
                chunk = list(keys[i:i + 500])
                q = f"SELECT key, reply FROM verdicts WHERE key IN ({','.join('?' * len(chunk))})"
                out.update(dict(db.execute(q, chunk).fetchall()))
        return out

    def put(self, key: str, reply: str) -> None:
        with self._lock, self._connect() as db:
            db.execute("INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?)", (key, reply, time.time()))


class PairwiseLLMJudge:
    def __init__(self, model: str, base_url: str, prompt_version: str = DEFAULT_PROMPT_VERSION,
                 temperature: float = 0.0, max_tokens: int = 128, api_key_env: str | None = "OPENAI_API_KEY",
                 timeout_s: float = 60.0, max_retries: int = 5, backoff_s: float = 1.0,
                 cache_dir: Path | str | None = None, concurrency: int = 4, extra_body: dict | None = None,
                 revision: str | None = None, parse_retries: int = 2):
        if prompt_version not in PAIRWISE_PROMPTS:
            from harness.core.errors import UserError

            raise UserError("judge", "prompt_version", f"unknown prompt version {prompt_version!r}; "
                            f"known: {', '.join(PAIRWISE_PROMPTS)}")
        self.model, self.base_url = model, base_url.rstrip("/")
        self.prompt_version, self.template = prompt_version, PAIRWISE_PROMPTS[prompt_version]
        self.temperature, self.max_tokens = float(temperature), int(max_tokens)
        self.api_key = os.environ.get(api_key_env) if api_key_env else None
        self.timeout_s, self.max_retries, self.backoff_s = timeout_s, max_retries, backoff_s
        self.revision = revision
        self.parse_retries = max(0, int(parse_retries))  # more requests for a reply without a verdict
        self.cache = VerdictCache(Path(cache_dir) if cache_dir else default_cache_dir())
        self.concurrency = max(1, int(concurrency))
        self.extra_body = dict(extra_body or {})
        self.requests_made = 0          # HTTP requests, including retried ones (tests count them)
        self._count_lock = threading.Lock()
        self._session = None
        self.identity = {"kind": "llm_pairwise", "model": model, "base_url": self.base_url,
                         "prompt_version": prompt_version, "temperature": self.temperature,
                         "max_tokens": self.max_tokens, "both_orders": True}
        if revision is not None:  # only when set: identities (and report blocks) of older runs stay as they were
            self.identity["revision"] = revision
        if self.extra_body:
            self.identity["extra_body"] = self.extra_body

    # ------------------------------------------------------------------ requests
    def _key(self, prompt: str, first: str, second: str) -> str:
        """The verdict-cache key of one question: each field hashed on its own (never the rendered
        text, which a response containing the template's delimiters can make ambiguous), with the prompt
        version, the template text and every judge setting that can change a reply."""
        def digest(text: str) -> str:
            return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()

        ident = {"key_scheme": 2, "model": self.model, "base_url": self.base_url, "revision": self.revision,
                 "prompt_version": self.prompt_version, "template": digest(self.template),
                 "temperature": self.temperature, "max_tokens": self.max_tokens, "extra_body": self.extra_body,
                 "prompt": digest(prompt), "first": digest(first), "second": digest(second)}
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()

    def _post(self, text: str) -> tuple[str, str | None]:
        """(reply text, "" for ``content: null``; the choice's ``finish_reason``)."""
        import requests

        if self._session is None:
            self._session = requests.Session()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        body = {"model": self.model, "messages": [{"role": "user", "content": text}],
                "temperature": self.temperature, "max_tokens": self.max_tokens, **self.extra_body}
        url = f"{self.base_url}/chat/completions"
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            with self._count_lock:
                self.requests_made += 1
            try:
                r = self._session.post(url, json=body, headers=headers, timeout=self.timeout_s)
            except (requests.ConnectionError, requests.Timeout) as e:
                last = f"{type(e).__name__}: {e}"
                continue
            if r.status_code == 429 or r.status_code >= 500:
                last = f"HTTP {r.status_code}: {r.text[:200]}"
                continue
            if r.status_code != 200:
                raise JudgeError(f"{url}: HTTP {r.status_code}: {r.text[:500]}")
            try:
                choice = r.json()["choices"][0]
                content = choice["message"]["content"]
                if content is not None and not isinstance(content, str):
                    raise TypeError(f"message content is a {type(content).__name__}")
                return content or "", choice.get("finish_reason")
            except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
                raise JudgeError(f"{url}: not an OpenAI chat completion ({e}): {r.text[:300]}") from None
        raise JudgeError(f"{url}: gave up after {self.max_retries + 1} attempts; last error: {last}")

    def _ask(self, text: str) -> tuple[str, bool, int]:
        """Ask until a reply holds a verdict, at most ``1 + parse_retries`` times: (last reply, whether
        it holds a verdict, replies rejected). A reply cut off by ``max_tokens`` is rejected even when its
        last line looks like a verdict: the line may be unfinished."""
        rejected, reply = 0, ""
        for _ in range(1 + self.parse_retries):
            reply, finish = self._post(text)
            if finish != "length" and parse_verdict(reply) is not None:
                return reply, True, rejected
            rejected += 1
        return reply, False, rejected

    # ------------------------------------------------------------------ judging
    def render(self, prompt: str, first: str, second: str) -> str:
        return self.template.format(prompt=prompt, first=first, second=second)

    def compare(self, prompts: Sequence[str], completions_a: Sequence[str],
                completions_b: Sequence[str]) -> PairwiseResult:
        """Judge A against B on every item in both orders; scores are A's (1 win, ½ tie, 0 loss)."""
        n = len(prompts)
        if not (n == len(completions_a) == len(completions_b)):
            raise ValueError("prompts, completions_a and completions_b differ in length")
        texts: dict[str, str] = {}       # key -> filled-in prompt, deduplicated
        pair_keys = []
        for p, a, b in zip(prompts, completions_a, completions_b):
            if a == b:
                pair_keys.append(None)
                continue
            k1, k2 = self._key(p, a, b), self._key(p, b, a)
            texts[k1], texts[k2] = self.render(p, a, b), self.render(p, b, a)
            pair_keys.append((k1, k2))
        # only replies with a verdict are stored; one that no longer parses (stricter rules) is asked again
        replies = {k: r for k, r in self.cache.get_many(list(texts)).items() if parse_verdict(r) is not None}
        verdict_of = {k: parse_verdict(r) for k, r in replies.items()}
        hits = len(replies)
        missing = [k for k in texts if k not in replies]
        before, rejected = self.requests_made, 0

        stop = threading.Event()  # after a hard error, queued requests are not sent

        def fetch(k):
            if stop.is_set():
                return k, None, False, 0
            try:
                reply, ok, bad = self._ask(texts[k])
            except BaseException:
                stop.set()
                raise
            if ok:
                self.cache.put(k, reply)
            return k, reply, ok, bad

        if missing:
            pool = ThreadPoolExecutor(max_workers=min(self.concurrency, len(missing)))
            try:
                for k, reply, ok, bad in pool.map(fetch, missing):
                    replies[k], verdict_of[k] = reply, (parse_verdict(reply) if ok else None)
                    rejected += bad
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)  # a hard error: send no further requests
                raise
            pool.shutdown()
        scores, outcomes, verdicts, raw = np.empty(n), [], [], []
        for i, keys in enumerate(pair_keys):
            if keys is None:
                scores[i], outcome, v = 0.5, "identical", (None, None)
                raw.append((None, None))
            else:
                raw.append((replies[keys[0]], replies[keys[1]]))
                v = (verdict_of[keys[0]], verdict_of[keys[1]])
                scores[i], outcome = combine_orders(*v)
            outcomes.append(outcome)
            verdicts.append(v)
        return PairwiseResult(scores=scores, outcomes=outcomes, verdicts=verdicts, identity=dict(self.identity),
                              replies=raw, requests=self.requests_made - before, cache_hits=hits,
                              rejected_replies=rejected)
