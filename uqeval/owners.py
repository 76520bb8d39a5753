"""Which run a scratch folder belongs to, and whether that run has gone.

A run marks each folder it makes for itself alone (the spill, a report folder being
written) with :data:`OWNER_FILE`: its host, process id and the process's start time. A
later run removes such a folder only when it is sure the owner has gone: the mark names
this host, and no process has that id, or the process that has it started at another
time (the id was reused). Folders marked by another host (a shared file system), folders
whose mark cannot be read and folders without a mark are left alone.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

#: The mark of a folder's owner, inside the folder.
OWNER_FILE = ".uqeval-owner.json"


def process_start(pid: int) -> str | None:
    """When process ``pid`` started, in clock ticks since boot (Linux ``/proc``); None
    where the system does not say (other systems, or no such process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces; field 22 is the start time.
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def this_owner() -> dict[str, object]:
    """This process as :data:`OWNER_FILE` records it."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "started": process_start(pid)}


def mark_owner(folder: Path) -> None:
    """Record this process as the owner of ``folder``."""
    (Path(folder) / OWNER_FILE).write_text(json.dumps(this_owner()) + "\n")


def owner_gone(folder: Path) -> bool:
    """Whether the run that marked ``folder`` has surely ended (see the module's rule).

    An unmarked folder, an unreadable mark or a mark of another host gives False.
    """
    try:
        owner = json.loads((Path(folder) / OWNER_FILE).read_text())
        host, pid, started = owner["host"], owner["pid"], owner.get("started")
    except (OSError, ValueError, TypeError, KeyError, RecursionError):
        return False
    if host != socket.gethostname() or not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, another user's
        return False
    now = process_start(pid)
    return started is not None and now is not None and now != started


def remove_stale(parent: Path, prefix: str) -> list[Path]:
    """Remove the folders in ``parent`` whose name starts with ``prefix`` and whose
    owner has gone (:func:`owner_gone`); returns those removed."""
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return []
    removed = []
    for entry in entries:
        if entry.name.startswith(prefix) and entry.is_dir(follow_symlinks=False) and owner_gone(Path(entry.path)):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(Path(entry.path))
    return removed
