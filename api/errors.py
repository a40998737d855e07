"""ApiError and the handlers that turn every failure into ``{error: {code, message}}``."""

import logging
from typing import Any

import redis
from flask import Flask, jsonify
from marshmallow import ValidationError
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from werkzeug.exceptions import HTTPException

from api.metrics import ERRORS

log = logging.getLogger(__name__)

RETRY_AFTER_S = 2  # long enough for a database failover, short enough to feel live


class ApiError(Exception):
    """An error a client can act on: its status, a stable code and a sentence."""

    def __init__(
        self, status: int, code: str, message: str, details: Any = None, headers: dict | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: dict | None = None
):
    ERRORS.labels(code).inc()
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    response = jsonify(error=body)
    response.status_code = status
    response.headers.update(headers or {})
    return response


def _http_code(exc: HTTPException) -> str:
    return (exc.name or "error").lower().replace(" ", "_").replace("'", "")


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def handle_api_error(exc: ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.errorhandler(ValidationError)
    def handle_validation_error(exc: ValidationError):
        return error_response(422, "invalid_input", "The request has invalid fields.", exc.messages)

    @app.errorhandler(HTTPException)
    def handle_http_exception(exc: HTTPException):
        # Keep headers such as Allow (405) that werkzeug computed for the error.
        headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
        return error_response(
            exc.code or 500, _http_code(exc), exc.description or "", None, headers
        )

    @app.errorhandler(PoolTimeoutError)
    @app.errorhandler(OperationalError)
    def handle_database_unavailable(exc: Exception):
        return _unavailable(
            exc, "database_unavailable", "The database cannot be reached; nothing was written."
        )

    @app.errorhandler(redis.RedisError)
    def handle_redis_unavailable(exc: redis.RedisError):
        # Redis is only a doorbell and a cache: the paths that can do without it
        # catch this themselves; anything reaching here could not.
        return _unavailable(exc, "redis_unavailable", "A backing service is unavailable.")

    @app.errorhandler(Exception)
    def handle_unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal_error", "Something went wrong on our side.")


def _unavailable(exc: Exception, code: str, message: str):
    """503 with Retry-After: a backing service failed, the client should retry."""
    log.warning("%s: %s", code, exc)
    return error_response(
        503, code, f"{message} Retry shortly.", headers={"Retry-After": str(RETRY_AFTER_S)}
    )
