"""The ``--cases`` file: each case's domain and role, as a CSV with columns ``case,domain,role``."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from uqeval.errors import UQEvalError
from uqeval.names import ID_DOMAIN, ROLES, TEST

#: The columns of a cases file, in any order; ``domain`` and ``role`` may be left empty.
COLUMNS = ("case", "domain", "role")


@dataclass(frozen=True)
class CaseInfo:
    """A case's domain (``id`` or an OOD shift) and role (``calibration`` or ``test``)."""

    domain: str = ID_DOMAIN
    role: str = TEST


def read_cases(path: Path | None) -> dict[str, CaseInfo]:
    """The cases listed in ``path`` (none without a file); an unlisted case is ``id``/``test``.

    Raises
    ------
    UQEvalError
        For a missing or unreadable file, missing columns, a case listed twice, or a role
        other than ``calibration`` and ``test`` (naming the line).
    """
    if path is None:
        return {}
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as file:
            reader = csv.DictReader(file)
            rows = list(reader)
            header = [name.strip() for name in reader.fieldnames or []]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UQEvalError(f"--cases {path}: cannot be read ({type(error).__name__}: {error})") from None
    if "case" not in header:
        raise UQEvalError(f"--cases {path}: has the columns {','.join(header) or 'none'}; expected {','.join(COLUMNS)}")
    cases: dict[str, CaseInfo] = {}
    for line, row in enumerate(rows, start=2):
        row = {(key or "").strip(): value for key, value in row.items()}
        case = (row.get("case") or "").strip()
        if not case:
            raise UQEvalError(f"--cases {path}, line {line}: the case is empty")
        if case in cases:
            raise UQEvalError(f"--cases {path}, line {line}: case {case!r} is listed twice")
        domain = (row.get("domain") or "").strip() or ID_DOMAIN
        role = (row.get("role") or "").strip() or TEST
        if role not in ROLES:
            raise UQEvalError(f"--cases {path}, line {line}: role {role!r} of case {case!r}; roles are {ROLES}")
        cases[case] = CaseInfo(domain, role)
    return cases


def check_listed(listed: dict[str, CaseInfo], found: Iterable[str], path: Path | None, where: str) -> None:
    """Refuse a cases file that lists a case the predictions lack (naming it and where it was looked for)."""
    missing = sorted(set(listed) - set(found))
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UQEvalError(f"--cases {path}: lists case {missing[0]!r}{more}, which {where} lacks")
