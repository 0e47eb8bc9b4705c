"""The error types for bad input: each names the file (or option), the problem and the fix."""

from __future__ import annotations

import re

__all__ = ["InputError", "OptionError", "DlmmWarning"]


class InputError(ValueError):
    """Bad input, reported as one line: ``FILE: FIELD: problem. Fix: ...``.

    Parameters
    ----------
    source : the file (or argument) at fault.
    problem : what is wrong, naming the field.
    fix : what the user should do.
    """

    def __init__(self, source: str, problem: str, fix: str):
        # one line whatever the parts hold (a parser's message may span lines)
        self.source, self.problem, self.fix = (_one_line(str(source)), _one_line(problem),
                                               _one_line(fix))
        super().__init__(f"{self.source}: {self.problem}. Fix: {self.fix}")

    def __reduce__(self):  # raised in a Dask task, it travels back to the client pickled
        return type(self), (self.source, self.problem, self.fix)


def _one_line(text: str) -> str:
    return re.sub(r"\s*[\r\n]+\s*", " ", text).strip()


class OptionError(InputError):
    """A bad option value, named as the library names it (``max_missing``); the command
    line reports it under its flag (``--max-missing``) with :meth:`as_flag`."""

    def __init__(self, option: str, problem: str, fix: str):
        self.option = option
        super().__init__(f"option {option}", problem, fix)

    def __reduce__(self):
        return type(self), (self.option, self.problem, self.fix)

    def as_flag(self) -> str:
        """The message with the option written as its command-line flag."""
        return f"--{self.option.replace('_', '-')}: {self.problem}. Fix: {self.fix}"


class DlmmWarning(UserWarning):
    """Input that is used but looks unintended (e.g. covariates without an intercept)."""
