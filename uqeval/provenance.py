"""What produced a run's numbers: the record ``scores.json`` keeps under ``provenance``."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from uqeval import __version__
from uqeval.jsonable import json_ready
from uqeval.plugins import BUILTIN, plugin_manager


def provenance_record(*, attrs: Mapping[str, Any] | None = None, eu_convention: str = "members") -> dict[str, Any]:
    """What produced a run's numbers, now: ``scores.json`` records it under ``provenance``.

    Parameters
    ----------
    attrs : mapping, optional
        The store's attributes (None or empty for arrays scored in memory).
    eu_convention : str
        ``members``, or ``samples-as-members`` for a cube with ``eu = 1``.

    Returns
    -------
    dict
        ``uqeval`` (its version); ``plugins``, one ``{name, distribution, version}`` per
        registered plugin besides the built-in one, in registration order (the version of
        the installed distribution, from :mod:`importlib.metadata`; ``None`` for a
        plugin registered in code); ``created``, the UTC time in ISO 8601 to the second
        (``2025-01-31T09:30:00+00:00``); ``store_attributes``, every attribute of the
        store; ``eu_convention``.
    """
    plugins = [
        {"name": info.name, "distribution": info.distribution, "version": info.version or None}
        for info in plugin_manager().info.values()
        if info.name != BUILTIN
    ]
    return {
        "uqeval": __version__,
        "plugins": plugins,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "store_attributes": json_ready(dict(attrs or {})),
        "eu_convention": eu_convention,
    }
