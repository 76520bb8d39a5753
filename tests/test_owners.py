"""Whose scratch folder is it, and has that run gone (:mod:`uqeval.owners`)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from uqeval.owners import OWNER_FILE, mark_owner, owner_gone, process_start, remove_stale, this_owner


def dead_pid() -> int:
    """The id of a process that has ended."""
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True).stdout)


def marked(folder, **owner):
    folder.mkdir()
    (folder / OWNER_FILE).write_text(json.dumps({**this_owner(), **owner}))
    return folder


def test_a_folder_of_this_run_is_not_stale(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    mark_owner(folder)
    assert json.loads((folder / OWNER_FILE).read_text())["pid"] == os.getpid()
    assert not owner_gone(folder)


def test_a_folder_of_an_ended_run_is_stale(tmp_path):
    assert owner_gone(marked(tmp_path / "dead", pid=dead_pid(), started=None))


@pytest.mark.skipif(process_start(os.getpid()) is None, reason="the system does not say when a process started")
def test_a_reused_process_id_is_seen(tmp_path):
    """The id is alive (this process) but its start time differs: another process had it."""
    assert owner_gone(marked(tmp_path / "reused", started="1"))


@pytest.mark.parametrize(
    "mark",
    [
        {"host": socket.gethostname() + "-elsewhere"},  # another host on a shared disk: cannot be checked
        {"pid": "12"},
        {"pid": True},
    ],
)
def test_what_cannot_be_checked_is_kept(tmp_path, mark):
    assert not owner_gone(marked(tmp_path / "other", **{"pid": dead_pid(), **mark}))


def test_unmarked_or_unreadable_folders_are_kept(tmp_path):
    (tmp_path / "unmarked").mkdir()
    assert not owner_gone(tmp_path / "unmarked")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / OWNER_FILE).write_text("{not json")
    assert not owner_gone(tmp_path / "bad")


def test_remove_stale_removes_only_stale_folders_with_the_prefix(tmp_path):
    gone = dead_pid()
    stale = marked(tmp_path / "scratch-1", pid=gone)
    (stale / "big.npz").write_bytes(b"0" * 1000)
    live = marked(tmp_path / "scratch-2")
    other = marked(tmp_path / "other-1", pid=gone)
    (tmp_path / "scratch-file").write_text("")
    assert remove_stale(tmp_path, "scratch-") == [stale]
    assert not stale.exists() and live.exists() and other.exists()
    assert remove_stale(tmp_path / "absent", "scratch-") == []
