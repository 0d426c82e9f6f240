"""Clean stops (harness/core/interrupt.py) and the silencing of library output, in-process.

End to end, with real signals at exact points of real `prefbench run` processes: tests/test_reliability.py.
"""
import os
import signal

import pytest

from harness.core import interrupt


@pytest.fixture
def installed():
    old = {s: signal.getsignal(s) for s in interrupt.SIGNALS}
    interrupt.install()
    yield
    for s, h in old.items():
        signal.signal(s, h)
    interrupt._requested = None  # noqa: SLF001 -- no stop request outlives its test


def test_a_signal_outside_a_deferred_block_stops_at_once(installed):
    with pytest.raises(interrupt.Interrupted) as e:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs between bytecodes
            pass
    assert e.value.exit_code == 143 and e.value.step is None


def test_inside_a_deferred_block_the_step_finishes_saves_and_then_stops(installed):
    saved, done = [], []
    with pytest.raises(interrupt.Interrupted) as e:
        with interrupt.deferred():
            for step in range(1, 6):
                if step == 2:
                    os.kill(os.getpid(), signal.SIGINT)
                done.append(step)  # the step in progress is not cut short
                interrupt.check(step, save=lambda: saved.append(step), what="training")
    assert done == [1, 2] and saved == [2]
    assert (e.value.signum, e.value.step, e.value.what, e.value.exit_code) == (signal.SIGINT, 2, "training", 130)


def test_a_second_signal_stops_even_a_deferred_block(installed):
    with pytest.raises(interrupt.Interrupted) as e:
        with interrupt.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            assert interrupt.requested() == signal.SIGTERM
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):
                pass
    assert e.value.step is None  # nothing saved: it did not wait for a safe point


def test_interrupted_is_not_caught_by_handlers_that_record_a_failed_run():
    assert not issubclass(interrupt.Interrupted, Exception)


@pytest.mark.parametrize("verbose", ["0", "1"])
def test_library_bars_and_logs_are_silenced_unless_verbose(monkeypatch, verbose):
    from transformers.utils import logging as hf_logging

    from harness.core.env import quiet_libraries

    hf_logging.enable_progress_bar()
    hf_logging.set_verbosity_warning()
    monkeypatch.setenv("PREFBENCH_VERBOSE", verbose)
    try:
        quiet_libraries()
        assert hf_logging.is_progress_bar_enabled() == (verbose == "1")
        assert (hf_logging.get_verbosity() == hf_logging.ERROR) == (verbose == "0")
    finally:
        hf_logging.enable_progress_bar()
        hf_logging.set_verbosity_warning()


def test_signal_fault_specs_round_trip():
    from harness.core import faults

    assert faults.parse("train:step@3:TERM") == ("train:step", 3, "TERM")
    assert faults.parse("artifact:reference") == ("artifact:reference", 1, "")
    assert faults.unparse(*faults.parse("pretrain:step@40:INT")) == "pretrain:step@40:INT"
