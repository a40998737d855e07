"""The server reads request heads strictly, as a proxy in front might read them.

A request whose framing a proxy could read otherwise than the server (the
classic request-smuggling shapes) is refused with 400 and its connection
closed, so nothing smuggled in its body runs; well-formed requests, chunked
bodies included, are served as before.
"""

import json
import socket
import struct
from urllib.parse import urlsplit

import pytest

from tests.scaled.servers import embedded_instance

pytestmark = pytest.mark.scaled

PASSWORD = b"correct horse battery"
SIGN_UP = b'{"username": "%s", "password": "' + PASSWORD + b'"}'
LONGEST_LINE = 8190  # bytes of a header line, its CRLF included


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


def request(method: bytes, path: bytes, fields: bytes, body: bytes = b"", version=b"1.1") -> bytes:
    return (
        method + b" " + path + b" HTTP/" + version + b"\r\nHost: x\r\n"
        b"Content-Type: application/json\r\n" + fields + b"Connection: close\r\n\r\n" + body
    )


def statuses(answer: bytes) -> list[bytes]:
    """The status codes of every response in ``answer``."""
    return [line.split()[1] for line in answer.split(b"\r\n") if line.startswith(b"HTTP/1.")]


def body_of(answer: bytes) -> dict:
    return json.loads(answer.partition(b"\r\n\r\n")[2])


def sign_up_status(url: str, username: str) -> bytes:
    """Sign ``username`` up in a plain request: 201, or 409 if it was taken before."""
    body = SIGN_UP % username.encode()
    answer = exchange(
        url, request(b"POST", b"/v1/users", b"Content-Length: %d\r\n" % len(body), body)
    )
    return statuses(answer)[0]


def chunked(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


def test_well_formed_heads_are_served(server):
    """A chunked body; then spaces and a tab around a value, bytes beyond ASCII,
    a line of the longest length and a hundred fields in all: read as meant."""
    sign_up = request(
        b"POST", b"/v1/users", b"Transfer-Encoding: chunked\r\n", chunked(SIGN_UP % b"chunky")
    )
    assert statuses(exchange(server.url, sign_up)) == [b"201"]
    log_in = b'{"username": "chunky", "password": "' + PASSWORD + b'"}'
    answer = exchange(
        server.url,
        request(b"POST", b"/v1/sessions", b"Content-Length: %d\r\n" % len(log_in), log_in),
    )
    token = body_of(answer)["token"].encode()

    longest = b"X-Longest: " + b"a" * (LONGEST_LINE - len(b"X-Longest: \r\n")) + b"\r\n"
    more = b"".join(b"X-Field-%d: value\r\n" % n for n in range(94))
    fields = b"Authorization: \t Bearer " + token + b" \t\r\nX-Latin: caf\xe9\r\n" + longest + more
    answer = exchange(server.url, request(b"GET", b"/v1/users/me", fields))

    assert statuses(answer) == [b"200"]
    assert body_of(answer)["username"] == "chunky"


# Each head carries a sign-up in a body a proxy in front could frame otherwise
# (gevent's own reading of heads ran all but one of them). HTTP/1.0 has no
# chunked bodies: a proxy speaking it would not read one.
SMUGGLING = {
    "length and chunked": b"Content-Length: %(length)d\r\nTransfer-Encoding: chunked\r\n",
    "two lengths": b"Content-Length: %(length)d\r\nContent-Length: 0\r\n",
    "a signed length": b"Content-Length: +%(length)d\r\n",
    "an underscored length": b"Content-Length: 0_%(length)d\r\n",
    "a bare CR before the length": b"Content-Length:\r%(length)d\r\n",
    "a coding before chunked": b"Transfer-Encoding: gzip, chunked\r\n",
    "a space before the colon": b"Content-Length : %(length)d\r\n",
    "a folded field": b"Content-Length: %(length)d\r\nX-Folded: a\r\n b\r\n",
    "chunked in HTTP/1.0": b"Transfer-Encoding: chunked\r\n",
}


@pytest.mark.parametrize("case", SMUGGLING.keys())
def test_heads_a_proxy_could_frame_otherwise_are_refused(server, case):
    username = f"smuggled{list(SMUGGLING).index(case)}"
    framing = SMUGGLING[case]
    body = SIGN_UP % username.encode()
    if b"chunked" in framing:
        body = chunked(body)
    version = b"1.0" if "HTTP/1.0" in case else b"1.1"
    fields = framing % {b"length": len(body)}
    answer = exchange(server.url, request(b"POST", b"/v1/users", fields, body, version))

    assert statuses(answer) == [b"400"]
    assert sign_up_status(server.url, username) == b"201", "the refused request's body was run"


MALFORMED = {
    "a line too long": b"X-Long: " + b"a" * (LONGEST_LINE - len(b"X-Long: \r\n") + 1) + b"\r\n",
    "too many fields": b"X-Field: value\r\n" * 98,  # 101 with Host, Content-Type, Connection
    "a control character": b"X-Null: a\x00b\r\n",
    "a bare CR after a value": b"X-Trailing: a\r\r\n",
    "no colon": b"Not a field\r\n",
    "two hosts": b"Host: y\r\n",
}


@pytest.mark.parametrize("fields", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_heads_are_refused(server, fields):
    """With a 400 whose body is JSON, as every error's, and not to be cached."""
    answer = exchange(server.url, request(b"GET", b"/healthz", fields))
    assert statuses(answer) == [b"400"]
    assert body_of(answer)["error"]["code"] == "bad_request"
    assert b"\r\nCache-Control: no-store\r\n" in answer.partition(b"\r\n\r\n")[0]


RESETS = 10


def test_a_client_gone_before_its_refusal_leaves_the_log_clean(sqlite_template, tmp_path):
    """A client that resets its connection as soon as it has sent a head to refuse
    (a scanner, a proxy giving up): no answer to send, no traceback to log."""
    with embedded_instance("resets", sqlite_template, tmp_path) as instance:
        parts = urlsplit(instance.url)
        for _ in range(RESETS):
            with socket.create_connection((parts.hostname, parts.port), timeout=10) as connection:
                linger_then_reset = struct.pack("ii", 1, 0)
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_then_reset)
                connection.sendall(request(b"GET", b"/healthz", MALFORMED["two hosts"]))
        assert statuses(exchange(instance.url, request(b"GET", b"/healthz", b""))) == [b"200"]
        log = instance.log()

    assert "more than one Host" in log, "the refusals are logged"
    assert "Traceback" not in log


def test_a_refused_request_is_not_logged_as_the_one_before_it(sqlite_template, tmp_path):
    """On a kept-alive connection, the access log has a line for the request
    served and none for the refused one after it (gevent logged the refusal
    with the served request's line)."""
    with embedded_instance("access", sqlite_template, tmp_path, ACCESS_LOG="-") as instance:
        served = request(b"GET", b"/healthz?served", b"").replace(b"Connection: close\r\n", b"")
        refused = request(b"GET", b"/healthz?refused", MALFORMED["two hosts"])
        answer = exchange(instance.url, served + refused)
        log = instance.log()

    assert answer.startswith(b"HTTP/1.1 200 ") and answer.count(b"HTTP/1.1 400 ") == 1
    assert log.count("/healthz?served") == 1
    assert "more than one Host" in log


def test_a_request_line_too_long_is_refused_and_logged(server):
    answer = exchange(server.url, request(b"GET", b"/healthz?" + b"a" * 9000, b""))
    assert statuses(answer) == [b"414"]
    assert body_of(answer)["error"]["code"] == "uri_too_long"
    assert "request line too long" in server.log()
