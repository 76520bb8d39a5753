"""The one exception type that uqeval raises for bad input."""

from __future__ import annotations


class UQEvalError(ValueError):
    """Bad input: a store, an array or an argument that breaks the uqeval contract.

    The message names what is wrong and where (variable, dim, image id). The CLI turns
    it into one line on stderr and exit code 2, without a traceback.
    """
