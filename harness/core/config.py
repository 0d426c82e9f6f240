"""Typed configs: dataclasses built from plain mappings (YAML, ``--set``), checked field by field.

Every suite section and every algorithm's hyperparameters is a dataclass. ``build`` turns a mapping
into one, rejecting unknown keys, wrong types and values outside a field's declared range with a
one-line :class:`UserError` that names the file (or flag) and the dotted key. Nothing heavy is
imported here, so listing algorithms and validating input costs milliseconds.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Literal

import yaml

from harness.core.errors import UserError

_MISSING = dataclasses.MISSING


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
        raise UserError(where, key, f"got {value!r}, expected {type_name(tp)}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise UserError(where, key, f"got {value!r}, allowed: {', '.join(map(str, allowed))}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError(where, key, f"got {type(value).__name__} {value!r}, expected a mapping")
        return build(tp, value, where, prefix=key)
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise UserError(where, key, f"got {value!r}, expected {type_name(tp)}")
        (inner,) = typing.get_args(tp)[:1]
        return [_coerce(inner, v, where, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(where, key, f"got {value!r}, expected a mapping")
        _, inner = typing.get_args(tp)
        return {str(k): _coerce(inner, v, where, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(where, key, f"got {value!r}, expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(where, key, f"got {value!r}, expected an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(where, key, f"got {value!r}, expected a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise UserError(where, key, f"got {value!r}, expected a string")
        return value
    raise TypeError(f"unsupported config type {tp!r} for {key}")


def build(cls: type, data: dict | None, where: str, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; every problem is a one-line UserError."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise UserError(where, prefix or None, f"got {data!r}, expected a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
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
            raise UserError(where, dotted, f"got {v!r}, must be {range_text(f)}")


def parse_scalar(text: str) -> Any:
    """A ``--set`` value as YAML would read it: 0.5 -> float, 3 -> int, true -> bool, abc -> str."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string; users mean a number
        try:
            return float(value)
        except ValueError:
            pass
    return value


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
