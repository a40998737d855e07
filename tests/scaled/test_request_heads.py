"""The server reads request heads strictly, as a proxy in front might read them.

A request whose framing a proxy could read otherwise than the server (the
classic request-smuggling shapes) is refused with 400 and its connection
closed, so nothing smuggled in its body runs; well-formed requests, chunked
bodies included, are served as before.
"""

import json
import socket
from urllib.parse import urlsplit

import pytest

from tests.scaled.servers import embedded_instance

pytestmark = pytest.mark.scaled

SIGN_UP = b'{"username": "%s", "password": "correct horse battery"}'


@pytest.fixture(scope="module")
def server(sqlite_template, tmp_path_factory):
    with embedded_instance("heads", sqlite_template, tmp_path_factory.mktemp("heads")) as instance:
        yield instance


def exchange(url: str, request: bytes) -> bytes:
    """Send raw bytes on a new connection; everything the server sends until it closes."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as connection:
        connection.sendall(request)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    return received


def sign_up_request(framing: bytes, body: bytes) -> bytes:
    return (
        b"POST /v1/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + framing
        + b"Connection: close\r\n\r\n"
        + body
    )


def statuses(answer: bytes) -> list[bytes]:
    """The status codes of every response in ``answer``."""
    return [line.split()[1] for line in answer.split(b"\r\n") if line.startswith(b"HTTP/1.")]


def already_signed_up(url: str, username: str) -> bool:
    """Whether ``username`` was taken before (signing it up now says so with 409)."""
    body = SIGN_UP % username.encode()
    answer = exchange(url, sign_up_request(b"Content-Length: %d\r\n" % len(body), body))
    return statuses(answer) == [b"409"]


def chunked(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


def test_well_formed_heads_are_served(server):
    """Spaces around a value, a tab within one, bytes beyond ASCII, a hundred
    fields, and a chunked body: all read as before."""
    body = SIGN_UP % b"chunky"
    answer = exchange(server.url, sign_up_request(b"Transfer-Encoding: chunked\r\n", chunked(body)))
    assert statuses(answer) == [b"201"]

    many = b"".join(b"X-Field-%d: value\r\n" % n for n in range(96))
    answer = exchange(
        server.url,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Spaced:   a\tb  \r\nX-Latin: caf\xe9\r\n"
        + many
        + b"Connection: close\r\n\r\n",
    )
    assert statuses(answer) == [b"200"]
    assert json.loads(answer.partition(b"\r\n\r\n")[2]) == {"status": "ok"}


# Each head carries a sign-up in a body a proxy in front could frame otherwise
# (gevent's own reading of heads ran all but one of them).
SMUGGLING = {
    "length and chunked": b"Content-Length: %(length)d\r\nTransfer-Encoding: chunked\r\n",
    "two lengths": b"Content-Length: %(length)d\r\nContent-Length: 0\r\n",
    "a signed length": b"Content-Length: +%(length)d\r\n",
    "an underscored length": b"Content-Length: 0_%(length)d\r\n",
    "a coding before chunked": b"Transfer-Encoding: gzip, chunked\r\n",
    "a space before the colon": b"Content-Length : %(length)d\r\n",
    "a folded field": b"Content-Length: %(length)d\r\nX-Folded: a\r\n b\r\n",
}


@pytest.mark.parametrize("framing", SMUGGLING.values(), ids=SMUGGLING.keys())
def test_heads_a_proxy_could_frame_otherwise_are_refused(server, framing):
    username = f"smuggled{list(SMUGGLING.values()).index(framing)}"
    body = SIGN_UP % username.encode()
    if b"chunked" in framing:
        body = chunked(body)
    answer = exchange(server.url, sign_up_request(framing % {b"length": len(body)}, body))

    assert statuses(answer) == [b"400"]
    assert not already_signed_up(server.url, username), "the refused request's body was run"


MALFORMED = {
    "a line too long": b"X-Long: " + b"a" * 9000 + b"\r\n",
    "too many fields": b"X-Field: value\r\n" * 101,
    "a control character": b"X-Null: a\x00b\r\n",
    "no colon": b"Not a field\r\n",
}


@pytest.mark.parametrize("fields", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_heads_are_refused(server, fields):
    answer = exchange(server.url, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
    assert statuses(answer) == [b"400"]
