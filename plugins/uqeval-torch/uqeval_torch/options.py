"""The checks plugin parts make of what they are given: options (datasets, AU methods), and
the role, domain and seed a dataset's ``samples`` is asked for."""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping, Sequence
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


def refuse_bad_request(
    owner: str, role: str, domain: str, seed: Any, roles: Sequence[str], domains: Sequence[str]
) -> None:
    """Raise for a ``role`` or ``domain`` not among ``roles``/``domains``, or a ``seed`` that
    is not a non-negative integer, naming ``owner`` (``dataset 'lidc'``) and what it knows."""
    if role not in roles:
        raise UQEvalError(f"unknown role {role!r} of {owner}; roles: {', '.join(roles)}")
    if domain not in domains:
        raise UQEvalError(f"unknown domain {domain!r} of {owner}; domains: {', '.join(domains)}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise UQEvalError(f"seed of {owner} must be a non-negative integer, got {seed!r}")
