"""Pairwise LLM judge behind any OpenAI-compatible chat endpoint (``vllm serve``, hosted APIs).

Protocol (docs/metrics.md §2.3), per (prompt, A, B):

1. Ask twice, once with A shown first and once with B shown first, using a versioned prompt
   (:data:`PAIRWISE_PROMPTS`; the default ``dpo-c-v1`` follows the spirit of the DPO paper's
   comparison prompt that also asks for concision, App. C.2). The reply ends with a line
   ``Preferred: A`` or ``Preferred: B`` naming the position of the better response (A = shown first).
2. Parse each reply (:func:`parse_verdict`). Both parsed and agreeing on the same *response*:
   consistent, the score of A is 1 or 0. Both parsed but each preferring whichever came first (or
   second): inconsistent (position bias), scored as a tie (½). Either unparseable: scored as a tie
   and counted. Identical texts are a tie without a request.
3. ``order_consistency_rate`` = consistent / (consistent + inconsistent), over items with both replies parsed.

Transport errors, HTTP 429 and 5xx are retried with exponential backoff; other HTTP errors stop the
evaluation with the server's message. Every reply is cached on disk (SQLite) under a key that hashes
(model, base_url, prompt version, temperature, max_tokens, the filled-in prompt): a re-run makes no
request. The judge's identity (model, base_url, prompt version, temperature) goes with every win rate.
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

_VERDICT = re.compile(r"preferred[\s*_]*:[\s*_]*(?:response\s*)?[\"'(\[]?(1|2|a|b)\b", re.IGNORECASE)
_LABELS = {"1": 1, "2": 2, "a": 1, "b": 2}


def parse_verdict(reply: str | None) -> int | None:
    """1 or 2 (the position of the preferred response: 1 = shown first), or None when the reply names
    neither or both. Accepts ``Preferred: A``, ``**Preferred:** B``, ``Preferred: Response A`` and 1/2."""
    if not reply:
        return None
    found = {_LABELS[m.group(1).lower()] for m in _VERDICT.finditer(reply)}
    return found.pop() if len(found) == 1 else None


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
    def order_consistency_rate(self) -> float:
        judged = self.consistent + self.inconsistent
        return self.consistent / judged if judged else float("nan")

    @property
    def win_rate(self) -> float:
        return float(self.scores.mean()) if len(self.scores) else float("nan")

    def summary(self) -> dict:
        return {"judge": self.identity, "consistent": self.consistent, "inconsistent": self.inconsistent,
                "unparseable": self.unparseable, "identical": self.identical,
                "order_consistency_rate": self.order_consistency_rate,
                "judge_requests": self.requests, "judge_cache_hits": self.cache_hits}


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
    """Judge replies on disk: one SQLite file, key -> reply text. Safe across threads and processes."""

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
                 cache_dir: Path | str | None = None, concurrency: int = 4, extra_body: dict | None = None):
        if prompt_version not in PAIRWISE_PROMPTS:
            from harness.core.errors import UserError

            raise UserError("judge", "prompt_version", f"unknown prompt version {prompt_version!r}; "
                            f"known: {', '.join(PAIRWISE_PROMPTS)}")
        self.model, self.base_url = model, base_url.rstrip("/")
        self.prompt_version, self.template = prompt_version, PAIRWISE_PROMPTS[prompt_version]
        self.temperature, self.max_tokens = float(temperature), int(max_tokens)
        self.api_key = os.environ.get(api_key_env) if api_key_env else None
        self.timeout_s, self.max_retries, self.backoff_s = timeout_s, max_retries, backoff_s
        self.cache = VerdictCache(Path(cache_dir) if cache_dir else default_cache_dir())
        self.concurrency = max(1, int(concurrency))
        self.extra_body = dict(extra_body or {})
        self.requests_made = 0          # HTTP requests, including retried ones (tests count them)
        self._count_lock = threading.Lock()
        self._session = None
        self.identity = {"kind": "llm_pairwise", "model": model, "base_url": self.base_url,
                         "prompt_version": prompt_version, "temperature": self.temperature,
                         "max_tokens": self.max_tokens, "both_orders": True}
        if self.extra_body:
            self.identity["extra_body"] = self.extra_body

    # ------------------------------------------------------------------ requests
    def _key(self, text: str) -> str:
        ident = [self.model, self.base_url, self.prompt_version, self.temperature, self.max_tokens,
                 self.extra_body, text]
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()

    def _post(self, text: str) -> str:
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
                return r.json()["choices"][0]["message"]["content"] or ""
            except (ValueError, KeyError, IndexError, TypeError) as e:
                raise JudgeError(f"{url}: not an OpenAI chat completion ({e}): {r.text[:300]}") from None
        raise JudgeError(f"{url}: gave up after {self.max_retries + 1} attempts; last error: {last}")

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
            ab, ba = self.render(p, a, b), self.render(p, b, a)
            k1, k2 = self._key(ab), self._key(ba)
            texts[k1], texts[k2] = ab, ba
            pair_keys.append((k1, k2))
        replies = self.cache.get_many(list(texts))
        hits = len(replies)
        missing = [k for k in texts if k not in replies]
        before = self.requests_made

        stop = threading.Event()  # after a hard error, queued requests are not sent

        def fetch(k):
            if stop.is_set():
                return k, None
            try:
                reply = self._post(texts[k])
            except BaseException:
                stop.set()
                raise
            self.cache.put(k, reply)
            return k, reply

        if missing:
            pool = ThreadPoolExecutor(max_workers=min(self.concurrency, len(missing)))
            try:
                for k, reply in pool.map(fetch, missing):
                    replies[k] = reply
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
                v = (parse_verdict(replies[keys[0]]), parse_verdict(replies[keys[1]]))
                scores[i], outcome = combine_orders(*v)
            outcomes.append(outcome)
            verdicts.append(v)
        return PairwiseResult(scores=scores, outcomes=outcomes, verdicts=verdicts, identity=dict(self.identity), replies=raw,
                              requests=self.requests_made - before, cache_hits=hits)
