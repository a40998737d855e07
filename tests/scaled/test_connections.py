"""One client's idle and slow connections do not starve everyone else.

A gevent worker spends a greenlet, not a process, on each connection, so a
client that opens hundreds of connections and sends nothing, or drips a request
one byte at a time, leaves the worker free to serve others.
"""

import contextlib
import socket
import threading
from urllib.parse import urlsplit

import pytest

from tests.factories import message_texts, open_direct, poll, send
from tests.scaled.client import ApiClient, sign_up
from tests.scaled.servers import embedded_instance

pytestmark = pytest.mark.scaled

IDLE_CONNECTIONS = 300
SLOW_CONNECTIONS = 20
DRIP_EVERY_S = 0.2  # a slow client sends one byte of its request this often
SLOW_REQUEST = b"POST /v1/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


def connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=5)


@contextlib.contextmanager
def hostile_client(url: str):
    """Hundreds of idle connections and a few that drip a request header, for the block."""
    idle = [connect(url) for _ in range(IDLE_CONNECTIONS)]
    slow = [connect(url) for _ in range(SLOW_CONNECTIONS)]
    stop = threading.Event()

    def drip() -> None:
        for byte in SLOW_REQUEST:
            if stop.wait(DRIP_EVERY_S):
                return
            for connection in slow:
                with contextlib.suppress(OSError):
                    connection.send(bytes([byte]))

    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    try:
        yield dripper.is_alive
    finally:
        stop.set()
        dripper.join(5)
        for connection in idle + slow:
            connection.close()


def test_idle_and_slow_connections_do_not_starve_others(instances):
    a, b = instances
    with (
        hostile_client(a.url) as still_dripping,
        ApiClient(a.url) as through_a,
        ApiClient(b.url) as through_b,
    ):
        ann, ben = sign_up(through_a, "ann"), sign_up(through_a, "ben")
        chat = open_direct(through_a, ann, ben)
        assert send(through_b, ann, chat, "still served").status_code == 201
        batch = poll(through_a, ben, timeout=5)
        served_while_dripping = still_dripping()

    assert message_texts(batch) == ["still served"]
    assert served_while_dripping, "the hostile client finished before the others were served"


def read_until_closed(connection: socket.socket, bound_s: float) -> bytes | None:
    """What the server sent before closing the connection; None if it was still
    open after ``bound_s``."""
    connection.settimeout(bound_s)
    received = b""
    try:
        while chunk := connection.recv(4096):
            received += chunk
    except TimeoutError:
        return None
    return received


def test_connections_left_idle_are_closed(sqlite_template, tmp_path):
    """A kept-alive connection that sends no next request, and one whose request
    stops halfway, are closed after KEEPALIVE_S: neither holds its greenlet and
    socket for ever."""
    with (
        embedded_instance("idle", sqlite_template, tmp_path, KEEPALIVE_S="1") as server,
        connect(server.url) as kept_alive,
        connect(server.url) as stalled,
    ):
        kept_alive.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        stalled.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")

        answered = read_until_closed(kept_alive, bound_s=30)
        assert answered is not None, "the kept-alive connection was never closed"
        assert answered.startswith(b"HTTP/1.1 200")
        assert read_until_closed(stalled, bound_s=30) is not None
