"""JSON answers, encoded by orjson.

Flask's own provider hands every answer to the standard library's encoder with
options of its own, so ``json.dumps`` builds a new encoder each time: 30,000
instructions for an empty poll's three keys, and as much again for Flask to make
a response of the text (it looks the content type's charset up, and encodes the
text). orjson encodes to UTF-8 bytes in C, and the response takes them as they
are. Request bodies are still read by the standard library: what a body may
hold (and which 400 or 422 it earns) stays as it was.
"""

import json
import sys
from typing import Any

import orjson
from flask import Response
from flask.json.provider import DefaultJSONProvider

# Keys in the order given; ints as keys (marshmallow's errors for list items);
# dates as Flask writes them (its ``default``), not orjson's ISO 8601.
_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME


class IntegerTooLong(ValueError):
    """A JSON integer with more digits than Python converts: valid JSON, but no
    value any field takes."""


def _integer(digits: str) -> int:
    try:
        return int(digits)
    except ValueError as exc:  # past sys.get_int_max_str_digits()
        raise IntegerTooLong(
            f"A number has more than {sys.get_int_max_str_digits()} digits."
        ) from exc


class OrjsonProvider(DefaultJSONProvider):
    """Compact JSON, UTF-8 as is, keys in the order given (always: the app has no
    pretty-printed debug mode)."""

    ensure_ascii = False
    sort_keys = False

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        if kwargs:  # a caller asking for the standard library's options gets them
            return super().dumps(obj, **kwargs)
        return self.encode(obj).decode()

    def encode(self, obj: Any) -> bytes:
        """``obj`` as JSON in UTF-8. What orjson refuses goes through the standard
        library, escaped to ASCII: a text that UTF-8 cannot carry (a lone surrogate,
        which a request may send as ``\\ud800`` in a field's name, and an error
        names the field) then comes out as valid JSON, and an integer past 64 bits
        as it did under Flask."""
        try:
            return orjson.dumps(obj, default=self.default, option=_ORJSON_OPTIONS)
        except TypeError:
            return json.dumps(obj, default=self.default, separators=(",", ":")).encode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        """Request bodies, read by the standard library. Whatever cannot be read
        raises a ValueError, the only error a request's ``get_json`` answers: a
        body nested deeper than the interpreter's recursion limit too (not a
        RecursionError, a 500), and an integer too long to convert raises the
        IntegerTooLong kind (valid JSON, which ``load_json`` answers with 422)."""
        try:
            return json.loads(s, parse_int=_integer, **kwargs)
        except RecursionError as exc:
            raise ValueError("The body nests too deeply.") from exc

    def response(self, *args: Any, **kwargs: Any) -> Response:
        body = self.encode(self._prepare_response_obj(args, kwargs))
        return self._app.response_class(body + b"\n", content_type=self.mimetype)
