"""Stopping cleanly on Ctrl-C (SIGINT) and SIGTERM (a cluster's pre-emption).

A computing process (a run's worker) installs :func:`install`: a signal then only *requests* a stop.
Code that can save its state polls :func:`requested` at safe points — after an optimizer step, the
native trainers save a resumable checkpoint there and raise :class:`Interrupted`. Code that cannot
save (evaluation, a TRL trainer without mid-run checkpoints) is ended at once: outside a
:func:`deferred` block the signal raises :class:`Interrupted` where it lands. A second signal always
ends the process at once.

The process ends with status 128 + the signal number (130 for SIGINT, 143 for SIGTERM), the shell's
convention, so schedulers and scripts can tell an interruption from a failure.
"""
from __future__ import annotations

import contextlib
import signal

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """The process was asked to stop. A BaseException, so ``except Exception`` blocks that record a
    run as failed let it through. ``step``: the step whose state was saved (None: nothing saved)."""

    def __init__(self, signum: int, step: int | None = None, what: str = ""):
        self.signum, self.step, self.what = int(signum), step, what
        super().__init__(f"{name(signum)}" + (f" (state saved at step {step})" if step is not None else ""))

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


_requested: int | None = None
_deferring = 0


def name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def requested() -> int | None:
    """The signal number of a pending stop request, or None."""
    return _requested


def _handler(signum, frame) -> None:  # noqa: ARG001
    global _requested
    if _requested is not None:  # the second signal: end now
        raise Interrupted(signum)
    _requested = signum
    if not _deferring:
        raise Interrupted(signum)


def install() -> None:
    """Route SIGINT and SIGTERM through the stop request (main thread only)."""
    global _requested
    _requested = None
    for s in SIGNALS:
        signal.signal(s, _handler)


@contextlib.contextmanager
def deferred():
    """Within this block a (first) signal only sets :func:`requested`; the code polls it."""
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1


def check(step: int | None = None, save=None, what: str = "") -> None:
    """At a safe point: if a stop was requested, call ``save()`` (if given) and raise :class:`Interrupted`."""
    if _requested is None:
        return
    if save is not None:
        save()
    raise Interrupted(_requested, step, what)
