"""Requests written by hand on a socket, for clients that vanish mid-request."""

from urllib.parse import urlsplit

from tests.factories import Person


def address_of(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname, parts.port


def raw_long_poll(url: str, person: Person, timeout: float) -> bytes:
    host, port = address_of(url)
    return (
        f"GET /v1/inbox?timeout={timeout} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        f"Authorization: Bearer {person.token}\r\n\r\n"
    ).encode()
