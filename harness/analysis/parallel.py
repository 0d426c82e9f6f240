"""Independent pieces of the report computed by several processes at once.

``run_tasks`` runs argument-free callables (the figures) and returns their results in order. With
``jobs`` > 1 on Linux it forks that many worker processes (each inherits the data already in memory, so
only the results travel back, pickled), hands out the costliest tasks first, and waits for all of them;
anywhere else, or with ``jobs`` = 1, it runs them here one after the other. ``Background`` computes one
callable in a forked process while this one goes on (the statistics overlap two pairs of independent
parts). A result does not depend on the process that computed it: the same numbers, the same files.
"""
from __future__ import annotations

import gc
import os
import sys
import time
from typing import Any, Callable

_TASKS: list[Callable[[], Any]] | None = None  # read by the forked workers
# CPU seconds per process of the last run_tasks call (pid -> seconds): the benchmark's critical path
last_cpu: dict[int, float] = {}


def _run(i: int) -> tuple[int, float, Any]:
    c = time.process_time()
    out = _TASKS[i]()
    return os.getpid(), time.process_time() - c, out


def workers(jobs: int | None) -> int:
    """Processes to use: ``jobs`` (None: 2), at most the CPUs this process may run on."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(2 if jobs is None else int(jobs), cpus))


def run_tasks(tasks: list[tuple[float, Callable[[], Any]]], jobs: int | None = None) -> list[Any]:
    """Results of the (cost, callable) tasks, in their order."""
    global _TASKS
    last_cpu.clear()
    n = min(workers(jobs), len(tasks))
    if n <= 1 or not sys.platform.startswith("linux") or _TASKS is not None:
        c = time.process_time()
        out = [fn() for _, fn in tasks]
        last_cpu[os.getpid()] = time.process_time() - c
        return out
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    _TASKS = [fn for _, fn in tasks]
    gc.freeze()  # the workers' garbage collector leaves the inherited objects alone (no copy-on-write)
    try:
        # the workers are forked when the first task is submitted, with _TASKS already set
        with ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("fork")) as ex:
            order = sorted(range(len(tasks)), key=lambda i: -tasks[i][0])  # costliest first
            futures = {i: ex.submit(_run, i) for i in order}
            done = [futures[i].result() for i in range(len(tasks))]
    finally:
        gc.unfreeze()
        _TASKS = None
    for pid, cpu, _ in done:
        last_cpu[pid] = last_cpu.get(pid, 0.0) + cpu
    return [out for _, _, out in done]


class Background:
    """``fn()`` computed in a forked child while this process goes on; calling the object returns the
    result (re-raising the child's exception). With one worker, or off Linux, ``fn`` runs here, when
    the result is asked for."""

    def __init__(self, fn: Callable[[], Any], jobs: int | None = None):
        self._fn, self._proc, self._done, self._value = fn, None, False, None
        self.cpu = 0.0  # CPU seconds the child spent on fn (0 when fn ran here)
        if workers(jobs) > 1 and sys.platform.startswith("linux") and _TASKS is None:
            import multiprocessing

            ctx = multiprocessing.get_context("fork")
            self._recv, send = ctx.Pipe(duplex=False)
            self._proc = ctx.Process(target=self._child, args=(send,), daemon=True)
            gc.freeze()  # as in run_tasks
            try:
                self._proc.start()
            finally:
                gc.unfreeze()
            send.close()

    def _child(self, send) -> None:
        c = time.process_time()
        try:
            msg = (True, self._fn())
        except BaseException as e:  # noqa: BLE001 - handed to the parent, which re-raises it
            import traceback

            msg = (False, (e, traceback.format_exc()))
        try:
            send.send((msg, time.process_time() - c))
        except Exception as e:  # noqa: BLE001 - an unpicklable result or exception
            send.send(((False, (RuntimeError(f"background result could not be sent back: {e}"), "")), 0.0))
        send.close()
        os._exit(0)  # no atexit handlers or buffered output of the parent's copy

    def __call__(self) -> Any:
        if not self._done:
            if self._proc is None:
                self._value = self._fn()
            else:
                try:
                    (ok, value), self.cpu = self._recv.recv()
                except EOFError:
                    ok, value = False, (RuntimeError(f"background process died (exit code {self._proc.exitcode})"),
                                        "")
                finally:
                    self._recv.close()
                    self._proc.join()
                if not ok:
                    exc, tb = value
                    if tb:
                        raise exc from RuntimeError(f"in the background process:\n{tb}")
                    raise exc
                self._value = value
            self._done = True
        return self._value
