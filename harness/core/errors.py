"""Errors a user can fix. The CLI prints them as one line and exits with code 2."""
from __future__ import annotations


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
        return ": ".join(p.replace("\n", " ") for p in parts)


class Diverged(Exception):
    """A training run left the region where its numbers mean anything (NaN/inf loss, exploding
    gradients or KL). The run is recorded as `diverged` with the step and the reason."""

    def __init__(self, step: int, reason: str):
        self.step, self.reason = step, reason
        super().__init__(f"diverged at step {step}: {reason}")
