"""Typed ``KEY=VALUE`` options, one mechanism for datasets, AU methods and the command line;
and the checks of the role, domain and seed a dataset's ``samples`` is asked for.

A class that mixes in :class:`Options` declares its options as typed settings: the
fields of a dataclass (the datasets) or the keyword-only parameters of ``__init__`` (the
AU methods) whose annotated type is ``bool``, ``int``, ``float`` or ``str``. It then
offers ``options()`` (their current values) and ``configure(**options)`` (a copy with
some changed), which converts a command line's strings (``--data-option size=32``,
``--au-option beta=2.5e-3``) to the annotated type with :func:`convert`.

Example
-------
>>> from uqeval_torch.au.prob_unet import ProbUNet
>>> ProbUNet().configure(beta="2.5e-3").beta
0.0025
>>> ProbUNet.option_types()["warmup_epochs"]
<class 'int'>
"""

from __future__ import annotations

import dataclasses
import inspect
import numbers
import os
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, Self

from uqeval import UQEvalError

#: The types an option may have, and how a message names a value of each.
OPTION_TYPES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def convert(owner: str, option: str, value: Any, kind: type) -> Any:
    """``value`` as ``kind``: a command line's string converted, other values checked.

    ``owner`` names what the option belongs to in the message (``dataset 'lidc'``,
    ``AU method 'ssn'``). An integer is accepted for a float, ``true``/``false``/``1``/``0``
    for a bool. A string is stripped and a path made a string; any other value for a
    string option is left for the owner to refuse with its own words (``a folder path``).

    Raises
    ------
    UQEvalError
        ``option 'size' of dataset 'lidc' must be an integer, got 'big'``.
    """
    wrong = f"option {option!r} of {owner} must be {OPTION_TYPES[kind]}, got {value!r}"
    if kind is str:
        # What a string option means (a folder, one of some choices) is the owner's to check.
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        return value.strip() if isinstance(value, str) else value
    if isinstance(value, str):
        text = value.strip()
        try:
            if kind is bool:
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(text)
                return text.lower() in ("true", "1")
            return kind(text)
        except ValueError:
            raise UQEvalError(wrong) from None
    if kind is float and isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise UQEvalError(wrong)
    return value


class Options:
    """Mixin: typed options, :meth:`options` and :meth:`configure`, for datasets and AU methods.

    The class keeps each option as an attribute of the same name; its ``name`` and
    :attr:`kind` name it in messages (``dataset 'lidc'``).
    """

    #: What the class is, for messages: ``"dataset"``, ``"AU method"``.
    kind: ClassVar[str] = "AU method"
    name: str

    @classmethod
    def option_types(cls) -> dict[str, type]:
        """Each option and its type, in declaration order."""
        if dataclasses.is_dataclass(cls):
            hints = typing.get_type_hints(cls)
            names = [field.name for field in dataclasses.fields(cls) if field.init and not field.name.startswith("_")]
        else:
            hints = typing.get_type_hints(cls.__init__)
            parameters = inspect.signature(cls.__init__).parameters.values()
            names = [parameter.name for parameter in parameters if parameter.kind is inspect.Parameter.KEYWORD_ONLY]
        return {name: hints[name] for name in names if hints.get(name) in OPTION_TYPES}

    def options(self) -> dict[str, Any]:
        """The options and their current values (e.g. to store in a run's JSON)."""
        return {name: getattr(self, name) for name in self.option_types()}

    def configure(self, **options: Any) -> Self:
        """A copy with ``options`` changed; strings (from a command line) are converted to the option's type.

        Raises
        ------
        UQEvalError
            For an unknown option (the message lists the known ones) or a value of the
            wrong type or that the class refuses.
        """
        owner = f"{self.kind} {self.name!r}"
        types = self.option_types()
        refuse_unknown(owner, options, types)
        changed = {option: convert(owner, option, value, types[option]) for option, value in options.items()}
        try:
            if dataclasses.is_dataclass(self):
                return dataclasses.replace(self, **changed)
            parameters = inspect.signature(type(self).__init__).parameters.values()
            settings = {p.name: getattr(self, p.name) for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}
            return type(self)(**{**settings, **changed})
        except UQEvalError:
            raise
        except ValueError as error:
            raise UQEvalError(f"{owner}: {error}") from None


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
