"""Reading request bodies and query strings through marshmallow schemas."""

import re
from typing import Any, ClassVar

from cachetools import LRUCache
from flask import Flask, Request
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.routing import IntegerConverter

from api.context import this_app, this_request
from api.errors import ApiError
from api.json_io import IntegerTooLong

ID_MAX = 2**63 - 1  # BIGINT: larger ids cannot exist, so they are bad input, not 404
QUERIES_REMEMBERED = 4096  # validated query strings each process keeps (see load_query)
_PLAIN = (str, int, float, bool, type(None))  # immutable: shared safely between requests


def load_json(schema: Schema) -> dict[str, Any]:
    """The request's JSON body, validated; 415, 400 or 422 otherwise. A body that
    is JSON but not an object is refused by the schema (``null`` as ``[]``), and
    one with an integer too long for Python as a whole: a 422, the 400 is for
    bodies that cannot be read."""
    asked = this_request()
    if asked.mimetype != "application/json":
        raise ApiError(415, "unsupported_media_type", "Send the body as application/json.")
    if asked.content_length is None:
        _refuse_a_stream_past_the_limit(asked)
    try:
        body = this_app().json.loads(asked.get_data())
    except IntegerTooLong as exc:
        raise ValidationError({"_schema": [str(exc)]}) from exc
    except ValueError as exc:
        raise ApiError(400, "malformed_json", "The body is not valid JSON.") from exc
    return schema.load(body)


def _refuse_a_stream_past_the_limit(asked: Request) -> None:
    """A body sent without its length (chunked) is read up to MAX_CONTENT_LENGTH,
    and werkzeug stops there without a word: a longer one would be read cut short.
    Refused instead (413), as a body whose length says it is too long."""
    if len(asked.get_data()) >= asked.max_content_length and asked.environ["wsgi.input"].read(1):
        raise RequestEntityTooLarge()


def load_query(schema: Schema) -> dict[str, Any]:
    """The query string, validated. Unknown parameters are ignored: proxies and
    browsers add cache-busting ones.

    A polling client sends the same query string again and again (the same
    ``after`` until something new comes), so each app remembers the answers of
    the last ``QUERIES_REMEMBERED`` it validated, when those are plain values
    (a copy of them cannot share anything with the next request). Validating
    one again was a tenth of the work of an empty poll.
    """
    remembered = this_app().extensions["parley.queries"]
    asked = this_request()
    key = (schema, asked.query_string)
    loaded = remembered.get(key)
    if loaded is None:
        loaded = schema.load(asked.args.to_dict(), unknown=EXCLUDE)
        if all(isinstance(value, _PLAIN) for value in loaded.values()):
            remembered[key] = loaded
    return dict(loaded)


def init_validation(app: Flask) -> None:
    app.extensions["parley.queries"] = LRUCache(QUERIES_REMEMBERED)


def check_storable_text(value: str) -> None:
    """Refuse what PostgreSQL cannot store rather than mangle it: NUL and lone surrogates."""
    if "\x00" in value:
        raise ValidationError("NUL characters are not allowed.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationError("Text must be valid Unicode (no lone surrogates).") from exc


IDEMPOTENCY_KEY = [validate.Length(min=1, max=64), check_storable_text]


def idempotency_key_header() -> str | None:
    """The request's ``Idempotency-Key`` header, validated (422), if it has one."""
    headers = this_request().headers
    if "Idempotency-Key" not in headers:
        return None
    return _idempotency_key_schema.load({"Idempotency-Key": headers["Idempotency-Key"]})["key"]


def check_limit(value: int, maximum: int) -> None:
    if not 1 <= value <= maximum:
        raise ValidationError(f"Must be between 1 and {maximum}.")


class StrictInteger(fields.Integer):
    """An integer that is really one: JSON ``1.0``, ``true`` or ``"1"`` are refused."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(strict=True, **kwargs)

    def _validated(self, value: Any) -> int:
        if isinstance(value, bool):
            raise self.make_error("invalid")
        return super()._validated(value)


def digits_at_most(n: int) -> str:
    """A regex for the decimal integers 1..n, without leading zeros."""
    s = str(n)
    alternatives = [f"[1-9][0-9]{{0,{len(s) - 2}}}"] if len(s) > 1 else []
    for i, digit in enumerate(s):
        low = 1 if i == 0 else 0
        if int(digit) > low:
            alternatives.append(f"{s[:i]}[{low}-{int(digit) - 1}][0-9]{{{len(s) - i - 1}}}")
    return "(?:" + "|".join([*alternatives, s]) + ")"


class IdConverter(IntegerConverter):
    """``<id:name>`` in a route: a positive BIGINT, else no route matches (404).

    The range lives in the regex, not in a check after matching: werkzeug would
    turn a failed check on one method's route into a 405 if another method's
    route on the same path had matched the URL first.
    """

    regex = digits_at_most(ID_MAX)


class HeaderText(fields.String):
    """A request header's value, read as the UTF-8 the client sent: WSGI hands
    header values over as Latin-1 text (a character per byte), in which "é"
    would read "Ã©"."""

    default_error_messages: ClassVar[dict[str, str]] = {"not_utf8": "Not valid UTF-8."}

    def _deserialize(self, value: Any, attr, data, **kwargs) -> str:
        wsgi_text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return wsgi_text.encode("latin-1").decode("utf-8")
        except UnicodeError as exc:
            raise self.make_error("not_utf8") from exc


class _IdempotencyKeySchema(Schema):
    key = HeaderText(required=True, validate=IDEMPOTENCY_KEY, data_key="Idempotency-Key")


_idempotency_key_schema = _IdempotencyKeySchema()


class IdList(fields.Field):
    """A comma-separated list of ids in a query string: ``user_ids=3,5,8``."""

    default_error_messages: ClassVar[dict[str, str]] = {
        "invalid": "A comma-separated list of positive integer ids."
    }

    # Digits only, as openapi.yaml's pattern says: int() alone would also take
    # " 5", "+5", "05" and "1_000".
    _ID = re.compile(digits_at_most(ID_MAX))

    def _deserialize(self, value: Any, attr, data, **kwargs) -> list[int]:
        if not isinstance(value, str):
            raise self.make_error("invalid")
        parts = value.split(",")
        if not all(self._ID.fullmatch(part) for part in parts):
            raise self.make_error("invalid")
        return list(dict.fromkeys(int(part) for part in parts))  # unique, in the order asked


class StrictBoolean(fields.Boolean):
    """JSON ``true`` or ``false`` only: ``1``, ``"yes"`` or ``"true"`` are refused."""

    def _deserialize(self, value: Any, attr, data, **kwargs) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value
