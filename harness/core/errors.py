"""Errors a user can fix. The CLI prints them as one line and exits with code 2."""
from __future__ import annotations

import re


class UserError(Exception):
    """Bad input: a malformed suite, an unknown algorithm, an invalid hyperparameter...

    The message always names where the problem is (a file or a command-line flag) and the field,
    then what is wrong and, where it helps, what is allowed. It is raised before any compute or
    any write, so nothing already on disk is touched.
    """

    def __init__(self, where: str, field: str | None, problem: str):
        self.where, self.field, self.problem = str(where), field, problem
        super().__init__(self.one_line())

    def one_line(self) -> str:
        parts = [self.where] + ([self.field] if self.field else []) + [self.problem]
        # where (a path) keeps up to 1,000 characters; the field and problem up to MAX_PART each
        return ": ".join(_one_line(str(p), 1000 if i == 0 else MAX_PART) for i, p in enumerate(parts))


# every character str.splitlines() breaks on, so the message is one line wherever it is printed
_LINE_BREAKS = re.compile("[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]+")
_CONTROL = re.compile("[\x00-\x08\x0e-\x1b\x1f\x7f]")  # other control characters (terminal escapes)
MAX_PART = 300  # characters of one part (file, field, problem) of the message


def _one_line(text: str, limit: int = MAX_PART) -> str:
    text = _CONTROL.sub("?", _LINE_BREAKS.sub(" ", text))
    return text if len(text) <= limit else text[:limit - 1] + "…"


def short_repr(value, limit: int = 60) -> str:
    """``repr`` bounded in time and length, for values quoted in messages: a huge or deeply shared
    structure (a YAML alias bomb, a megabyte string) is abbreviated, never expanded."""
    import reprlib

    r = reprlib.Repr()
    r.maxstring = r.maxother = limit
    r.maxlist = r.maxtuple = r.maxdict = r.maxset = 6
    r.maxlevel = 3
    text = r.repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


class Diverged(Exception):
    """A training run left the region where its numbers mean anything (NaN/inf loss, exploding
    gradients or KL). The run is recorded as `diverged` with the step and the reason."""

    def __init__(self, step: int, reason: str):
        self.step, self.reason = step, reason
        super().__init__(f"diverged at step {step}: {reason}")
