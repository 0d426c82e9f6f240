"""Preference-pair labelling (deterministic, Bradley–Terry, label noise) and strict pairs-file reading."""
import json

import numpy as np
import pandas as pd
import pytest

from harness.core.errors import UserError
from harness.suites.pairs import label_pairs, read_pairs_file
from harness.suites.spec import PairSpec


def fake_samples(n_prompts=400, k=4, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_prompts):
        for s in range(k):
            rows.append({"prompt_index": p, "sample_index": s, "prompt": f"p{p}", "prompt_ids": [4, p % 4],
                         "completion": f"c{p}-{s}", "completion_ids": np.array([s, p % 4, 4]),
                         "gold_reward": float(rng.uniform(-1, 1))})
    return pd.DataFrame(rows)


def test_deterministic_labels_prefer_the_higher_reward_and_use_all_pairs():
    pairs = label_pairs(fake_samples(), PairSpec(), seed=0)
    assert len(pairs) == 400 * 6  # all C(4,2) pairs; continuous rewards never tie
    assert (pairs.chosen_reward > pairs.rejected_reward).all()
    assert set(pairs.split) == {"train", "valid"}
    # the split is by prompt: no prompt has pairs on both sides
    assert pairs.groupby("prompt_index").split.nunique().max() == 1
    assert 0.05 < (pairs.split == "valid").mean() < 0.15


def test_flip_rate_flips_that_fraction_of_labels():
    pairs = label_pairs(fake_samples(), PairSpec(flip_rate=0.2), seed=1)
    wrong = (pairs.chosen_reward < pairs.rejected_reward).mean()
    assert abs(wrong - 0.2) < 4 * np.sqrt(0.2 * 0.8 / len(pairs))
    assert (pairs.flipped == (pairs.chosen_reward < pairs.rejected_reward)).all()


def test_bradley_terry_labels_follow_the_logistic_of_the_reward_gap():
    T = 0.3
    pairs = label_pairs(fake_samples(n_prompts=1500), PairSpec(labels="bradley_terry", bt_temperature=T), seed=2)
    gap = (pairs.chosen_reward - pairs.rejected_reward).abs().to_numpy()
    agree = (pairs.chosen_reward > pairs.rejected_reward).to_numpy()
    predicted = 1 / (1 + np.exp(-gap / T))
    for lo, hi in ((0, 0.2), (0.2, 0.6), (0.6, 2.0)):  # observed agreement matches σ(Δ/T) per bin
        m = (gap >= lo) & (gap < hi)
        se = np.sqrt(predicted[m].mean() * (1 - predicted[m].mean()) / m.sum())
        assert abs(agree[m].mean() - predicted[m].mean()) < 4 * se


def test_ties_and_small_gaps_are_dropped():
    s = fake_samples(n_prompts=50)
    s.loc[s.sample_index == 1, "gold_reward"] = s.loc[s.sample_index == 0, "gold_reward"].to_numpy()
    pairs = label_pairs(s, PairSpec(min_reward_gap=0.05), seed=0)
    assert ((pairs.chosen_reward - pairs.rejected_reward).abs() >= 0.05).all()
    assert len(pairs) < 50 * 6


@pytest.fixture
def tok(tiny_lm):
    return tiny_lm[1]


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


GOOD = {"prompt": "a b", "chosen": "c d", "rejected": "d c"}
BAD_FILES = [
    ("missing column", [{"prompt": "a", "chosen": "b"}], "rejected: missing column"),
    ("non-string", [{**GOOD, "chosen": 3}], "row 1: chosen: got int, expected a string"),
    ("empty text", [GOOD, {**GOOD, "rejected": "  "}], "row 2: rejected: empty text"),
    ("identical", [{**GOOD, "rejected": "c d"}], "row 1: chosen: identical to rejected"),
    ("prompt too long", [{**GOOD, "prompt": " ".join(["a"] * 40)}], "longer than the model context"),
    ("null", [{**GOOD, "prompt": None}], "row 1: prompt: got NoneType"),
]


@pytest.mark.parametrize("name,rows,message", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_malformed_pairs_file_names_file_row_and_field(tmp_path, tok, name, rows, message):
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    with pytest.raises(UserError) as e:
        read_pairs_file(path, tok, max_length=32, seed=0)
    assert str(path) in str(e.value) and message in str(e.value), str(e.value)


def test_empty_and_non_utf8_and_bad_json_files(tmp_path, tok):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    binary = tmp_path / "latin1.jsonl"
    binary.write_bytes('{"prompt": "caf\xe9"}\n'.encode("latin-1"))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "a", "chosen": \n')
    csv = tmp_path / "pairs.csv"
    csv.write_text("prompt,chosen,rejected\n")
    for path, message in ((empty, "no preference pairs"), (binary, "not valid UTF-8"), (broken, "line 1: invalid JSON"),
                          (csv, "must be .jsonl or .parquet"), (tmp_path / "none.jsonl", "not found")):
        with pytest.raises(UserError, match=message):
            read_pairs_file(path, tok, max_length=32, seed=0)


def test_good_pairs_file_is_tokenized_with_eos(tmp_path, tok):
    path = write_jsonl(tmp_path / "pairs.jsonl", [GOOD, {"prompt": "b", "chosen": "a a", "rejected": "d"}])
    df = read_pairs_file(path, tok, max_length=32, seed=0)
    assert df.chosen_ids[0] == [2, 3, 4] and df.prompt_ids[0] == [4, 0, 1]
    assert list(df.columns[:4]) == ["prompt_index", "split", "prompt", "prompt_ids"]
