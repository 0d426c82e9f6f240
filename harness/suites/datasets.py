"""Preference datasets: a hub id or a local file, read into the suite's preference pairs.

A suite names its data in ``pairs.dataset`` (:class:`PreferenceDataSpec`): a Hugging Face hub id, read
with ``datasets.load_dataset`` (name, data_dir, revision, split), or a local file or folder (.json,
.jsonl, .parquet, .csv, .arrow, each optionally .gz; a folder holds one file or shard set per split,
``<split>.jsonl``, ``<split>-00000-of-00001.parquet``..., or is a ``save_to_disk`` folder). Local files
are read here, row by row, so that a bad row is reported by file, row and field.

Four row formats, declared or detected from the first row:

- ``standard``: ``prompt``, ``chosen``, ``rejected`` strings;
- ``conversational``: ``chosen``/``rejected`` message lists (``[{role, content}]``, UltraFeedback-binarized
  style: the conversation before the last assistant turn is the prompt), or a message-list ``prompt``
  with assistant-turn lists; rendered with the policy tokenizer's chat template;
- ``implicit``: full transcripts in ``chosen``/``rejected`` (Anthropic HH); the prompt is their shared
  prefix up to and including the last ``assistant_marker`` (``"\\n\\nAssistant:"``);
- ``unpaired``: ``prompt``, ``completion``, ``label`` (KTO-style); a prompt's desirable and undesirable
  completions are paired in order, the rest counted as unmatched.

``pairs.dataset.columns`` maps these names onto a dataset's own columns. Rows with an empty text,
chosen identical to rejected, or repeating an earlier row are dropped and counted; then the length
policy drops or truncates pairs over the token limits, also counted. The counts are written beside the
pairs (``load_report.json``) and shown by ``prefbench check``.
"""
from __future__ import annotations

import csv
import gzip
import io
import itertools
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.core.config import hp
from harness.core.errors import UserError

DATASETS_ENV = "PREFBENCH_DATASETS"  # a folder of local copies: <root>/<owner>/<name> stands for hub id owner/name
HUB_TIMEOUT_S = 5.0  # the hub probe: an unreachable hub is reported in seconds, never a hang
FILE_TYPES = (".jsonl", ".json", ".parquet", ".csv", ".arrow")
MAX_DATA_BYTES = 4 << 30  # one split's files, read whole
NAMES = ("prompt", "chosen", "rejected", "completion", "label")
FORMATS = ("standard", "conversational", "implicit", "unpaired")


@dataclass
class PreferenceDataSpec:
    path: str | None = hp(None, "hub dataset id (e.g. Anthropic/hh-rlhf) or a local file or folder (relative to the "
                                "suite file); a hub id is looked up under $PREFBENCH_DATASETS/<id> first")
    subset: str | None = hp(None, "hub configuration name (load_dataset's name)")
    data_dir: str | None = hp(None, "sub-folder of the dataset, e.g. helpful-base of Anthropic/hh-rlhf")
    revision: str | None = hp(None, "hub revision (commit, tag or branch); part of the artifact key")
    split: str = hp("train", "split the preference pairs come from")
    eval_split: str | None = hp(None, "split the evaluation prompts come from (prompts.source: dataset)")
    format: Literal["auto", "standard", "conversational", "implicit", "unpaired"] = hp(
        "auto", "row format; auto detects it from the first row")
    columns: dict[str, str] = hp(default_factory=dict, help="dataset column for each of prompt, chosen, rejected, "
                                                            "completion, label, e.g. {prompt: question}")
    assistant_marker: str = hp("\n\nAssistant:", "implicit format: the prompt ends with the last occurrence of this")
    max_prompt_tokens: int = hp(256, "longest prompt, in policy tokens", ge=1, le=1_000_000)
    max_response_tokens: int = hp(256, "longest chosen or rejected response, in policy tokens (EOS included)", ge=1,
                                  le=1_000_000)
    length_policy: Literal["drop", "truncate"] = hp(
        "drop", "a pair over a limit (or over policy.max_length) is dropped, or truncated: the prompt from the left "
                "(its end kept), the responses from the right")

    def validate(self):
        for k, v in self.columns.items():
            if k not in NAMES:
                return f"columns.{k}", f"unknown name; allowed: {', '.join(NAMES)}"
            if not v:
                return f"columns.{k}", "empty column name"
        if not self.assistant_marker:
            return "assistant_marker", "empty"
        return None

    def col(self, name: str) -> str:
        return self.columns.get(name, name)


# ---------------------------------------------------------------------- where the data is
@dataclass
class Source:
    kind: Literal["local", "hub"]
    path: Path | None = None
    hub_id: str | None = None


def resolve_source(spec_path: str, base_dir: Path | None, data_dir: str | None = None) -> Source:
    """A local file or folder (relative to ``base_dir``, the suite file's folder), a local copy under
    $PREFBENCH_DATASETS, or a hub id."""
    p = Path(os.path.expanduser(spec_path))
    local = p if p.is_absolute() or base_dir is None else Path(base_dir) / p
    looks_local = (spec_path.startswith((".", "/", "~")) or any(spec_path.endswith(e) or spec_path.endswith(e + ".gz")
                                                                 for e in FILE_TYPES) or spec_path.count("/") > 1)
    if local.exists() or looks_local:
        return Source("local", local / data_dir if data_dir and local.is_dir() else local)
    root = os.environ.get(DATASETS_ENV)
    if root and (Path(root) / spec_path).exists():
        copy = Path(root) / spec_path
        return Source("local", copy / data_dir if data_dir else copy)
    return Source("hub", hub_id=spec_path)


_HUB: dict[str, str | None] = {}


def hub_unreachable() -> str | None:
    """Why the Hugging Face hub cannot be reached (None when it can), probed once per process with a short
    timeout. With HF_HUB_OFFLINE=1 the hub is not contacted and only cached copies load."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    if endpoint not in _HUB:
        import urllib.error
        import urllib.request

        try:
            urllib.request.urlopen(urllib.request.Request(endpoint + "/api/status", method="HEAD"),
                                   timeout=HUB_TIMEOUT_S).close()
            _HUB[endpoint] = None
        except urllib.error.HTTPError:
            _HUB[endpoint] = None  # the server answered
        except (OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            _HUB[endpoint] = f"{endpoint} unreachable: {' '.join(str(reason).split())[:80]}"
    return _HUB[endpoint]


def local_copy_hint(hub_id: str, kind: str, field_name: str) -> str:
    repo = " --repo-type dataset" if kind == "dataset" else ""
    return (f"download it where the hub is reachable (`hf download {hub_id}{repo} --local-dir DIR`) and set "
            f"{field_name} to DIR" + (f", or put it at $PREFBENCH_DATASETS/{hub_id}" if kind == "dataset" else "")
            + "; HF_HUB_OFFLINE=1 uses a cached copy")


def cached_on_disk(hub_id: str, kind: str) -> bool:
    """Whether the Hugging Face cache holds a snapshot of ``hub_id`` (models and datasets)."""
    try:
        from huggingface_hub.constants import HF_HUB_CACHE
    except ImportError:
        return False
    folder = Path(HF_HUB_CACHE) / f"{'datasets' if kind == 'dataset' else 'models'}--{hub_id.replace('/', '--')}"
    return (folder / "snapshots").is_dir() and any((folder / "snapshots").iterdir())


def model_problem(name_or_path: str | None, field_name: str) -> str | None:
    """A model or tokenizer named by a suite: a local folder with a config (or tokenizer) file, or a hub id the
    hub (or the local cache) can serve. Returns the problem, or None."""
    if not name_or_path:
        return None
    p = Path(os.path.expanduser(name_or_path))
    if p.exists():
        if not p.is_dir():
            return f"{name_or_path} is not a folder"
        if not any((p / f).is_file() for f in ("config.json", "tokenizer.json", "tokenizer_config.json")):
            return f"{name_or_path} holds no config.json or tokenizer files"
        return None
    if name_or_path.startswith((".", "/", "~")):
        return f"{name_or_path}: no such folder"
    why = hub_unreachable()
    if why and not cached_on_disk(name_or_path, "model"):
        return f"{name_or_path}: hub id not reachable ({why}); " + local_copy_hint(name_or_path, "model", field_name)
    return None


# ---------------------------------------------------------------------- reading one split
Row = tuple[int, dict]  # (row number from 1, the row's fields)


@dataclass
class Split:
    rows: list[Row]
    where: str  # the file (or hub id and split) named in error messages
    files: list[Path] = field(default_factory=list)


def _file_type(path: Path) -> str | None:
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    for ext in FILE_TYPES:
        if name.endswith(ext):
            return ext
    return None


def _split_of(name: str) -> str:
    """``train.jsonl.gz`` -> train, ``train_prefs-00000-of-00001.parquet`` -> train_prefs."""
    return name.split(".")[0].split("-")[0]


def split_files(folder: Path, split: str) -> list[Path]:
    files = sorted(f for f in folder.rglob("*") if f.is_file() and not f.name.startswith(".") and _file_type(f))
    return [f for f in files if _split_of(f.name) == split]


def local_splits(folder: Path) -> list[str]:
    return sorted({_split_of(f.name) for f in folder.rglob("*") if f.is_file() and _file_type(f)})


def read_split(spec: PreferenceDataSpec, base_dir: Path | None, split: str, where_field: str) -> Split:
    """The rows of one split (local or hub); every problem is a one-line UserError naming the file."""
    if not spec.path:
        raise UserError(where_field, None, "no dataset path (hub id or local file)")
    src = resolve_source(spec.path, base_dir, spec.data_dir)
    if src.kind == "hub":
        return _read_hub(spec, src.hub_id, split, where_field)
    path = src.path
    try:
        st = path.stat()
    except FileNotFoundError:
        raise UserError(f"{where_field} ({path})", None, "dataset file or folder not found") from None
    except OSError as e:
        raise UserError(str(path), None, f"cannot read ({e.strerror or e})") from None
    if stat.S_ISDIR(st.st_mode):
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            return _read_saved(path, split)
        files = split_files(path, split)
        if not files:
            found = local_splits(path)
            raise UserError(str(path), f"split {split}", "no file for this split; the folder has "
                            + (f"splits {', '.join(found)}" if found else "no .jsonl/.json/.parquet/.csv/.arrow files"))
    elif stat.S_ISREG(st.st_mode):
        files = [path]  # a single file is every split
    else:
        raise UserError(str(path), None, "not a regular file (a device, FIFO or socket)")
    rows: list[Row] = []
    total = sum(f.stat().st_size for f in files)
    if total > MAX_DATA_BYTES:
        raise UserError(str(path), f"split {split}", f"{total:,} bytes; at most {MAX_DATA_BYTES:,}")
    for f in files:
        for n, row in _read_file(f):
            rows.append((len(rows) + 1, row))
    where = str(files[0]) if len(files) == 1 else f"{path} (split {split})"
    if not rows:
        raise UserError(where, f"split {split}", "empty split: no rows")
    return Split(rows, where, files)


def _read_file(path: Path) -> list[Row]:
    where = str(path)
    if path.suffix not in FILE_TYPES and not path.name.endswith(".gz"):
        raise UserError(where, None, f"unknown file type; expected one of {', '.join(FILE_TYPES)} (optionally .gz)")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(where, None, f"cannot read ({e.strerror or e})") from None
    if path.name.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise UserError(where, None, f"not a readable gzip file ({e})") from None
    ext = _file_type(path)
    if ext in (".jsonl", ".json"):
        return _json_rows(_utf8(data, where), where)
    if ext == ".csv":
        text = _utf8(data, where)
        try:
            return [(i + 1, dict(r)) for i, r in enumerate(csv.DictReader(io.StringIO(text, newline="")))]
        except csv.Error as e:
            raise UserError(where, None, f"not a readable CSV file ({e})") from None
    import pyarrow as pa

    try:
        if ext == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(io.BytesIO(data))
        else:
            try:
                table = pa.ipc.open_stream(io.BytesIO(data)).read_all()
            except pa.ArrowInvalid:
                table = pa.ipc.open_file(io.BytesIO(data)).read_all()
    except (OSError, ValueError, TypeError, pa.ArrowException) as e:
        raise UserError(where, None, f"not a readable {ext[1:]} file ({' '.join(str(e).split())[:80]})") from None
    return [(i + 1, r) for i, r in enumerate(table.to_pylist())]


def _utf8(data: bytes, where: str) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise UserError(where, f"row {line}", f"not valid UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start}); "
                        "re-encode the file as UTF-8") from None
    return text[1:] if text.startswith("\ufeff") else text


def _json_rows(text: str, where: str) -> list[Row]:
    """A JSON array of objects, or one object per line (split on "\\n" only: valid JSON strings may hold U+2028)."""
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(stripped)
        except (ValueError, RecursionError) as e:
            raise UserError(where, None, f"invalid JSON: {str(e)[:80] or 'nested too deeply'}") from None
        items = list(enumerate(data if isinstance(data, list) else [data]))
    else:
        items = []
        for i, line in enumerate(text.split("\n")):
            if not line.strip():
                continue
            try:
                items.append((i, json.loads(line)))
            except (ValueError, RecursionError) as e:
                raise UserError(where, f"row {len(items) + 1}", f"invalid JSON on line {i + 1}: "
                                f"{getattr(e, 'msg', None) or str(e)[:80] or 'nested too deeply'}") from None
    rows = []
    for n, (_, obj) in enumerate(items):
        if not isinstance(obj, dict):
            raise UserError(where, f"row {n + 1}", f"got a JSON {type(obj).__name__}, expected an object")
        rows.append((n + 1, obj))
    return rows


def _read_saved(folder: Path, split: str) -> Split:
    import datasets

    try:
        ds = datasets.load_from_disk(str(folder))
    except (OSError, ValueError, FileNotFoundError) as e:
        raise UserError(str(folder), None, f"not a readable save_to_disk folder ({str(e)[:80]})") from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise UserError(str(folder), f"split {split}", f"no such split; the dataset has {', '.join(ds)}")
        ds = ds[split]
    rows = [(i + 1, r) for i, r in enumerate(ds)]
    if not rows:
        raise UserError(str(folder), f"split {split}", "empty split: no rows")
    return Split(rows, f"{folder} (split {split})")


def _read_hub(spec: PreferenceDataSpec, hub_id: str, split: str, where_field: str) -> Split:
    """``datasets.load_dataset`` on a hub id, after a short reachability probe (a cached copy is used when the
    hub is unreachable and HF_HUB_OFFLINE=1)."""
    why = hub_unreachable()
    if why and not (os.environ.get("HF_HUB_OFFLINE") and cached_on_disk(hub_id, "dataset")):
        raise UserError(where_field, hub_id, f"hub dataset not reachable ({why}); "
                        + local_copy_hint(hub_id, "dataset", where_field.split(": ")[-1]))
    import datasets

    try:
        ds = datasets.load_dataset(hub_id, name=spec.subset, data_dir=spec.data_dir, split=split, revision=spec.revision)
    except Exception as e:  # noqa: BLE001 -- missing split, config or revision, network: one line with the id
        raise UserError(where_field, hub_id, f"cannot load split {split} ({type(e).__name__}: "
                        f"{' '.join(str(e).split())[:160]})") from None
    rows = [(i + 1, r) for i, r in enumerate(ds)]
    if not rows:
        raise UserError(where_field, hub_id, f"empty split {split}: no rows")
    return Split(rows, f"{hub_id} (split {split})")


# ---------------------------------------------------------------------- rows -> (prompt, chosen, rejected)
@dataclass
class Examples:
    """Normalised rows of one split: texts (conversations already rendered) and what was dropped."""
    format: str
    prompt: list[str]
    chosen: list[str]
    rejected: list[str]
    row: list[int]  # the source row of each pair
    counts: dict[str, int]
    where: str


def _kind(value) -> str:
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "message list"
    return "null" if value is None else type(value).__name__


def detect_format(spec: PreferenceDataSpec, split: Split) -> str:
    n, first = split.rows[0]
    keys = set(first)
    c = lambda name: spec.col(name)  # noqa: E731
    if spec.format != "auto":
        return spec.format
    if c("completion") in keys and c("label") in keys and c("chosen") not in keys:
        return "unpaired"
    for name in ("chosen", "rejected"):
        if c(name) not in keys:
            raise UserError(split.where, c(name), "missing column; a preference dataset has chosen and rejected (or "
                            f"completion and label); its columns: {', '.join(sorted(map(str, keys)))[:200]}; map "
                            "others with pairs.dataset.columns")
    if isinstance(first[c("chosen")], list):
        return "conversational"
    return "standard" if c("prompt") in keys else "implicit"


def _need(row: dict, n: int, name: str, split: Split, want: str = "string"):
    if name not in row:
        raise UserError(split.where, f"row {n}: {name}", "missing (a column every row needs; map another column with "
                        "pairs.dataset.columns)")
    v = row[name]
    got = _kind(v)
    if got != want:
        extra = " (mixed formats in one file?)" if {got, want} == {"string", "message list"} else ""
        raise UserError(split.where, f"row {n}: {name}", f"got a {got}, expected a {want}{extra}")
    return v


def _messages(v: list, n: int, name: str, split: Split) -> list[dict]:
    for i, m in enumerate(v):
        if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
            raise UserError(split.where, f"row {n}: {name}[{i}]", "expected a message {role, content} with string values")
    return [{"role": m["role"], "content": m["content"]} for m in v]


def _split_last_assistant(msgs: list[dict], n: int, name: str, split: Split) -> tuple[list[dict], list[dict]]:
    idx = [i for i, m in enumerate(msgs) if m["role"] == "assistant"]
    if not idx:
        raise UserError(split.where, f"row {n}: {name}", "message list without an assistant turn")
    return msgs[:idx[-1]], msgs[idx[-1]:]


class ChatRenderer:
    """Conversations as text through the policy tokenizer's chat template (tokenizer.apply_chat_template)."""

    def __init__(self, tokenizer, where: str):
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise UserError(where, "tokenizer", "conversational data needs a tokenizer with a chat template (a "
                            "pretrained chat tokenizer); " + ("none is loaded" if tokenizer is None else "this one has none"))
        self.tok = tokenizer

    def prompt(self, msgs: list[dict]) -> str:
        text = self.tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        bos = self.tok.bos_token
        return text[len(bos):] if bos and text.startswith(bos) else text  # the harness adds BOS itself

    def response(self, prompt_msgs: list[dict], reply: list[dict], prompt_text: str) -> str:
        full = self.tok.apply_chat_template(prompt_msgs + reply, tokenize=False)
        bos = self.tok.bos_token
        full = full[len(bos):] if bos and full.startswith(bos) else full
        if full.startswith(prompt_text):
            return full[len(prompt_text):]
        return "".join(m["content"] for m in reply)  # a template that rewrites earlier turns: the reply's text


def normalize(spec: PreferenceDataSpec, split: Split, tokenizer=None, fmt: str | None = None) -> Examples:
    """Rows -> prompt, chosen and rejected texts. Schema problems (a missing column, a wrong type, a message
    list without an assistant turn, mixed formats) raise; empty texts, identical responses and repeated
    rows are dropped and counted."""
    fmt = fmt or detect_format(spec, split)
    c = spec.col
    P, C, R, rows = [], [], [], []
    counts = {"rows": len(split.rows), "empty": 0, "identical": 0, "duplicates": 0, "unmatched": 0}
    if fmt == "unpaired":
        by_prompt: dict[str, tuple[list, list]] = {}
        for n, row in split.rows:
            p = _need(row, n, c("prompt"), split)
            y = _need(row, n, c("completion"), split)
            if c("label") not in row:
                raise UserError(split.where, f"row {n}: {c('label')}", "missing (unpaired rows need a label)")
            lab = row[c("label")]
            if lab in ("true", "false", "True", "False"):
                lab = lab.lower() == "true"
            if not isinstance(lab, (bool, int)) or lab not in (0, 1, True, False):
                raise UserError(split.where, f"row {n}: {c('label')}", f"got {lab!r}, expected true or false")
            by_prompt.setdefault(p, ([], []))[0 if lab else 1].append((n, y))
        for p, (good, bad) in by_prompt.items():
            counts["unmatched"] += abs(len(good) - len(bad))
            for (n, y_w), (_, y_l) in zip(good, bad):
                P.append(p), C.append(y_w), R.append(y_l), rows.append(n)
    elif fmt == "conversational":
        convs = []  # every row's schema is checked before anything is rendered
        for n, row in split.rows:
            ch = _messages(_need(row, n, c("chosen"), split, "message list"), n, c("chosen"), split)
            rj = _messages(_need(row, n, c("rejected"), split, "message list"), n, c("rejected"), split)
            prompt_v = row.get(c("prompt"))
            if isinstance(prompt_v, list):
                pm = _messages(prompt_v, n, c("prompt"), split)
                for name, msgs in ((c("chosen"), ch), (c("rejected"), rj)):
                    if not any(m["role"] == "assistant" for m in msgs):
                        raise UserError(split.where, f"row {n}: {name}", "message list without an assistant turn")
                cm, rm = ch, rj
            else:
                pm, cm = _split_last_assistant(ch, n, c("chosen"), split)
                pr, rm = _split_last_assistant(rj, n, c("rejected"), split)
                if pr != pm:
                    raise UserError(split.where, f"row {n}: {c('rejected')}", "its conversation before the last "
                                    "assistant turn differs from chosen's (a pair shares one prompt)")
                if not pm and isinstance(prompt_v, str):
                    pm = [{"role": "user", "content": prompt_v}]
            if not pm:
                raise UserError(split.where, f"row {n}: {c('chosen')}", "no turn before the assistant's: no prompt")
            convs.append((n, pm, cm, rm))
        render = ChatRenderer(tokenizer, split.where)
        for n, pm, cm, rm in convs:
            text = render.prompt(pm)
            P.append(text), C.append(render.response(pm, cm, text)), R.append(render.response(pm, rm, text))
            rows.append(n)
    elif fmt == "implicit":
        mark = spec.assistant_marker
        for n, row in split.rows:
            ch, rj = _need(row, n, c("chosen"), split), _need(row, n, c("rejected"), split)
            k = ch.rfind(mark)
            if k < 0:
                raise UserError(split.where, f"row {n}: {c('chosen')}", f"no {mark!r} turn (implicit-prompt format: "
                                "full transcripts)")
            prompt = ch[:k + len(mark)]
            if not rj.startswith(prompt):  # the longest shared prefix that ends with the marker
                i = 0
                while i < min(len(ch), len(rj)) and ch[i] == rj[i]:
                    i += 1
                k = ch.rfind(mark, 0, i)
                if k < 0:
                    raise UserError(split.where, f"row {n}: {c('rejected')}", f"shares no prompt ending in {mark!r} "
                                    "with chosen")
                prompt = ch[:k + len(mark)]
            P.append(prompt), C.append(ch[len(prompt):]), R.append(rj[len(prompt):]), rows.append(n)
    elif fmt == "standard":
        for n, row in split.rows:
            P.append(_need(row, n, c("prompt"), split))
            C.append(_need(row, n, c("chosen"), split)), R.append(_need(row, n, c("rejected"), split))
            rows.append(n)
    else:  # unreachable: the spec only admits known formats
        raise ValueError(fmt)
    keep, seen = [], set()
    for i in range(len(P)):
        if not (P[i].strip() and C[i].strip() and R[i].strip()):
            counts["empty"] += 1
        elif C[i] == R[i]:
            counts["identical"] += 1
        elif (P[i], C[i], R[i]) in seen:
            counts["duplicates"] += 1
        else:
            seen.add((P[i], C[i], R[i]))
            keep.append(i)
    ex = Examples(fmt, [P[i] for i in keep], [C[i] for i in keep], [R[i] for i in keep], [rows[i] for i in keep],
                  counts, split.where)
    if not keep:
        raise UserError(split.where, None, f"no usable pairs: {counts['rows']} rows, {counts['empty']} with an empty "
                        f"text, {counts['identical']} with chosen identical to rejected, {counts['duplicates']} repeated")
    return ex


# ---------------------------------------------------------------------- the length policy
def apply_length_policy(ex: Examples, tokenizer, spec: PreferenceDataSpec, max_length: int) -> tuple[dict, dict]:
    """Token ids under the length policy. Returns (columns, counts): ``prompt_ids`` (BOS first), ``chosen_ids``
    and ``rejected_ids`` (EOS last unless truncated), the kept texts and source rows; counts of pairs
    ``dropped_length`` and ``truncated``."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    if bos is None:
        bos = eos
    enc = lambda texts: tokenizer(texts, add_special_tokens=False)["input_ids"]  # noqa: E731
    Pi, Ci, Ri = enc(ex.prompt), enc(ex.chosen), enc(ex.rejected)
    out = {k: [] for k in ("prompt", "chosen", "rejected", "prompt_ids", "chosen_ids", "rejected_ids", "row")}
    counts = {"dropped_length": 0, "truncated": 0}
    mp, mr = spec.max_prompt_tokens, spec.max_response_tokens
    for i in range(len(Pi)):
        p, ch, rj = Pi[i], Ci[i] + [eos], Ri[i] + [eos]
        over = len(p) > mp or max(len(ch), len(rj)) > mr or 1 + len(p) + max(len(ch), len(rj)) > max_length
        texts = (ex.prompt[i], ex.chosen[i], ex.rejected[i])
        if over:
            if spec.length_policy == "drop":
                counts["dropped_length"] += 1
                continue
            p = p[-min(mp, max_length - 2):]
            room = min(mr, max_length - 1 - len(p))
            ch, rj = ch[:room], rj[:room]
            if room < 1 or ch == rj:
                counts["dropped_length"] += 1
                continue
            counts["truncated"] += 1
            texts = (tokenizer.decode(p), tokenizer.decode([t for t in ch if t != eos]),
                     tokenizer.decode([t for t in rj if t != eos]))
        out["prompt"].append(texts[0]), out["chosen"].append(texts[1]), out["rejected"].append(texts[2])
        out["prompt_ids"].append([bos] + p), out["chosen_ids"].append(ch), out["rejected_ids"].append(rj)
        out["row"].append(ex.row[i])
    return out, counts


# ---------------------------------------------------------------------- what a suite reads
def suite_tokenizer(suite):
    """The policy tokenizer before π_SFT exists (chat templates, token counts): the pretrained (or the policy's
    own) tokenizer, found by harness.suites.sources (local folder, cache, or a hub that answers in seconds);
    None for a tokenizer trained on the corpus."""
    if suite.tokenizer.kind == "train_bpe":
        return None
    from harness.suites.sources import tokenizer_source

    src = dict(tokenizer_source(suite))  # found (or refused in seconds) before transformers is imported
    path = src.pop("path")
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=suite.policy.trust_remote_code, **src)
    except (OSError, ValueError) as e:
        raise UserError(suite.path, "tokenizer", f"cannot load {path} ({' '.join(str(e).split())[:120]})") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


_CACHE: dict[tuple, tuple[Any, Examples]] = {}  # the tokenizer is kept with its examples: its id stays unique


def examples(suite, split: str, tokenizer=None, field_name: str = "pairs.dataset") -> Examples:
    """The normalised examples of one split of ``pairs.dataset``, read once per process."""
    spec: PreferenceDataSpec = suite.pairs.dataset
    base = Path(suite.path).parent if suite.path else None
    key = (repr(spec), str(base), split, id(tokenizer) if tokenizer is not None else None)
    if key not in _CACHE:
        raw = read_split(spec, base, split, f"{suite.path}: {field_name}.path")
        _CACHE[key] = (tokenizer, normalize(spec, raw, tokenizer))
    return _CACHE[key][1]


def source_digest(suite, which: str = "pairs") -> dict:
    """What an artifact's key records of its data: local files' contents (sha256 of every file under the path)
    or the hub id and revision. ``which``: ``pairs`` (pairs.dataset) or ``data`` (data.name of hf_dataset)."""
    import hashlib

    if which == "data" and suite.data.kind == "hf_dataset":
        path, data_dir, revision = suite.data.name or suite.data.path or "", None, None
    else:
        spec: PreferenceDataSpec = suite.pairs.dataset
        path, data_dir, revision = spec.path or "", spec.data_dir, spec.revision
    base = Path(suite.path).parent if suite.path else None
    src = resolve_source(path, base, data_dir)
    if src.kind == "hub":
        return {"hub": src.hub_id, "revision": revision}
    h = hashlib.sha256()
    root = src.path
    files = sorted(f for f in root.rglob("*") if f.is_file()) if root.is_dir() else ([root] if root.is_file() else [])
    for f in files:
        h.update(str(f.relative_to(root) if root.is_dir() else f.name).encode())
        h.update(f.read_bytes())
    return {"local": h.hexdigest()[:16]}


def select_prompts(prompts: list[str], n: int | None, seed: int) -> list[str]:
    """The first ``n`` distinct prompts in one seeded order (a smaller preset's are a prefix of a larger one's)."""
    import numpy as np

    from harness.core import seeds

    distinct = list(dict.fromkeys(prompts))
    order = np.random.default_rng(seeds.derive(seed, "dataset-prompts")).permutation(len(distinct))
    chosen = [distinct[i] for i in order]
    return chosen if n is None else chosen[:n]


def build_pairs(suite, tokenizer, prompts: list[str], judge=None, render_tokenizer=None) -> tuple[Any, dict]:
    """The pairs table (the columns ``harness.suites.pairs.read_pairs_file`` gives) of ``pairs.dataset``'s split,
    restricted to ``prompts`` (:func:`dataset_prompts`), and the load report. ``tokenizer`` is π_SFT's (token
    ids, length policy); ``render_tokenizer`` renders conversations (the same tokenizer, loaded earlier)."""
    import numpy as np
    import pandas as pd

    from harness.core import seeds
    from harness.suites.pairs import VALID_FRACTION

    spec: PreferenceDataSpec = suite.pairs.dataset
    ex = examples(suite, spec.split, render_tokenizer)
    use = set(prompts)
    keep = [i for i, p in enumerate(ex.prompt) if p in use]
    sub = Examples(ex.format, [ex.prompt[i] for i in keep], [ex.chosen[i] for i in keep],
                   [ex.rejected[i] for i in keep], [ex.row[i] for i in keep], ex.counts, ex.where)
    cols, lcounts = apply_length_policy(sub, tokenizer, spec, suite.policy.max_length)
    report = {"source": ex.where, "split": spec.split, "format": ex.format, **ex.counts,
              "pairs_in_split": len(ex.prompt), "pairs_selected": len(keep), **lcounts,
              "length_policy": spec.length_policy, "max_prompt_tokens": spec.max_prompt_tokens,
              "max_response_tokens": spec.max_response_tokens, "pairs": len(cols["prompt"])}
    if not cols["prompt"]:
        raise UserError(f"{suite.path}: pairs.dataset", "length_policy", f"every one of {len(keep)} pairs is over the "
                        f"token limits (prompt {spec.max_prompt_tokens}, response {spec.max_response_tokens}, context "
                        f"{suite.policy.max_length}); raise them or use length_policy: truncate")
    if judge is not None:
        report.update(gold_check(judge, cols["prompt"], cols["chosen"], cols["rejected"]))
    rng = np.random.default_rng(seeds.derive(suite.seed, "dataset-valid"))
    uniq = {p: i for i, p in enumerate(dict.fromkeys(cols["prompt"]))}
    n_valid = max(1, int(round(len(uniq) * VALID_FRACTION))) if len(uniq) > 1 else 0
    valid = set(rng.permutation(len(uniq))[:n_valid].tolist())
    pidx = [uniq[p] for p in cols["prompt"]]
    df = pd.DataFrame({"prompt_index": pidx, "split": ["valid" if i in valid else "train" for i in pidx],
                       "prompt": cols["prompt"], "prompt_ids": cols["prompt_ids"],
                       "chosen": cols["chosen"], "rejected": cols["rejected"],
                       "chosen_ids": cols["chosen_ids"], "rejected_ids": cols["rejected_ids"],
                       "chosen_reward": np.nan, "rejected_reward": np.nan, "flipped": False,
                       "source_row": cols["row"]})
    return df, report


GOLD_CHECK_PAIRS = 256  # pairs scored by the gold judge on load


def gold_check(judge, prompts, chosen, rejected, n: int = GOLD_CHECK_PAIRS) -> dict:
    """Mean gold reward of chosen and of rejected responses over the first ``n`` pairs: with a scalar judge the
    chosen mean must exceed the rejected one (inverted labels, a known bug of published reproductions)."""
    from harness.evaluation.judges import is_pairwise

    if is_pairwise(judge):
        return {}
    k = min(n, len(prompts))
    rc = judge.score(prompts[:k], chosen[:k])
    rr = judge.score(prompts[:k], rejected[:k])
    return {"gold_pairs_scored": k, "gold_chosen_mean": float(rc.mean()), "gold_rejected_mean": float(rr.mean()),
            "gold_inverted": bool(rc.mean() <= rr.mean())}


def dataset_prompts(suite, tokenizer, train_prompts: int, eval_prompts: int | None, field: str = "presets"):
    """(pair prompts, evaluation prompts) of ``pairs.dataset``, each a seeded draw of distinct prompts. The
    evaluation prompts (``prompts.kind: dataset``, else None) come from ``eval_split`` less every prompt of the
    pair split; when both splits are the same data (one file), the first ``eval_prompts`` of the seeded order
    are held out for evaluation and the pair prompts drawn from the rest."""
    spec = suite.pairs.dataset
    train_ex = examples(suite, spec.split, tokenizer)
    pool = select_prompts(train_ex.prompt, None, suite.seed)
    evals = None
    room = min(spec.max_prompt_tokens, suite.policy.max_length - 1 - suite.evaluation.max_new_tokens)

    def fits(p: str) -> bool:  # an evaluation prompt leaves room for BOS and evaluation.max_new_tokens
        n_tok = len(tokenizer(p, add_special_tokens=False)["input_ids"]) if tokenizer is not None else len(p.split())
        return n_tok <= room

    if suite.prompts.kind == "dataset":
        n = eval_prompts or 0
        eval_ex = examples(suite, spec.eval_split, tokenizer)
        if eval_ex.where == train_ex.where:
            if len(pool) <= n:
                raise UserError(suite.path, f"{field}.eval_prompts", f"asked for {n} evaluation prompts held out of "
                                f"{train_ex.where}, which has {len(pool)} distinct prompts (some must remain for pairs)")
            fit = list(itertools.islice((p for p in pool if fits(p)), n))
            if len(fit) < n:
                raise UserError(suite.path, f"{field}.eval_prompts", f"asked for {n} evaluation prompts; "
                                f"{train_ex.where} has {len(fit)} that fit {room} tokens (policy.max_length less "
                                "BOS and evaluation.max_new_tokens, at most max_prompt_tokens)")
            held = set(fit)
            evals, pool = fit, [p for p in pool if p not in held]
        else:
            seen = set(pool)
            evals = list(itertools.islice((p for p in select_prompts(eval_ex.prompt, None, suite.seed + 1)
                                           if p not in seen and fits(p)), n))
            if len(evals) < n:
                raise UserError(suite.path, f"{field}.eval_prompts", f"asked for {n} evaluation prompts; split "
                                f"{spec.eval_split} has {len(evals)} distinct prompts that are not pair prompts and "
                                f"fit {room} tokens (policy.max_length less BOS and evaluation.max_new_tokens)")
            evals = evals[:n]
    return pool[:train_prompts], evals


def eval_references(suite, tokenizer, prompts: list[str]) -> list[str]:
    """The dataset's chosen response for each evaluation prompt (its first row): the reference summaries
    that ``pairwise_win_scores`` compares policy samples against."""
    ex = examples(suite, suite.pairs.dataset.eval_split, tokenizer)
    first = {}
    for p, c in zip(ex.prompt, ex.chosen):
        first.setdefault(p, c)
    return [first[p] for p in prompts]


def text_documents(suite, split: str) -> list[str]:
    """``data.text_field`` of every row of ``split`` of ``data.name`` (a hub id or a local copy): the corpus of
    ``data.kind: hf_dataset`` (e.g. IMDb reviews). A comma-separated ``text_field`` (``prompt,completion``)
    concatenates those columns, as prompt-completion SFT does (e.g. trl-lib/tldr)."""
    d = suite.data
    spec = PreferenceDataSpec(path=d.name or d.path)
    base = Path(suite.path).parent if suite.path else None
    raw = read_split(spec, base, split, f"{suite.path}: data.name")
    fields = [f.strip() for f in d.text_field.split(",") if f.strip()]
    n, first = raw.rows[0]
    for f in fields:
        if f not in first:
            raise UserError(raw.where, f, f"column not in the dataset (data.text_field); its columns: "
                            f"{', '.join(sorted(map(str, first)))[:200]}")
    docs = []
    for n, row in raw.rows:
        parts = []
        for f in fields:
            t = row.get(f)
            if t is not None and not isinstance(t, str):
                raise UserError(raw.where, f"row {n}: {f}", f"got a {_kind(t)}, expected a string")
            parts.append(t or "")
        text = "".join(parts)
        if text.strip():
            docs.append(text)
    return docs


def chosen_corpus(suite, tokenizer, split: str) -> list[str]:
    """Prompt + chosen response of every row of ``split`` of ``pairs.dataset``: the SFT corpus of π_SFT
    (the DPO paper fine-tunes on the preferred completions of HH)."""
    ex = examples(suite, split, tokenizer, field_name="pairs.dataset")
    return [p + c for p, c in zip(ex.prompt, ex.chosen)]



# ---------------------------------------------------------------------- the suite's artifacts and preflight
def write_dataset_pairs(art, out: Path) -> None:
    """The pairs artifact of ``pairs.kind: dataset``: ``pairs.parquet`` (the preset's prompts, tokenized under
    the length policy) and ``load_report.json`` (rows, drops and their reasons, the gold check). Pairs whose
    chosen responses score lower than the rejected ones under the suite's scalar gold judge stop here."""
    s = art.suite
    judge = art.judge if s.judge.kind in ("vader", "reward_model") else None
    df, report = build_pairs(s, art.tokenizer, art.pair_prompts, judge=judge, render_tokenizer=art.dataset_tokenizer)
    if report.get("gold_inverted"):
        raise UserError(report["source"], "chosen", inverted_message(report))
    df.to_parquet(out / "pairs.parquet")
    (out / "load_report.json").write_text(json.dumps(report, indent=1))


def inverted_message(report: dict) -> str:
    return (f"mean gold reward of chosen ({report['gold_chosen_mean']:.4g}) is not above rejected's "
            f"({report['gold_rejected_mean']:.4g}) over {report['gold_pairs_scored']} pairs: inverted labels? (check "
            "pairs.dataset.columns: chosen and rejected may be swapped)")


def preflight_pairs(art) -> dict:
    """The load report of ``pairs.kind: dataset`` before any compute: schema (raises), drops, and, when the
    policy tokenizer is known before π_SFT (pretrained), the length policy's counts; no pair left raises."""
    s = art.suite
    spec = s.pairs.dataset
    prompts = art.pair_prompts
    ex = examples(s, spec.split, art.dataset_tokenizer)
    use = set(prompts)
    report = {"source": ex.where, "split": spec.split, "format": ex.format, **ex.counts,
              "pairs_in_split": len(ex.prompt), "prompts_selected": len(prompts)}
    sub = [i for i, p in enumerate(ex.prompt) if p in use]
    report["pairs_selected"] = len(sub)
    report["_texts"] = ([ex.prompt[i] for i in sub], [ex.chosen[i] for i in sub], [ex.rejected[i] for i in sub])
    tok = art.dataset_tokenizer
    if tok is not None:
        subset = Examples(ex.format, [ex.prompt[i] for i in sub], [ex.chosen[i] for i in sub],
                          [ex.rejected[i] for i in sub], [ex.row[i] for i in sub], ex.counts, ex.where)
        cols, lcounts = apply_length_policy(subset, tok, spec, s.policy.max_length)
        report.update(lcounts, pairs=len(cols["prompt"]),
                      tokens_per_epoch=sum(len(p) + len(c) + len(r) for p, c, r in
                                           zip(cols["prompt_ids"], cols["chosen_ids"], cols["rejected_ids"])))
        if not cols["prompt"]:
            raise UserError(f"{s.path}: pairs.dataset", "length_policy", f"every one of {len(sub)} pairs is over the "
                            f"token limits (prompt {spec.max_prompt_tokens}, response {spec.max_response_tokens}, "
                            f"context {s.policy.max_length}); raise them or use length_policy: truncate")
        report["_cols"] = cols
        report["_texts"] = (cols["prompt"], cols["chosen"], cols["rejected"])
    return report


FLOP_RATE = 1.0e11  # fp32 FLOP/s of a 2-core CPU as measured on a matmul-bound model (see docs/datasets.md)
BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


def count_parameters(suite) -> int | None:
    """Parameters of the policy without building it: the config estimate, or a local folder's safetensors size."""
    if suite.policy.kind == "config":
        from harness.execution.plan import estimate_parameters

        return estimate_parameters(suite)
    try:
        from harness.suites.sources import model_source

        src = model_source(suite)
    except UserError:
        return None
    folder = Path(src.get("path", ""))
    if not folder.is_dir():
        return None
    size = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    try:
        dtype = json.loads((folder / "config.json").read_text()).get("torch_dtype") or "float32"
    except (OSError, ValueError):
        dtype = "float32"
    return int(size / BYTES.get(dtype, 4)) or None


def check_report(suite, preset_name: str, cache_root: Path) -> tuple[list[str], list[str]]:
    """``prefbench check``: (report lines, problems) for ``suite`` under ``preset_name``. Resolves the model,
    tokenizer, data and judge, counts pairs after the filters, estimates tokens and run time; each problem is
    one line (where: field: what)."""
    from harness.execution.artifacts import SuiteArtifacts

    lines, problems = [], []
    preset = suite.preset(preset_name)
    suite = suite.for_preset(preset_name)
    lines.append(f"suite {suite.name} v{suite.version} ({suite.path}), preset {preset_name}: {preset.train_prompts} "
                 f"training prompts, {preset.eval_prompts} evaluation prompts")

    def attempt(what, fn):
        try:
            return fn()
        except UserError as e:
            problems.append(e.one_line())
            lines.append(f"{what}: PROBLEM (below)")
            return None

    class _Sampler:  # the key of the pairs artifact names the sampler; check samples nothing
        name = "hf"

    art = SuiteArtifacts(suite, preset_name, cache_root, _Sampler())
    art.read_only = True
    # model and tokenizer
    if suite.policy.kind == "config":
        n = count_parameters(suite)
        lines.append(f"model: {suite.policy.architecture} from config, about {n / 1e6:.2f}M parameters")
    else:
        from harness.suites.sources import check_sources

        if attempt("model", lambda: check_sources(suite) or True):
            n = count_parameters(suite)
            lines.append(f"model: {suite.policy.kind} {suite.policy.name_or_path or suite.policy.gguf_file}"
                         + (f", about {n / 1e6:.1f}M parameters" if n else ""))
    tok = None
    if suite.tokenizer.kind != "train_bpe":
        tok = attempt("tokenizer", lambda: art.dataset_tokenizer)
        if tok is None:  # go on without it: only conversational data and token counts need it
            art.__dict__["dataset_tokenizer"] = None
        else:
            lines.append(f"tokenizer: {type(tok).__name__}, {len(tok):,} tokens, chat template: "
                         f"{'yes' if getattr(tok, 'chat_template', None) else 'no'}")
    else:
        lines.append(f"tokenizer: {suite.tokenizer.kind}" + (f" ({suite.tokenizer.vocab_size} tokens, trained on the "
                                                             "corpus)" if suite.tokenizer.kind == "train_bpe" else ""))
    # data
    d = suite.data
    if suite.tokenizer.kind != "train_bpe" and suite.reference.kind == "use_base" and suite.prompts.kind == "dataset":
        lines.append(f"data: {d.kind} not read (π_SFT is the base as is; evaluation prompts come from the dataset)")
    elif d.kind in ("hf_dataset", "text_file", "preference_chosen") or suite.reference.kind == "train_on_corpus":
        corpus = attempt("data", lambda: art.corpus)
        if corpus is not None:
            src = {"hf_dataset": d.name, "text_file": d.path, "preference_chosen": "pairs.dataset chosen"}.get(d.kind, d.kind)
            lines.append(f"data: {d.kind} {src} split {d.split}: {len(corpus[0]):,} documents for π_SFT, "
                         f"{len(corpus[1]):,} held out" + (f" (split {d.heldout_split})" if d.heldout_split else ""))
    ok_prompts = attempt("prompts", lambda: art.check_prompts() or True)
    if ok_prompts:
        lines.append(f"prompts: {len(art.pair_prompts):,} pair prompts, {len(art.eval_prompts):,} evaluation prompts "
                     f"({suite.prompts.kind})")
    # pairs
    pairs_n, train_tokens, rep = None, None, None
    if suite.pairs.kind == "dataset":
        rep = attempt("pairs", lambda: preflight_pairs(art)) if ok_prompts else None
        if rep:
            lines.append(f"pairs: {rep['source']} split {rep['split']}, format {rep['format']}: {rep['rows']:,} rows; "
                         f"dropped {rep['empty']} empty, {rep['identical']} chosen = rejected, {rep['duplicates']} "
                         f"duplicates" + (f", {rep['unmatched']} unmatched unpaired" if rep['format'] == 'unpaired'
                                          else "")
                         + f"; {rep['pairs_selected']:,} pairs of the preset's prompts")
            if "pairs" in rep:
                pairs_n, train_tokens = rep["pairs"], rep["tokens_per_epoch"]
                sp = suite.pairs.dataset
                lines.append(f"length policy {sp.length_policy} (prompt ≤ {sp.max_prompt_tokens}, response ≤ "
                             f"{sp.max_response_tokens}, context {suite.policy.max_length} tokens): "
                             f"{rep['dropped_length']} dropped, {rep['truncated']} truncated -> {pairs_n:,} pairs")
            else:
                pairs_n = rep["pairs_selected"]
                lines.append("length policy: applied once π_SFT's tokenizer exists (train_bpe)")
    elif suite.pairs.kind == "file":
        from harness.execution.plan import read_pairs_table

        table = attempt("pairs", lambda: read_pairs_table(suite))
        if table is not None:
            pairs_n = len(table)
            lines.append(f"pairs: file {suite.pairs.path}: {pairs_n:,} pairs")
    else:
        k = suite.pairs.samples_per_prompt
        pairs_n = preset.train_prompts * k * (k - 1) // 2
        lines.append(f"pairs: sampled from π_SFT, {preset.train_prompts} prompts x {k} samples, up to {pairs_n:,} "
                     f"pairs labelled by the judge")
    # judge
    j = suite.judge
    if j.kind == "vader":
        lines.append("judge: vader (gold reward)")
    elif j.kind == "reward_model":
        base = Path(suite.path).parent if suite.path else Path(".")
        target = j.model if Path(j.model).is_absolute() or not (base / j.model).exists() else str(base / j.model)
        problem = model_problem(target, "judge.model")
        if problem:
            problems.append(f"{suite.path}: judge.model: {problem}")
            lines.append("judge: PROBLEM (below)")
        else:
            lines.append(f"judge: reward_model {j.model}" + (f", reward = p({j.label})" if j.label else ""))
    else:
        lines.append(f"judge: llm_pairwise {j.model} at {j.base_url} (not contacted by check)")
    if (suite.pairs.kind == "dataset" and j.kind in ("vader", "reward_model") and pairs_n and not problems
            and rep):
        def gold():
            g = gold_check(art.judge, *rep["_texts"])
            if g["gold_inverted"]:
                raise UserError(rep["source"], "chosen", inverted_message(g))
            return g
        g = attempt("gold check", gold)
        if g:
            lines.append(f"gold check: mean gold reward chosen {g['gold_chosen_mean']:.4g} > rejected "
                         f"{g['gold_rejected_mean']:.4g} over {g['gold_pairs_scored']} pairs")
    # estimate
    n_params = count_parameters(suite)
    ev = suite.evaluation
    sample_tokens = preset.eval_prompts * ev.samples_per_prompt * ev.max_new_tokens * 2  # policy + π_SFT baseline
    if suite.pairs.kind == "sampled":
        sample_tokens += preset.train_prompts * suite.pairs.samples_per_prompt * suite.pairs.max_new_tokens
    if train_tokens is None and pairs_n:
        train_tokens = pairs_n * suite.policy.max_length  # an upper bound: every pair at the full context
    ref_tokens = 0
    if suite.reference.kind == "train_on_corpus":
        steps = preset.reference_steps if preset.reference_steps is not None else suite.reference.steps
        ref_tokens = steps * suite.reference.batch_size * suite.policy.max_length
    per_epoch = f"{train_tokens:,}" if train_tokens is not None else "unknown (the pairs could not be read)"
    lines.append(f"tokens: {per_epoch} per training epoch (prompt + chosen + rejected), {ref_tokens:,} "
                 f"for π_SFT, about {sample_tokens:,} sampled for pairs and evaluation")
    if n_params:
        flops = 6 * n_params * (train_tokens or 0) + 6 * n_params * ref_tokens + 2 * n_params * (train_tokens or 0)
        flops += 2 * n_params * sample_tokens * 4  # generation is far from matmul-bound: counted 4x
        secs = flops / FLOP_RATE
        lines.append(f"run time: about {_duration(secs)} for π_SFT, pairs and one epoch of one algorithm at "
                     f"{FLOP_RATE:.0e} FLOP/s (2 CPU cores; divide by the speed-up of your hardware)")
    else:
        lines.append("run time: unknown (model size not known before it is downloaded)")
    return lines, list(dict.fromkeys(problems))


def _duration(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"
