"""Named fault points for crash testing: ``PREFBENCH_FAULT=point[@n]`` SIGKILLs this process the n-th
time (default 1st) execution reaches ``point``. Off (a dictionary lookup) unless the variable is set.

``point[@n]:SIGNAL`` (``:TERM``, ``:INT``) sends that signal instead, to the prefbench process the
user started (``PREFBENCH_MAIN_PID``, set for its workers), as a cluster's pre-emption or a Ctrl-C
would: for tests of the clean stop (:mod:`harness.core.interrupt`).

Points: ``artifact:<kind>`` (artifact built, before it is committed), ``pretrain:step`` (after each
step of π_SFT pre-training), ``train:step`` (after each optimizer step), ``eval:sampled`` (policy
sampled, before scoring), ``run:commit`` (run folder fully written, before the rename that publishes it).
"""
from __future__ import annotations

import os
import signal

_counts: dict[str, int] = {}


def parse(spec: str) -> tuple[str, int, str]:
    """(point, n, signal name or "") of a ``PREFBENCH_FAULT`` value: every point is ``area:what``, so a
    third ``:`` part names a signal."""
    parts = spec.split(":")
    sig = parts.pop() if len(parts) > 2 else ""
    target, _, nth = ":".join(parts).partition("@")
    return target, int(nth or 1), sig


def unparse(target: str, nth: int, sig: str) -> str:
    return f"{target}@{nth}" + (f":{sig}" if sig else "")


def point(name: str) -> None:
    spec = os.environ.get("PREFBENCH_FAULT")
    if not spec:
        return
    target, nth, sig = parse(spec)
    if target != name:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] == nth:
        if sig:
            os.kill(int(os.environ.get("PREFBENCH_MAIN_PID") or os.getpid()), getattr(signal, f"SIG{sig}"))
            # the stop reaches this process forwarded: wait for it, so it lands exactly here
            import time

            from harness.core import interrupt

            t0 = time.monotonic()
            while interrupt.requested() is None and time.monotonic() - t0 < 10:
                time.sleep(0.01)
        else:
            os.kill(os.getpid(), signal.SIGKILL)
