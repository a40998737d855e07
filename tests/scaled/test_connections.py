"""One client's idle and slow connections do not starve everyone else.

A gevent worker spends a greenlet, not a process, on each connection, so a
client that opens hundreds of connections and sends nothing, or drips a request
one byte at a time, leaves the worker free to serve others.
"""

import contextlib
import json
import signal
import socket
import struct
import threading
import time
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


# Linux's struct tcp_info: tcpi_data_segs_in, the segments received that carried data.
TCP_INFO_DATA_SEGS_IN = 152


def data_segments_received(connection: socket.socket) -> int:
    info = connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return struct.unpack_from("I", info, TCP_INFO_DATA_SEGS_IN)[0]


def test_a_short_answer_arrives_in_one_segment(instances):
    """Head and body in one TCP segment: one read for the client, and one system
    call for the server, where gevent's server sent them apart."""
    with connect(instances[0].url) as connection:
        for path in (b"/healthz", b"/v1/users/me", b"/v1/nowhere"):
            before = data_segments_received(connection)
            connection.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            head, body = read_answer(connection)
            assert head.split()[1] in (b"200", b"401", b"404")
            assert json.loads(body)
            assert data_segments_received(connection) - before == 1, path
        before = data_segments_received(connection)
        connection.sendall(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # a head alone
        received = b""
        while not received.endswith(b"\r\n\r\n"):
            received += connection.recv(65536)
        assert received.startswith(b"HTTP/1.1 200")
        assert data_segments_received(connection) - before == 1


def read_answer(connection: socket.socket) -> tuple[bytes, bytes]:
    """One answer with a Content-Length, read off a kept-alive connection."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += connection.recv(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += connection.recv(65536)
    return head, body


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


@contextlib.contextmanager
def dripping(connection: socket.socket, every_s: float):
    """Send a request's head one byte every ``every_s``, for ever, during the block."""
    stop = threading.Event()

    def drip() -> None:
        connection.sendall(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
        while not stop.wait(every_s):
            try:
                connection.send(b"a")
            except OSError:
                return

    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    try:
        yield
    finally:
        stop.set()
        dripper.join(5)


def test_connections_left_idle_are_closed(sqlite_template, tmp_path):
    """A kept-alive connection that sends no next request, one whose request stops
    halfway, and one that drips its request a byte at a time are closed after
    KEEPALIVE_S: none holds its greenlet and socket for ever, nor fills the log
    with tracebacks."""
    with (
        embedded_instance("idle", sqlite_template, tmp_path, KEEPALIVE_S="1") as server,
        connect(server.url) as kept_alive,
        connect(server.url) as stalled,
        connect(server.url) as drip_fed,
        dripping(drip_fed, every_s=0.2),
    ):
        kept_alive.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        stalled.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")

        answered = read_until_closed(kept_alive, bound_s=30)
        assert answered is not None, "the kept-alive connection was never closed"
        assert answered.startswith(b"HTTP/1.1 200")
        assert read_until_closed(stalled, bound_s=30) is not None
        assert read_until_closed(drip_fed, bound_s=30) is not None
        assert "Traceback" not in server.log(), "a client too slow is not the server's error"


STALLED_SENDS = 9  # more than a process admits at once (ADMITTED_REQUESTS)


def test_sends_whose_bodies_stall_hold_nothing_others_need(sqlite_template, tmp_path):
    """Phones whose uploads stall halfway (a network switch mid-send) hold no turn
    to work and no database connection while their bodies do not come, so the
    embedded server (one SQLite connection) serves everyone else; after
    KEEPALIVE_S without a byte their connections are closed."""
    with (
        embedded_instance("stalled", sqlite_template, tmp_path, KEEPALIVE_S="3") as server,
        ApiClient(server.url) as client,
        contextlib.ExitStack() as connections,
    ):
        ann, ben = sign_up(client, "ann"), sign_up(client, "ben")
        chat = open_direct(client, ann, ben)
        stalled = [connections.enter_context(connect(server.url)) for _ in range(STALLED_SENDS)]
        for connection in stalled:
            connection.sendall(
                f"POST /v1/conversations/{chat}/messages HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {ann.token}\r\nContent-Type: application/json\r\n"
                'Content-Length: 100\r\n\r\n{"text": "half'.encode()
            )

        assert send(client, ben, chat, "meanwhile").status_code == 201
        assert message_texts(poll(client, ann)) == ["meanwhile"]
        for connection in stalled:
            assert read_until_closed(connection, bound_s=30) == b"", "answered, or never closed"
        assert "Traceback" not in server.log(), "a client too slow is not the server's error"


# Under gunicorn's graceful_timeout (30 s), which the shutdown would otherwise wait out.
SHUTDOWN_BOUND_S = 15


def test_a_shutdown_closes_connections_waiting_for_a_request(sqlite_template, tmp_path):
    """SIGTERM: a kept-alive connection waiting for its next request (a load
    balancer keeps several) is closed at once, and one that has sent nothing yet
    a second later, where both held the shutdown up until gunicorn's graceful
    timeout; a request already begun is served, its answer closing its connection."""
    with (
        embedded_instance("shutdown", sqlite_template, tmp_path) as server,
        connect(server.url) as kept_alive,
        connect(server.url) as unused,
        connect(server.url) as begun,
    ):
        kept_alive.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_answer(kept_alive)[0].startswith(b"HTTP/1.1 200")
        begun.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # its head's end still to come

        server.process.send_signal(signal.SIGTERM)
        assert read_until_closed(kept_alive, SHUTDOWN_BOUND_S) == b""
        assert read_until_closed(unused, SHUTDOWN_BOUND_S) == b""
        begun.sendall(b"\r\n")
        answered = read_until_closed(begun, SHUTDOWN_BOUND_S)
        assert server.wait_for_exit(SHUTDOWN_BOUND_S) == 0

    assert answered is not None and answered.startswith(b"HTTP/1.1 200")
    assert b"Connection: close" in answered
    assert "graceful timeout" not in server.log()


BIG_TEXT = "x" * 100_000
# Past what the kernel buffers for a connection on loopback (4 MiB at most), so
# most of the answer can only go out as the client reads it.
BIG_MESSAGES = 60


def test_a_slow_client_gets_a_long_answer_whole(sqlite_template, tmp_path):
    """KEEPALIVE_S bounds waiting for a request, not sending the answer: a client
    reading 6 MB of history slowly (over several seconds, with KEEPALIVE_S=1)
    still gets all of it."""
    with embedded_instance("slow", sqlite_template, tmp_path, KEEPALIVE_S="1") as server:
        with ApiClient(server.url) as client:
            ann, ben = sign_up(client, "ann"), sign_up(client, "ben")
            chat = open_direct(client, ann, ben)
            for _ in range(BIG_MESSAGES):
                assert send(client, ann, chat, BIG_TEXT).status_code == 201
        with socket.socket() as reader:
            reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)  # feel every pause
            reader.connect((urlsplit(server.url).hostname, urlsplit(server.url).port))
            reader.sendall(
                f"GET /v1/conversations/{chat}/messages?limit={BIG_MESSAGES} HTTP/1.1\r\n"
                "Host: x\r\n"
                f"Authorization: Bearer {ben.token}\r\nConnection: close\r\n\r\n".encode()
            )
            received, since_pause = b"", 0
            while chunk := reader.recv(64 * 1024):
                received += chunk
                since_pause += len(chunk)
                if since_pause >= 64 * 1024:  # at most 1.3 MB a second: over 4 s for it all
                    time.sleep(0.05)
                    since_pause = 0

    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    texts = [message["text"] for message in json.loads(body)["messages"]]
    assert texts == [BIG_TEXT] * BIG_MESSAGES
