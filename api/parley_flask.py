"""Flask, with less work per request where Parley's use of it allows.

Every request pays Flask's own handling before and after the view: an empty
poll's app work was a third Flask's (counted in instructions, bench/README.md).
Each economy here keeps what Flask does and skips what it would repeat.
"""

from collections.abc import Hashable
from functools import lru_cache

from flask import Flask, Request
from werkzeug.routing import MapAdapter

from api.json_io import OrjsonProvider

# Distinct server parts (Host header, scheme, …) whose URL binding is remembered;
# a client picks its Host header, so past this many they are all forgotten.
SERVERS_REMEMBERED = 64


class ParleyFlask(Flask):
    """Flask, answering JSON through orjson (``api.json_io``), binding each request's
    URL with what it remembers of the server part, and asking once per function
    whether it is a coroutine function."""

    json_provider_class = OrjsonProvider

    def __init__(self, import_name: str) -> None:
        super().__init__(import_name)
        # Flask asks it of every hook and view on every request (to run those in
        # an event loop); the answer never changes, and asking it was 1.5 % of the
        # work of an empty poll. Remembered for the most recent functions only:
        # Flask also passes callbacks made for one request.
        self.ensure_sync = lru_cache(maxsize=64)(super().ensure_sync)
        self._servers: dict[Hashable, tuple[str, str, str | None, str]] = {}

    def create_url_adapter(self, request: Request | None) -> MapAdapter | None:
        """The request's URL adapter, as Flask binds it, but for the server part
        (host, scheme, subdomain) taken from an earlier request that named the
        same one. Flask works the host out of the environment twice per request,
        and werkzeug encodes it to IDNA in Python: 54,000 instructions of an
        empty poll's 1.24 million. The host is validated (and refused) as Flask
        does the first time; only what passed is remembered. With any of the
        settings that change how Flask binds (``SERVER_NAME``, ``TRUSTED_HOSTS``,
        host or subdomain matching: Parley sets none), Flask binds every request."""
        config = self.config
        if (
            request is None
            or config["SERVER_NAME"] is not None
            or config["TRUSTED_HOSTS"] is not None
            or self.url_map.host_matching
            or self.subdomain_matching
        ):
            return super().create_url_adapter(request)
        environ = request.environ
        key = (
            environ.get("HTTP_HOST"),
            environ.get("SERVER_NAME"),
            environ.get("SERVER_PORT"),
            environ["wsgi.url_scheme"],
            environ.get("HTTP_CONNECTION"),
            environ.get("HTTP_UPGRADE"),
        )
        server = self._servers.get(key)
        if server is None:
            adapter = super().create_url_adapter(request)
            if len(self._servers) >= SERVERS_REMEMBERED:
                self._servers.clear()
            self._servers[key] = (
                request.host,
                adapter.server_name,
                adapter.subdomain,
                adapter.url_scheme,
            )
            return adapter
        request.host, server_name, subdomain, url_scheme = server
        return MapAdapter(
            self.url_map,
            server_name,
            _wsgi_text(environ.get("SCRIPT_NAME"), "/"),
            subdomain,
            url_scheme,
            _wsgi_text(environ.get("PATH_INFO"), "/"),
            environ["REQUEST_METHOD"],
            _wsgi_text(environ.get("QUERY_STRING")),
        )


def _wsgi_text(value: str | None, default: str | None = None) -> str | None:
    """A WSGI environment's string as text, decoded (and defaulted) as werkzeug's
    binding does."""
    return default if value is None else value.encode("latin-1").decode(errors="replace")
