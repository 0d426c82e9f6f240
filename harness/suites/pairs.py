"""Preference pairs: labelling sampled completions with the judge, or reading a pairs file."""
from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from harness.core.errors import UserError
from harness.suites.spec import PairSpec

VALID_FRACTION = 0.1  # share of prompts whose pairs are held out (reward-model / implicit-reward accuracy)


def label_pairs(samples: pd.DataFrame, spec: PairSpec, seed: int) -> pd.DataFrame:
    """All C(k, 2) pairs of each prompt's k samples, labelled by gold reward.

    ``deterministic``: the higher reward is chosen. ``bradley_terry``: a is chosen with probability
    σ((r_a − r_b)/T). Then each label flips with probability ``flip_rate``. Exact ties, and pairs
    closer than ``min_reward_gap``, carry no preference and are dropped.
    """
    rng = np.random.default_rng(seed)
    rows = []
    n_prompts = int(samples.prompt_index.max()) + 1
    valid = set(rng.permutation(n_prompts)[: max(1, int(round(n_prompts * VALID_FRACTION)))].tolist())
    for p, g in samples.groupby("prompt_index", sort=True):
        g = g.sort_values("sample_index")
        recs = g.to_dict("records")
        for a, b in combinations(range(len(recs)), 2):
            ra, rb = recs[a]["gold_reward"], recs[b]["gold_reward"]
            if ra == rb or abs(ra - rb) < spec.min_reward_gap or list(recs[a]["completion_ids"]) == list(recs[b]["completion_ids"]):
                continue
            if spec.labels == "deterministic":
                a_wins = ra > rb
            else:
                a_wins = rng.random() < 1.0 / (1.0 + np.exp(-(ra - rb) / spec.bt_temperature))
            flipped = bool(rng.random() < spec.flip_rate)
            a_wins = a_wins != flipped
            w, l = (recs[a], recs[b]) if a_wins else (recs[b], recs[a])
            rows.append({"prompt_index": int(p), "split": "valid" if int(p) in valid else "train",
                         "prompt": w["prompt"], "prompt_ids": list(w["prompt_ids"]),
                         "chosen": w["completion"], "rejected": l["completion"],
                         "chosen_ids": list(w["completion_ids"]), "rejected_ids": list(l["completion_ids"]),
                         "chosen_reward": w["gold_reward"], "rejected_reward": l["gold_reward"],
                         "flipped": flipped})
    return pd.DataFrame(rows)


REQUIRED = ("prompt", "chosen", "rejected")


def read_pairs_file(path: Path, tokenizer, max_length: int, seed: int) -> pd.DataFrame:
    """A user's preference dataset (.jsonl or .parquet with prompt, chosen, rejected), strictly checked."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise UserError(where, None, "preference file not found")
    try:
        if path.suffix == ".jsonl":
            recs = []
            for i, line in enumerate(path.read_bytes().decode("utf-8").splitlines()):
                if line.strip():
                    try:
                        recs.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise UserError(where, f"line {i + 1}", f"invalid JSON: {e.msg}") from None
            df = pd.DataFrame(recs)
        elif path.suffix == ".parquet":
            df = pd.read_parquet(path)
        else:
            raise UserError(where, None, "preference files must be .jsonl or .parquet")
    except UnicodeDecodeError:
        raise UserError(where, None, "not valid UTF-8") from None
    if len(df) == 0:
        raise UserError(where, None, "no preference pairs in the file")
    for col in REQUIRED:
        if col not in df.columns:
            raise UserError(where, col, f"missing column; required: {', '.join(REQUIRED)}")
    for col in REQUIRED:
        for i, v in enumerate(df[col].tolist()):
            if not isinstance(v, str):
                raise UserError(where, f"row {i + 1}: {col}", f"got {type(v).__name__}, expected a string")
            if not v.strip():
                raise UserError(where, f"row {i + 1}: {col}", "empty text")
    same = np.flatnonzero((df.chosen == df.rejected).to_numpy())
    if len(same):
        raise UserError(where, f"row {same[0] + 1}: chosen", "identical to rejected; a pair needs two different responses")
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    enc = lambda col: tokenizer(df[col].tolist(), add_special_tokens=False)["input_ids"]
    P, C, R = enc("prompt"), enc("chosen"), enc("rejected")
    prompt_ids = [[bos] + p for p in P]
    longest = max(range(len(P)), key=lambda i: len(prompt_ids[i]))
    if len(prompt_ids[longest]) >= max_length:
        raise UserError(where, f"row {longest + 1}: prompt",
                        f"{len(prompt_ids[longest])} tokens, longer than the model context ({max_length})")
    rng = np.random.default_rng(seed)
    uniq = {p: i for i, p in enumerate(dict.fromkeys(df.prompt.tolist()))}
    valid = set(rng.permutation(len(uniq))[: max(1, int(round(len(uniq) * VALID_FRACTION)))].tolist()) if len(uniq) > 1 else set()
    pidx = [uniq[p] for p in df.prompt]
    return pd.DataFrame({"prompt_index": pidx, "split": ["valid" if i in valid else "train" for i in pidx],
                         "prompt": df.prompt.tolist(), "prompt_ids": prompt_ids,
                         "chosen": df.chosen.tolist(), "rejected": df.rejected.tolist(),
                         "chosen_ids": [c + [eos] for c in C], "rejected_ids": [r + [eos] for r in R],
                         "chosen_reward": np.nan, "rejected_reward": np.nan, "flipped": False})
