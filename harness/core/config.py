"""Typed configs: dataclasses built from plain mappings (YAML, ``--set``), checked field by field.

Every suite section and every algorithm's hyperparameters is a dataclass. ``build`` turns a mapping
into one, rejecting unknown keys, wrong types and values outside a field's declared range with a
one-line :class:`UserError` that names the file (or flag) and the dotted key. Nothing heavy is
imported here, so listing algorithms and validating input costs milliseconds.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
import stat
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from harness.core.errors import UserError, short_repr

_MISSING = dataclasses.MISSING
MAX_INT = 2 ** 53  # no count, size or seed is larger; beyond it floats and JSON lose integers


def hp(default: Any = _MISSING, help: str = "", *, gt: float | None = None, ge: float | None = None,
       lt: float | None = None, le: float | None = None, default_factory: Any = _MISSING) -> Any:
    """A dataclass field with a help line and an optional numeric range (checked by ``build``)."""
    meta = {"help": help, "gt": gt, "ge": ge, "lt": lt, "le": le}
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def range_text(f: dataclasses.Field) -> str:
    m = f.metadata
    bounds = []
    if m.get("gt") is not None:
        bounds.append(f"> {m['gt']}")
    if m.get("ge") is not None:
        bounds.append(f">= {m['ge']}")
    if m.get("lt") is not None:
        bounds.append(f"< {m['lt']}")
    if m.get("le") is not None:
        bounds.append(f"<= {m['le']}")
    return " and ".join(bounds)


def type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin in (list, tuple):
        return f"a list of {type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _coerce(tp: Any, value: Any, where: str, key: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, where, key)
            except UserError as e:
                errors.append(e)
        raise UserError(where, key, f"got {short_repr(value)}, expected {type_name(tp)}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise UserError(where, key, f"got {short_repr(value)}, allowed: {', '.join(map(str, allowed))}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError(where, key, f"got {type(value).__name__} {short_repr(value)}, expected a mapping")
        return build(tp, value, where, prefix=key)
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise UserError(where, key, f"got {short_repr(value)}, expected {type_name(tp)}")
        (inner,) = typing.get_args(tp)[:1]
        return [_coerce(inner, v, where, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(where, key, f"got {short_repr(value)}, expected a mapping")
        _, inner = typing.get_args(tp)
        return {str(k): _coerce(inner, v, where, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(where, key, f"got {short_repr(value)}, expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(where, key, f"got {short_repr(value)}, expected an integer")
        if abs(value) > MAX_INT:
            raise UserError(where, key, f"got {short_repr(value)}, out of range (at most {MAX_INT:.3g} in size)")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(where, key, f"got {short_repr(value)}, expected a number")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):  # inf and NaN pass range checks (or fail them silently)
            raise UserError(where, key, f"got {short_repr(value)}, must be a finite number")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise UserError(where, key, f"got {short_repr(value)}, expected a string")
        return value
    raise TypeError(f"unsupported config type {tp!r} for {key}")


def build(cls: type, data: dict | None, where: str, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; every problem is a one-line UserError."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise UserError(where, prefix or None, f"got {short_repr(data)}, expected a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            close = difflib.get_close_matches(str(key)[:100], list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UserError(where, dotted, f"unknown key{hint}; allowed: {', '.join(fields)}")
        kwargs[key] = _coerce(hints[key], value, where, dotted)
    for name, f in fields.items():
        if name not in kwargs and f.default is _MISSING and f.default_factory is _MISSING:
            dotted = f"{prefix}.{name}" if prefix else name
            raise UserError(where, dotted, f"missing required key ({type_name(hints[name])})")
    obj = cls(**kwargs)
    check_ranges(obj, where, prefix)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        problem = validate()
        if problem:
            key, msg = problem
            raise UserError(where, f"{prefix}.{key}" if prefix else key, msg)
    return obj


def check_ranges(obj: Any, where: str, prefix: str = "") -> None:
    for f in dataclasses.fields(obj):
        m = f.metadata
        v = getattr(obj, f.name)
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        ok = ((m.get("gt") is None or v > m["gt"]) and (m.get("ge") is None or v >= m["ge"])
              and (m.get("lt") is None or v < m["lt"]) and (m.get("le") is None or v <= m["le"]))
        if not ok:
            dotted = f"{prefix}.{f.name}" if prefix else f.name
            raise UserError(where, dotted, f"got {short_repr(v)}, must be {range_text(f)}")


_NUMBER = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


def parse_scalar(text: str, where: str = "--set") -> Any:
    """A ``--set`` value as YAML would read it: 0.5 -> float, 3 -> int, true -> bool, abc -> str.
    Aliases that expand past the YAML limits and duplicate keys are refused like in a suite file."""
    try:
        value = load_yaml(text, where)
    except UserError as e:
        if getattr(e, "yaml_syntax", False):
            return text  # not YAML at all: the plain string (a field that wants a number says so)
        raise
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string; users mean a number
    return value


# ---------------------------------------------------------------------- reading input files
MAX_YAML_BYTES = 256 * 1024  # a suite or sweep file (the shipped ones are ~2 KB): parsed in about a second
MAX_YAML_NODES = 20_000  # nodes of a YAML document once its aliases are expanded
MAX_YAML_DEPTH = 50  # nesting of sequences and mappings


def read_text_file(path: Any, where: str, what: str, max_bytes: int) -> str:
    """The UTF-8 text of a small input file (a leading byte-order mark is dropped), or a one-line
    :class:`UserError` naming the file: missing, a folder, a symlink loop, a device or FIFO, larger
    than ``max_bytes``, compressed, or not UTF-8. Reads at most ``max_bytes + 1`` bytes."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise UserError(where, None, f"{what} not found") from None
    except (OSError, ValueError) as e:  # ELOOP, ENAMETOOLONG, EACCES, embedded NUL byte
        raise UserError(where, None, f"cannot read the {what} ({getattr(e, 'strerror', None) or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise UserError(where, None, f"is a folder, not a {what}")
    if not stat.S_ISREG(st.st_mode):
        raise UserError(where, None, f"not a regular file (a device, FIFO or socket), expected a {what}")
    if st.st_size > max_bytes:
        raise UserError(where, None, f"{st.st_size:,} bytes; a {what} may have at most {max_bytes:,}")
    try:
        with open(p, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise UserError(where, None, f"cannot read the {what} ({e.strerror or e})") from None
    if len(data) > max_bytes:
        raise UserError(where, None, f"more than {max_bytes:,} bytes; a {what} may have at most {max_bytes:,}")
    return decode_utf8(data, where)


def decode_utf8(data: bytes, where: str) -> str:
    """Bytes of an input file as text: UTF-8 (an optional byte-order mark is dropped), else one line."""
    if data[:2] == b"\x1f\x8b":
        raise UserError(where, None, "gzip-compressed; decompress it first")
    if data[:4] == b"PAR1":
        raise UserError(where, None, "a Parquet file, expected text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise UserError(where, f"line {line}", f"not valid UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start})") from None
    return text[1:] if text.startswith("\ufeff") else text


class _StrictLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml when installed: fast
    """Safe YAML that refuses duplicate keys (YAML would let the last one silently win)."""

    where = "YAML"

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # '<<: *defaults' merges; explicit keys may override merged ones
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:
                    continue  # unhashable: the base constructor reports it
                if first is not key_node:
                    line = key_node.start_mark.line + 1
                    raise UserError(self.where, f"line {line}", f"duplicate key {short_repr(key)} (first on line "
                                    f"{first.start_mark.line + 1}); YAML would keep only the last one")
        return super().construct_mapping(node, deep=deep)


def _check_node_size(root, where: str) -> None:
    """Refuse alias bombs and recursive aliases: count the nodes the document has once every alias
    is expanded (memoised per node, so this is linear in the document, not in its expansion)."""
    size: dict[int, int] = {}
    depth_of: dict[int, int] = {}
    stack = [(root, 0, False)]
    active: set[int] = set()
    while stack:
        node, depth, done = stack.pop()
        nid = id(node)
        if done:
            active.discard(nid)
            children = _children(node)
            total = 1 + sum(size[id(c)] for c in children)
            size[nid] = min(total, MAX_YAML_NODES + 1)
            continue
        if nid in size:
            continue
        if nid in active:
            raise UserError(where, f"line {node.start_mark.line + 1}", "recursive YAML alias (a node that contains itself)")
        if depth > MAX_YAML_DEPTH:
            raise UserError(where, f"line {node.start_mark.line + 1}", f"nested more than {MAX_YAML_DEPTH} levels deep")
        active.add(nid)
        depth_of[nid] = depth
        stack.append((node, depth, True))
        for c in _children(node):
            if id(c) not in size:
                stack.append((c, depth + 1, False))
    if size[id(root)] > MAX_YAML_NODES:
        raise UserError(where, None, f"YAML aliases expand to more than {MAX_YAML_NODES:,} values (an alias "
                        "bomb?); write the values out or use fewer aliases")


def _children(node) -> list:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [x for kv in node.value for x in kv]
    return []


def load_yaml(text: str, where: str) -> Any:
    """Strict, safe, bounded YAML: one document; duplicate keys, alias bombs, recursive aliases and
    deep nesting are refused; every problem is a one-line :class:`UserError` naming ``where`` (with
    ``yaml_syntax`` set on it when the text is not YAML at all)."""
    if len(text) > MAX_YAML_BYTES:
        raise UserError(where, None, f"{len(text):,} characters of YAML; at most {MAX_YAML_BYTES:,}")
    loader = _StrictLoader(text)
    loader.where = where
    try:
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _check_node_size(node, where)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        loc = f"line {mark.line + 1}, column {mark.column + 1}" if mark else None
        err = UserError(where, loc, f"YAML syntax error: {getattr(e, 'problem', None) or e}")
        err.yaml_syntax = True
        raise err from None
    except RecursionError:
        raise UserError(where, None, f"nested too deeply (at most {MAX_YAML_DEPTH} levels)") from None
    except (ValueError, OverflowError, TypeError) as e:  # e.g. a timestamp 2024-13-45, a 5,000-digit integer
        raise UserError(where, None, f"invalid YAML value: {e}") from None


def describe(cls: type) -> list[dict]:
    """One entry per field: name, type, default and help, for ``prefbench list`` and docs."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not _MISSING else (
            f.default_factory() if f.default_factory is not _MISSING else None)
        rng = range_text(f)
        out.append({"name": f.name, "type": type_name(hints[f.name]), "default": default,
                    "help": f.metadata.get("help", ""), "range": rng})
    return out
