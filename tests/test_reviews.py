"""Tests for the synthetic movie-review corpus (harness/suites/reviews.py).

The statistical tests assert the properties the sentiment suite relies on
(VADER reward spread, neutral prompts, sentiment early in the continuation,
a vocabulary a 2k BPE can cover) with margins, not numbers copied from a run.
"""

from __future__ import annotations

import hashlib
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # plain `pytest` without project config
    sys.path.insert(0, str(REPO_ROOT))

from harness.suites.reviews import (  # noqa: E402
    GENERATOR_VERSION,
    MAX_WORDS,
    MIN_WORDS,
    generate_reviews,
    make_prompts,
    review_prefix,
)

N_STATS = 2000


@pytest.fixture(scope="module")
def analyzer():
    vader = pytest.importorskip("vaderSentiment.vaderSentiment")
    return vader.SentimentIntensityAnalyzer()


@pytest.fixture(scope="module")
def reviews() -> list[str]:
    return generate_reviews(N_STATS, seed=2024)


@pytest.fixture(scope="module")
def compounds(reviews, analyzer) -> list[float]:
    return [analyzer.polarity_scores(r)["compound"] for r in reviews]


def _compound(analyzer, text: str) -> float:
    return analyzer.polarity_scores(text)["compound"]


# --------------------------------------------------------------------------
# API and determinism
# --------------------------------------------------------------------------

def test_generator_version_is_positive_int():
    assert isinstance(GENERATOR_VERSION, int) and GENERATOR_VERSION >= 1


def test_same_seed_same_output():
    assert generate_reviews(300, seed=7) == generate_reviews(300, seed=7)


def test_different_seed_different_output():
    a = generate_reviews(100, seed=1)
    b = generate_reviews(100, seed=2)
    assert a != b
    # Not just a shuffle or a shift: most reviews differ position by position.
    assert sum(x != y for x, y in zip(a, b)) > 90


def test_shorter_run_is_a_prefix_of_longer_run():
    assert generate_reviews(40, seed=3) == generate_reviews(200, seed=3)[:40]


def test_zero_and_negative_n():
    assert generate_reviews(0, seed=0) == []
    with pytest.raises(ValueError):
        generate_reviews(-1, seed=0)


def test_does_not_touch_global_rng():
    import random

    random.seed(123)
    expected = random.random()
    random.seed(123)
    generate_reviews(50, seed=5)
    make_prompts(["one two three four five six"] * 5, seed=5)
    assert random.random() == expected


def test_deterministic_across_processes_and_hash_seeds():
    code = (
        "import hashlib, json\n"
        "from harness.suites.reviews import generate_reviews, make_prompts\n"
        "r = generate_reviews(200, seed=11)\n"
        "p = make_prompts(r, seed=4)\n"
        "print(hashlib.sha256(json.dumps([r, p]).encode()).hexdigest())\n"
    )
    digests = set()
    for hash_seed in ("1", "987"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed, PYTHONPATH=str(REPO_ROOT))
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO_ROOT, env=env,
            capture_output=True, text=True, check=True,
        )
        digests.add(out.stdout.strip())
    import json

    r = generate_reviews(200, seed=11)
    here = hashlib.sha256(json.dumps([r, make_prompts(r, seed=4)]).encode()).hexdigest()
    assert digests == {here}


# --------------------------------------------------------------------------
# Shape of the text
# --------------------------------------------------------------------------

def test_word_and_sentence_counts(reviews):
    for r in reviews:
        n_words = len(r.split())
        assert MIN_WORDS <= n_words <= MAX_WORDS, r
        assert 15 <= n_words <= 60, r
        n_sentences = len(re.findall(r"[.!](?: |$)", r))
        assert 1 <= n_sentences <= 4, r


def test_simple_punctuation_and_no_newlines(reviews):
    allowed = re.compile(r"^[A-Za-z][A-Za-z ,.!]*[.!]$")
    for r in reviews:
        assert "\n" not in r and "\r" not in r and "\t" not in r
        assert "  " not in r and r == r.strip()
        assert allowed.match(r), r
        assert r[0].isupper()


def test_reviews_are_varied(reviews):
    assert len(set(reviews)) > 0.98 * len(reviews)
    openings = {" ".join(r.split()[:3]) for r in reviews}
    assert len(openings) > 100


def test_vocabulary_size_fits_a_small_bpe():
    words = {w for r in generate_reviews(5000, seed=9) for w in re.findall(r"[a-z]+", r.lower())}
    assert 300 <= len(words) <= 5000


# --------------------------------------------------------------------------
# Sentiment (VADER compound is the gold reward of the suite)
# --------------------------------------------------------------------------

def test_vader_spread(compounds):
    n = len(compounds)
    assert statistics.pstdev(compounds) > 0.4
    assert sum(c > 0.3 for c in compounds) >= 0.25 * n
    assert sum(c < -0.3 for c in compounds) >= 0.20 * n
    # Mixed or neutral reviews are common too, and the mean is near zero.
    assert sum(abs(c) <= 0.3 for c in compounds) >= 0.10 * n
    assert -0.1 <= statistics.fmean(compounds) <= 0.3
    # Both extremes are reached.
    assert min(compounds) < -0.8 and max(compounds) > 0.8


def test_prompts_are_mostly_neutral(reviews, analyzer):
    prompts = make_prompts(reviews, seed=3)
    scores = [abs(_compound(analyzer, p)) for p in prompts]
    assert statistics.fmean(scores) < 0.15
    assert sum(s > 0.3 for s in scores) <= 0.1 * len(scores)


def test_sentiment_arrives_early_in_the_continuation(reviews, compounds, analyzer):
    # A continuation of ~20 words after a 5-word prompt (about 30 tokens)
    # should already carry most of the review's polarity.
    cont = [_compound(analyzer, " ".join(r.split()[5:25])) for r in reviews]
    assert sum(abs(c) > 0.3 for c in cont) >= 0.5 * len(cont)
    assert statistics.pstdev(cont) > 0.35
    # ...and agree in sign with the full review when the review is clear.
    clear = [(c, f) for c, f in zip(cont, compounds) if abs(f) > 0.5 and abs(c) > 0.3]
    agree = sum((c > 0) == (f > 0) for c, f in clear)
    assert agree >= 0.8 * len(clear)


def test_sentiment_is_spread_through_the_review(reviews, analyzer):
    # Most reviews express polarity in more than one sentence.
    multi = 0
    for r in reviews:
        sentences = re.split(r"(?<=[.!]) ", r)
        multi += sum(abs(_compound(analyzer, s)) > 0.2 for s in sentences) >= 2
    assert multi >= 0.5 * len(reviews)


# --------------------------------------------------------------------------
# Prefixes and prompts
# --------------------------------------------------------------------------

def test_review_prefix():
    text = "I watched this film last night, and it was great."
    assert review_prefix(text, 3) == "I watched this"
    assert review_prefix(text, 0) == ""
    assert review_prefix(text, 100) == text
    assert review_prefix("  a   b  c ", 2) == "a b"
    with pytest.raises(ValueError):
        review_prefix(text, -1)


def test_make_prompts_lengths_and_prefix_property(reviews):
    prompts = make_prompts(reviews, seed=5)
    assert len(prompts) == len(reviews)
    lengths = [len(p.split()) for p in prompts]
    assert min(lengths) >= 2 and max(lengths) <= 5
    assert set(lengths) == {2, 3, 4, 5}
    for p, r in zip(prompts, reviews):
        assert r.startswith(p)
        assert p == review_prefix(r, len(p.split()))
    assert len(set(prompts)) > 100


def test_make_prompts_deterministic_and_seeded(reviews):
    assert make_prompts(reviews, seed=5) == make_prompts(reviews, seed=5)
    assert make_prompts(reviews, seed=5) != make_prompts(reviews, seed=6)


def test_make_prompts_custom_range_and_validation(reviews):
    prompts = make_prompts(reviews[:50], seed=0, min_words=3, max_words=3)
    assert all(len(p.split()) == 3 for p in prompts)
    assert make_prompts([], seed=0) == []
    with pytest.raises(ValueError):
        make_prompts(reviews[:5], seed=0, min_words=4, max_words=3)
    with pytest.raises(ValueError):
        make_prompts(reviews[:5], seed=0, min_words=0, max_words=3)
