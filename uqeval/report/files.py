"""Atomic writes of report files: JSON, CSV and bytes, never half written."""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from uqeval.errors import UQEvalError
from uqeval.jsonable import json_ready
from uqeval.text import printable, spreadsheet_text


def ensure_writable(folder: str | os.PathLike[str]) -> Path:
    """Create ``folder`` if needed and prove a file can be written there.

    Called before a long job so that an unwritable output folder fails at once.

    Raises
    ------
    UQEvalError
        Naming the folder and the reason.
    """
    folder = Path(folder)
    try:
        if folder.exists() and not folder.is_dir():
            raise UQEvalError(f"{folder}: exists and is not a folder")
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise UQEvalError(f"{folder}: cannot write the report there ({error.strerror or error})") from None
    return folder


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically.

    The bytes go to a hidden temporary file in the same folder, which then replaces
    ``path`` in one step: readers see the old file or the new one, never a partial one,
    and the temporary file is removed if anything fails.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    # os.open rather than tempfile: the file gets the usual permissions (0o666 less the umask), not 0o600.
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def json_bytes(value: Any) -> bytes:
    """``value`` as indented, standard JSON (NaN as ``null``) in UTF-8, with a final
    newline; non-ASCII characters as they are, except a lone surrogate (which a store's
    JSON metadata can hold but UTF-8 cannot), written as its JSON escape (``\\ud800``)."""
    text = json.dumps(json_ready(value), indent=2, ensure_ascii=False, allow_nan=False)
    # Only a lone surrogate fails to encode; inside a JSON string its backslash escape is JSON's own.
    return (text + "\n").encode("utf-8", "backslashreplace")


def write_json(path: str | os.PathLike[str], value: Any) -> Path:
    """Write ``value`` as :func:`json_bytes`, atomically."""
    return write_bytes(path, json_bytes(value))


def csv_text(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Rows as CSV text; NaN and ``None`` become empty cells, floats keep full precision.

    A text cell (an image id, a domain, a model) is written as text a spreadsheet cannot
    run: control characters escaped (:func:`uqeval.text.printable`), and a ``'`` before
    one that starts like a formula (``=``, ``+``, ``-``, ``@``;
    :func:`uqeval.text.spreadsheet_text`). Numbers are written as they are.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(column)) for column in columns])
    return buffer.getvalue()


def write_csv(path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> Path:
    """Write rows as CSV, atomically."""
    return write_bytes(path, csv_text(rows, columns).encode())


def _cell(value: Any) -> str:
    value = json_ready(value)
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return spreadsheet_text(printable(value))
    return str(value)
