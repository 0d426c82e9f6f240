"""Preference pairs: labelling sampled completions with the judge, or reading a pairs file."""
from __future__ import annotations

import json
import stat
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
MAX_PAIRS_FILE_BYTES = 1 << 30  # 1 GiB: read and checked whole in the preflight


def load_pairs_table(path: Path) -> pd.DataFrame:
    """A user's preference dataset (.jsonl or .parquet with prompt, chosen, rejected), strictly checked
    without a tokenizer, so the plan can run it before any compute: the file (exists, a regular file,
    not compressed), its format and encoding, its columns and their types, and every row (an object
    with three non-empty strings, chosen differing from rejected). Returns those three columns."""
    from harness.core.config import decode_utf8

    path = Path(path)
    where = str(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise UserError(where, None, "preference file not found") from None
    except (OSError, ValueError) as e:
        raise UserError(where, None, f"cannot read the preference file ({getattr(e, 'strerror', None) or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise UserError(where, None, "is a folder, not a preference file")
    if not stat.S_ISREG(st.st_mode):
        raise UserError(where, None, "not a regular file (a device, FIFO or socket)")
    if path.suffix not in (".jsonl", ".parquet"):
        raise UserError(where, None, "preference files must be .jsonl or .parquet")
    if st.st_size > MAX_PAIRS_FILE_BYTES:
        raise UserError(where, None, f"{st.st_size:,} bytes; a preference file may have at most {MAX_PAIRS_FILE_BYTES:,}")
    if path.suffix == ".jsonl":
        try:
            data = path.read_bytes()
        except OSError as e:
            raise UserError(where, None, f"cannot read the preference file ({e.strerror or e})") from None
        cols = _jsonl_columns(decode_utf8(data, where), where)
    else:
        cols = _parquet_columns(path, where)
    n = len(cols["prompt"])
    if n == 0:
        raise UserError(where, None, "no preference pairs in the file")
    for col in REQUIRED:
        for i, v in enumerate(cols[col]):
            if not isinstance(v, str):
                raise UserError(where, f"row {i + 1}: {col}", f"got {type(v).__name__}, expected a string")
            if not v.strip():
                raise UserError(where, f"row {i + 1}: {col}", "empty text")
    for i, (c, r) in enumerate(zip(cols["chosen"], cols["rejected"])):
        if c == r:
            raise UserError(where, f"row {i + 1}: chosen", "identical to rejected; a pair needs two different responses")
    return pd.DataFrame({c: cols[c] for c in REQUIRED})


def _no_duplicate_keys(pairs):
    obj = {}
    for k, v in pairs:
        if k in obj:
            raise ValueError(f"duplicate key {k[:40]!r}")
        obj[k] = v
    return obj


def _jsonl_columns(text: str, where: str) -> dict[str, list]:
    """One JSON object per line. Lines are split on "\n" only: str.splitlines would also split at
    U+2028 and other separators that valid JSON strings may hold unescaped."""
    cols: dict[str, list] = {c: [] for c in REQUIRED}
    have = dict.fromkeys(REQUIRED, False)
    rows = []
    for i, line in enumerate(text.split("\n")):
        if not line.strip():
            continue
        try:
            row = json.loads(line, object_pairs_hook=_no_duplicate_keys)
        except json.JSONDecodeError as e:
            raise UserError(where, f"line {i + 1}", f"invalid JSON: {e.msg}") from None
        except (ValueError, RecursionError) as e:  # duplicate keys, 5,000-digit numbers, deep nesting
            raise UserError(where, f"line {i + 1}", f"invalid JSON: {str(e)[:80] or 'nested too deeply'}") from None
        if not isinstance(row, dict):
            raise UserError(where, f"line {i + 1}", f"got a JSON {type(row).__name__}, expected an object with "
                            f"{', '.join(REQUIRED)}")
        rows.append((i, row))
        for c in REQUIRED:
            have[c] = have[c] or c in row
    for c in REQUIRED:
        if rows and not have[c]:
            raise UserError(where, c, f"missing column; required: {', '.join(REQUIRED)}")
    for n, (i, row) in enumerate(rows):
        for c in REQUIRED:
            if c not in row:
                raise UserError(where, f"row {n + 1}: {c}", f"missing (line {i + 1}); every row needs {', '.join(REQUIRED)}")
            cols[c].append(row[c])
    return cols


def _parquet_columns(path: Path, where: str) -> dict[str, list]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        schema = pf.schema_arrow
    except (OSError, ValueError, TypeError, pa.ArrowException) as e:
        raise UserError(where, None, f"not a readable Parquet file ({' '.join(str(e).split())[:80]})") from None
    for c in REQUIRED:
        if c not in schema.names:
            raise UserError(where, c, f"missing column; required: {', '.join(REQUIRED)}")
        t = schema.field(c).type
        if pa.types.is_dictionary(t):
            t = t.value_type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t) or getattr(pa.types, "is_string_view", bool)(t)):
            raise UserError(where, c, f"column of type {t}, expected strings")
    try:
        table = pf.read(columns=list(REQUIRED))
        return {c: table.column(c).to_pylist() for c in REQUIRED}
    except (OSError, ValueError, TypeError, pa.ArrowException) as e:
        raise UserError(where, None, f"not a readable Parquet file ({' '.join(str(e).split())[:80]})") from None


def read_pairs_file(path: Path, tokenizer, max_length: int, seed: int, chat_template: bool = False) -> pd.DataFrame:
    """A user's preference dataset, strictly checked (:func:`load_pairs_table`), tokenized: prompts as
    every other prompt (:func:`harness.suites.prompting.encode_prompts`), responses ended by the token a
    reply ends with (the chat template's end-of-turn token, else EOS)."""
    from harness.suites.prompting import encode_prompts, reply_end_id

    path = Path(path)
    where = str(path)
    df = load_pairs_table(path)
    eos = reply_end_id(tokenizer, chat_template)
    enc = lambda col: tokenizer(df[col].tolist(), add_special_tokens=False)["input_ids"]
    P, C, R = enc("prompt"), enc("chosen"), enc("rejected")
    prompt_ids = encode_prompts(tokenizer, df.prompt.tolist(), chat_template)
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
