"""Method options (``uqeval train --au-option beta=2.5e-3``): a method's scalar constructor settings.

A method class that mixes in :class:`MethodOptions` offers ``options()`` (its scalar
keyword settings and their values) and ``configure(**options)`` (a copy with some changed,
strings from a command line converted to the type of the current value), as datasets do.
Only keyword parameters whose value is a bool, int, float or str are options; ranges and
other structured settings stay constructor arguments.

Example
-------
>>> from uqeval_torch.au.prob_unet import ProbUNet
>>> ProbUNet().configure(beta="2.5e-3").beta
0.0025
"""

from __future__ import annotations

import inspect
from typing import Any, Self

from uqeval.errors import UQEvalError
from uqeval_torch.options import refuse_unknown

_SCALARS = (bool, int, float, str)


class MethodOptions:
    """Mixin: :meth:`options` and :meth:`configure` from the class's keyword-only ``__init__`` parameters.

    The class must keep each such parameter as an attribute of the same name.
    """

    name: str

    def options(self) -> dict[str, Any]:
        """The method's scalar options and their current values, in constructor order."""
        parameters = inspect.signature(type(self).__init__).parameters.values()
        found = {}
        for parameter in parameters:
            if parameter.kind is inspect.Parameter.KEYWORD_ONLY:
                value = getattr(self, parameter.name)
                if isinstance(value, _SCALARS):
                    found[parameter.name] = value
        return found

    def configure(self, **options: Any) -> Self:
        """A copy with ``options`` changed; strings (from a command line) are converted.

        Raises
        ------
        UQEvalError
            For an unknown option (the message lists the known ones) or a value the
            method refuses.
        """
        known = self.options()
        refuse_unknown(f"AU method {self.name!r}", options, known)
        for option, value in options.items():
            options[option] = _parse(self.name, option, value, type(known[option]))
        try:
            return type(self)(**{**known, **options})
        except ValueError as error:
            raise UQEvalError(f"AU method {self.name!r}: {error}") from None


_NOUNS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _parse(method: str, option: str, value: Any, kind: type) -> Any:
    """``value`` as ``kind``: a command line's string converted, other values checked."""
    wrong = f"option {option!r} of AU method {method!r} must be {_NOUNS[kind]}, got {value!r}"
    if isinstance(value, str) and kind is not str:
        text = value.strip()
        try:
            if kind is bool:
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(text)
                return text.lower() in ("true", "1")
            return kind(text)
        except ValueError:
            raise UQEvalError(wrong) from None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise UQEvalError(wrong)
    return value
