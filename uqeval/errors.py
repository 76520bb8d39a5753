"""The one exception type that uqeval raises for bad input."""

from __future__ import annotations


class UQEvalError(ValueError):
    """Bad input: a store, an array or an argument that breaks the uqeval contract.

    The message names what is wrong and where (variable, dim, image id). The CLI turns
    it into one line on stderr and exit code 2, without a traceback.

    Attributes
    ----------
    parameter : str or None
        The argument of the function called that is at fault (``tasks``,
        ``aggregations``, ``preset``, ``scheduler``, …), when it is one; a front end
        names it in its own terms (the CLI as its flag).
    """

    def __init__(self, message: str, *, parameter: str | None = None) -> None:
        super().__init__(message)
        self.parameter = parameter
