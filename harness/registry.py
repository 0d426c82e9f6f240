"""The algorithm registry: cheap to list, lazy to run.

An algorithm is one module in ``algorithms/`` holding a hyperparameter dataclass and a class
decorated with ``@register``. Discovery imports those modules, so they must keep heavy imports
(torch, transformers, TRL, vLLM) inside functions: ``prefbench list algorithms`` then costs
milliseconds and needs none of them (``tests/test_registry.py`` checks this).
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

    def make_config(self, values: dict[str, Any], where: str) -> Any:
        return cfg.build(self.config_cls, values, where, prefix=self.name)


_REGISTRY: dict[str, AlgorithmSpec] = {}
_discovered = False


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


def all_specs() -> list[AlgorithmSpec]:
    discover()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def get(name: str, where: str = "--algorithms") -> AlgorithmSpec:
    discover()
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
