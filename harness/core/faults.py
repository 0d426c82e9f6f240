"""Named fault points for crash testing: ``PREFBENCH_FAULT=point[@n]`` SIGKILLs this process the n-th
time (default 1st) execution reaches ``point``. Off (a dictionary lookup) unless the variable is set.

Points: ``artifact:<kind>`` (artifact built, before it is committed), ``train:step`` (after each
optimizer step), ``eval:sampled`` (policy sampled, before scoring), ``run:commit`` (run folder fully
written, before the rename that publishes it).
"""
from __future__ import annotations

import os
import signal

_counts: dict[str, int] = {}


def point(name: str) -> None:
    spec = os.environ.get("PREFBENCH_FAULT")
    if not spec:
        return
    target, _, nth = spec.partition("@")
    if target != name:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
