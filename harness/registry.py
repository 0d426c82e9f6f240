"""The algorithm registry: cheap to list, lazy to run.

An algorithm is one module in ``algorithms/`` holding a hyperparameter dataclass and a class
decorated with ``@register``. Discovery imports those modules, so they must keep heavy imports
(torch, transformers, TRL, vLLM) inside functions: ``prefbench list algorithms`` then costs
milliseconds and needs none of them (``tests/test_registry.py`` checks this).

Plugins: an installed distribution registers algorithms with no edit to prefbench through the
``prefbench.algorithms`` entry-point group. Each entry point is named after the algorithm it
registers and points at the module (or the class) whose import runs ``@register``::

    [project.entry-points."prefbench.algorithms"]
    gpo = "prefbench_gpo"

A plugin that fails to load (import error, no algorithm of its entry point's name, a name taken by
another algorithm) costs one line on stderr naming it, never a traceback, and the other algorithms
stay usable; asking for it by name is then a one-line error with the reason.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib
import pkgutil
from typing import Any, Callable

from harness.core import config as cfg
from harness.core.errors import UserError


@dataclasses.dataclass(frozen=True)
class AlgorithmSpec:
    name: str
    description: str
    config_cls: type
    cls: type
    origin: str = ""  # "" for prefbench's own algorithms; "<distribution> <version>" for a plugin

    def make_config(self, values: dict[str, Any], where: str) -> Any:
        return cfg.build(self.config_cls, values, where, prefix=self.name)


_REGISTRY: dict[str, AlgorithmSpec] = {}
_BROKEN: dict[str, str] = {}  # plugin entry-point name -> why it did not load (one line)
_discovered = False
ENTRY_POINT_GROUP = "prefbench.algorithms"


def register(name: str, description: str, config: type) -> Callable[[type], type]:
    """Class decorator: ``@register("dpo", "Direct Preference Optimization", DPOConfig)``."""

    def wrap(cls: type) -> type:
        if name in _REGISTRY and _REGISTRY[name].cls is not cls:
            raise RuntimeError(f"algorithm {name!r} registered twice")
        cls.name = name
        cls.Config = config
        _REGISTRY[name] = AlgorithmSpec(name, description, config, cls)
        return cls

    return wrap


def discover() -> None:
    global _discovered
    if _discovered:
        return
    import algorithms

    for mod in pkgutil.iter_modules(algorithms.__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"algorithms.{mod.name}")
    _discovered = True
    _load_plugins()


def _load_plugins() -> None:
    """Register the algorithms of installed plugins (entry-point group ``prefbench.algorithms``)."""
    import sys
    from importlib import metadata

    try:
        eps = metadata.entry_points(group=ENTRY_POINT_GROUP)
    except Exception as e:  # a corrupt installation must not stop prefbench
        print(f"prefbench: warning: cannot read installed plugins: {type(e).__name__}: {e}", file=sys.stderr)
        return
    for ep in sorted(eps, key=lambda e: e.name):
        dist = getattr(ep, "dist", None)
        origin = f"{dist.name} {dist.version}" if dist is not None else ep.value
        before = {k: v.cls for k, v in _REGISTRY.items()}
        if ep.name in before and _REGISTRY[ep.name].origin == origin:
            continue  # registered by an earlier entry point of the same distribution (one module, several names)
        try:
            if ep.name in before:
                raise RuntimeError(f"the name is taken by {_origin_text(_REGISTRY[ep.name])}")
            ep.load()
            spec = _REGISTRY.get(ep.name)
            if spec is None:
                raise RuntimeError(f"importing {ep.value} registered no algorithm named {ep.name!r}")
        except BaseException as e:  # noqa: BLE001 - any failure of third-party code is reported, not raised
            if isinstance(e, KeyboardInterrupt):
                raise
            for k in set(_REGISTRY) - set(before):  # drop whatever the broken import half-registered
                del _REGISTRY[k]
            reason = f"{type(e).__name__}: {e}".splitlines()[0]
            _BROKEN[ep.name] = f"plugin {ep.name!r} ({origin}, entry point {ep.value}) not loaded: {reason}"
            print(f"prefbench: warning: {_BROKEN[ep.name]}", file=sys.stderr)
            continue
        for k in set(_REGISTRY) - set(before):
            spec = _REGISTRY[k]
            _REGISTRY[k] = dataclasses.replace(spec, origin=origin, description=f"{spec.description} [plugin {origin}]")


def _origin_text(spec: AlgorithmSpec) -> str:
    return f"plugin {spec.origin}" if spec.origin else "prefbench's own algorithm"


def all_specs() -> list[AlgorithmSpec]:
    discover()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def get(name: str, where: str = "--algorithms") -> AlgorithmSpec:
    discover()
    if name not in _REGISTRY and name in _BROKEN:
        raise UserError(where, name, _BROKEN[name])
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(where, name, f"unknown algorithm{hint}; registered: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


class Algorithm:
    """Base class. Subclasses set nothing by hand: ``@register`` fills ``name`` and ``Config``.

    ``train(ctx)`` gets a :class:`harness.execution.context.TrainContext` (the suite's shared artifacts: π_ref,
    tokenizer, preference pairs with reference log-probabilities, a logger, checkpoint hooks) and
    returns the trained policy as a ``transformers`` causal LM. Evaluation is not the algorithm's
    business: the harness evaluates every policy with the same code.
    """

    name: str = ""
    Config: type = object
    # libraries whose internals the algorithm's adapters patch (e.g. ("trl",)): their patches' version
    # pins are checked when the run is planned, before any compute (harness.adapters.check_patches)
    patched_libraries: tuple[str, ...] = ()

    def __init__(self, config: Any):
        self.config = config

    def variant(self) -> str:
        """What exactly ran (e.g. ``dpo``, ``cdpo``, ``ipo``); recorded with every run."""
        return self.name

    def train(self, ctx: Any) -> Any:  # pragma: no cover - interface
        raise NotImplementedError
