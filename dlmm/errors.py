"""The one error type for bad input: it names the file, the problem and the fix."""

from __future__ import annotations

__all__ = ["InputError"]


class InputError(ValueError):
    """Bad input, reported as one line: ``FILE: FIELD: problem. Fix: ...``.

    Parameters
    ----------
    source : the file (or argument) at fault.
    problem : what is wrong, naming the field.
    fix : what the user should do.
    """

    def __init__(self, source: str, problem: str, fix: str):
        self.source, self.problem, self.fix = str(source), problem, fix
        super().__init__(f"{source}: {problem}. Fix: {fix}")

    def __reduce__(self):  # raised in a Dask task, it travels back to the client pickled
        return type(self), (self.source, self.problem, self.fix)
