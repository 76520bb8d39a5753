"""The check every configurable plugin part (datasets, AU methods) makes of the options it is given."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from uqeval.errors import UQEvalError


def refuse_unknown(owner: str, options: Mapping[str, Any], known: Iterable[str]) -> None:
    """Raise for the first option of ``options`` not in ``known``, naming ``owner`` and the known ones.

    ``owner`` is what the options belong to, as a message names it: ``dataset 'lidc'``,
    ``AU method 'ssn'``.
    """
    known = list(known)
    unknown = [option for option in options if option not in known]
    if unknown:
        listed = ", ".join(known) or "none"
        raise UQEvalError(f"unknown option {unknown[0]!r} of {owner}; options: {listed}")
