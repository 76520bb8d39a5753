"""A scheduler address checked before ``dask.distributed`` connects to it.

``distributed`` reads the first message of a peer by its 8-byte length prefix and
allocates that many bytes before reading them, without a bound. A server that is not a
dask scheduler (a web server, a database, anything on the wrong port) answers with
bytes that read as an absurd length, and the client tries to allocate exabytes. So
before the client connects, :func:`check_scheduler` reads what a dask scheduler sends
first, its handshake, over a socket of its own and refuses whatever does not look
like one.
"""

from __future__ import annotations

import socket
import struct

from uqeval.errors import UQEvalError

#: Seconds a scheduler has to connect and send its handshake (the client's own timeout).
HANDSHAKE_TIMEOUT = 10.0
#: Bytes a handshake may announce. A scheduler's is a few hundred bytes of msgpack.
MAX_HANDSHAKE_BYTES = 2**20
#: The length prefix of a message: one unsigned 64-bit integer, in the byte order distributed uses (native).
_LENGTH = struct.Struct("Q")


def check_scheduler(address: str, timeout: float | None = None) -> None:
    """Refuse ``address`` unless the server there opens as a dask scheduler does.

    A dask server writes its handshake as soon as it accepts a connection: a length
    prefix ``n``, then ``n`` bytes that begin with the number of frames and each
    frame's length. This reads the prefix and the frames' lengths, each bounded by
    :data:`MAX_HANDSHAKE_BYTES`, and sends nothing. Only ``tcp://`` addresses (and
    addresses without a scheme, which dask reads as tcp) are checked: a TLS or
    websocket peer has to complete its own protocol's handshake first.

    Raises
    ------
    UQEvalError
        With ``parameter="scheduler"``: the address cannot be reached, or the server
        says nothing within ``timeout`` seconds (default :data:`HANDSHAKE_TIMEOUT`) or something that is not a dask
        handshake.
    """
    from distributed.comm.addressing import parse_address, parse_host_port

    timeout = HANDSHAKE_TIMEOUT if timeout is None else timeout
    try:
        scheme, location = parse_address(address)
        if scheme != "tcp":
            return
        host, port = parse_host_port(location, default_port=8786)
    except ValueError as error:
        raise UQEvalError(f"scheduler {address}: not an address ({error})", parameter="scheduler") from None
    try:
        with socket.create_connection((host, port), timeout=timeout) as connection:
            connection.settimeout(timeout)
            (announced,) = _LENGTH.unpack(_read(connection, _LENGTH.size))
            if announced < _LENGTH.size or announced > MAX_HANDSHAKE_BYTES:
                raise _not_dask(address, f"its first 8 bytes announce a message of {announced} bytes")
            message = _read(connection, announced)
    except TimeoutError:
        raise _not_dask(address, f"it sent no handshake within {timeout:g} s") from None
    except (OSError, EOFError) as error:
        raise UQEvalError(f"scheduler {address}: cannot connect ({error})", parameter="scheduler") from None
    (n_frames,) = _LENGTH.unpack_from(message)
    if _LENGTH.size * (1 + n_frames) > len(message):
        raise _not_dask(address, f"its handshake announces {n_frames} frames in {announced} bytes")
    lengths = struct.unpack_from(f"{n_frames}Q", message, _LENGTH.size)
    if sum(lengths) > MAX_HANDSHAKE_BYTES:
        raise _not_dask(address, f"its handshake announces frames of {sum(lengths)} bytes")


def _read(connection: socket.socket, n: int) -> bytes:
    """Exactly ``n`` bytes from ``connection``; EOFError if it closes first."""
    data = bytearray()
    while len(data) < n:
        chunk = connection.recv(min(n - len(data), 65536))
        if not chunk:
            raise EOFError("the server closed the connection")
        data += chunk
    return bytes(data)


def _not_dask(address: str, why: str) -> UQEvalError:
    return UQEvalError(
        f"scheduler {address}: the server there is not a dask scheduler ({why}); check the address and port",
        parameter="scheduler",
    )
