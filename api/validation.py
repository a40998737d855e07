"""Reading request bodies and query strings through marshmallow schemas."""

from typing import Any, ClassVar

from flask import request
from marshmallow import EXCLUDE, Schema, ValidationError, fields
from werkzeug.routing import IntegerConverter

from api.errors import ApiError

ID_MAX = 2**63 - 1  # BIGINT: larger ids cannot exist, so they are bad input, not 404


def load_json(schema: Schema) -> dict[str, Any]:
    """The request's JSON body, validated; 415, 400 or 422 otherwise."""
    if request.mimetype != "application/json":
        raise ApiError(415, "unsupported_media_type", "Send the body as application/json.")
    body = request.get_json(silent=True)
    if body is None:
        raise ApiError(400, "malformed_json", "The body is not valid JSON.")
    return schema.load(body)


def load_query(schema: Schema) -> dict[str, Any]:
    """The query string, validated. Unknown parameters are ignored: proxies and
    browsers add cache-busting ones."""
    return schema.load(request.args.to_dict(), unknown=EXCLUDE)


def check_storable_text(value: str) -> None:
    """Refuse what PostgreSQL cannot store rather than mangle it: NUL and lone surrogates."""
    if "\x00" in value:
        raise ValidationError("NUL characters are not allowed.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationError("Text must be valid Unicode (no lone surrogates).") from exc


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


class IdConverter(IntegerConverter):
    """``<id:name>`` in a route: a positive BIGINT, else the route does not match (404)."""

    def __init__(self, url_map) -> None:
        super().__init__(url_map, min=1, max=ID_MAX)


class IdList(fields.Field):
    """A comma-separated list of ids in a query string: ``user_ids=3,5,8``."""

    default_error_messages: ClassVar[dict[str, str]] = {
        "invalid": "A comma-separated list of positive integer ids."
    }

    def _deserialize(self, value: Any, attr, data, **kwargs) -> list[int]:
        if not isinstance(value, str):
            raise self.make_error("invalid")
        try:
            ids = [int(part) for part in value.split(",") if part.strip()]
        except ValueError as exc:
            raise self.make_error("invalid") from exc
        if not ids or not all(1 <= i <= ID_MAX for i in ids):
            raise self.make_error("invalid")
        return list(dict.fromkeys(ids))  # unique, in the order asked


class StrictBoolean(fields.Boolean):
    """JSON ``true`` or ``false`` only: ``1``, ``"yes"`` or ``"true"`` are refused."""

    def _deserialize(self, value: Any, attr, data, **kwargs) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value
