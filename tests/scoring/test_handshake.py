"""A ``--scheduler`` address is checked before dask connects: a server that is not a dask
scheduler is refused in one line, before anything it sends is allocated."""

from __future__ import annotations

import socket
import struct
import sys
import threading
from collections.abc import Iterator

import pytest
from helpers import write_synthetic_store

from uqeval import UQEvalError, score
from uqeval.scoring import handshake

pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_synthetic_store(tmp_path_factory.mktemp("handshake") / "cube.zarr", n_images=8, size=16)


def serve(greeting: bytes) -> Iterator[str]:
    """A server on localhost that writes ``greeting`` to whoever connects, then waits."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def answer() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            with connection:
                connection.sendall(greeting)
                stop.wait(5)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        yield f"tcp://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        server.close()


@pytest.fixture
def http_server():
    """An HTTP server's answer: its first 8 bytes read as a length of about 3 EiB."""
    yield from serve(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")


def test_a_server_that_is_not_dask_is_refused_before_anything_is_allocated(store, http_server):
    announced = struct.unpack("Q", b"HTTP/1.1")[0]
    assert announced > 2**61  # what distributed would allocate, in bytes
    with pytest.raises(UQEvalError) as raised:
        score(store, scheduler=http_server)
    assert str(raised.value) == (
        f"scheduler {http_server}: the server there is not a dask scheduler (its first 8 bytes announce a message "
        f"of {announced} bytes); check the address and port"
    )
    assert raised.value.parameter == "scheduler"


@pytest.mark.parametrize(
    ("greeting", "why"),
    [
        (struct.pack("Q", 3), "announce a message of 3 bytes"),
        (struct.pack("QQ", 8, 2**40), "announces 1099511627776 frames in 8 bytes"),
        (struct.pack("QQQ", 16, 1, 2**50), "announces frames of 1125899906842624 bytes"),
    ],
)
def test_a_handshake_that_announces_too_much_is_refused(greeting, why):
    for address in serve(greeting):
        with pytest.raises(UQEvalError, match="is not a dask scheduler") as raised:
            handshake.check_scheduler(address, timeout=5)
        assert why in str(raised.value)


def test_a_server_that_says_nothing_is_refused_after_the_timeout():
    for address in serve(b""):
        with pytest.raises(UQEvalError, match=r"not a dask scheduler \(it sent no handshake within 0\.3 s\)"):
            handshake.check_scheduler(address, timeout=0.3)


def test_a_dask_scheduler_passes_the_check():
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=0, processes=False, protocol="tcp://", dashboard_address=None, scheduler_port=0
    ) as cluster:
        handshake.check_scheduler(cluster.scheduler_address)  # raises nothing
        handshake.check_scheduler(cluster.scheduler_address.removeprefix("tcp://"))


def test_without_distributed_the_message_names_the_extra(store, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` raises ImportError
    with pytest.raises(UQEvalError) as raised:
        score(store, scheduler="tcp://127.0.0.1:8786")
    assert str(raised.value) == (
        "a scheduler needs dask.distributed, which is not installed: pip install 'uqeval[cluster]'"
    )
    assert raised.value.parameter == "scheduler"
