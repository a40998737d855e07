"""Rate limits: sends per user, log-ins per username and per address, sign-ups
per address. Counted in Redis when there is one (every process shares the
counts), else in process. Every answer of a limited view carries the
``X-RateLimit-*`` headers, and a limit reached answers 429 with ``Retry-After``;
if Redis fails, requests are let through rather than refused (a rate limit must
not take the service down)."""

import logging
import math
import time

import redis
from flask import Flask, Response
from flask_limiter import Limiter
from flask_limiter._extension import LimiterContext
from flask_limiter.util import get_remote_address

from api.auth import authenticate
from api.context import this_app, this_g, this_request

log = logging.getLogger(__name__)


def _user_key() -> str:
    # Authenticates before the view does; @authenticated reuses g.auth.
    state = this_g()
    if "auth" not in state:
        state.auth = authenticate()
    return f"user:{state.auth.user_id}"


def _username_key() -> str:
    body = this_request().get_json(silent=True)
    username = body.get("username") if isinstance(body, dict) else None
    return f"username:{username.lower()}" if isinstance(username, str) else get_remote_address()


def _setting(name: str):
    return lambda: this_app().config[name]


LIMITED_VIEWS = {
    # endpoint: [(config key of the limit, key function)]
    "messages.send_message": [("RATE_LIMIT_SEND", _user_key)],
    "accounts.log_in": [
        ("RATE_LIMIT_LOG_IN", _username_key),
        ("RATE_LIMIT_LOG_IN_PER_ADDRESS", get_remote_address),
    ],
    "accounts.sign_up": [("RATE_LIMIT_SIGN_UP_PER_ADDRESS", get_remote_address)],
}

# What the limits of an unlimited view leave: nothing (see ViewLimiter.context).
_NO_LIMITS = LimiterContext()


class ViewLimiter(Limiter):
    """flask-limiter, with limits on some views only (``LIMITED_VIEWS``).

    Before every request its hook looks for the limits that apply to all
    requests (default, application, blueprint and meta limits), which Parley
    sets none of: it found none, at about 0.4 million instructions a request,
    more than a quarter of an empty poll. Here it looks for nothing; each
    limited view checks its limits in its decorator, as it did before.
    """

    def _check_request_limit(
        self, callable_name: str | None = None, in_middleware: bool = True
    ) -> None:
        if not in_middleware:
            super()._check_request_limit(callable_name, in_middleware)

    @property
    def context(self) -> LimiterContext:
        """What this request's limits left (its headers, its deductions). A request
        to an unlimited view gets an empty one, shared, which nothing fills: the
        hooks after every request read it, and making one per request was 6 % of
        an empty poll."""
        if this_request().endpoint in LIMITED_VIEWS:
            return super().context
        return _NO_LIMITS

    def add_headers(self, response: Response) -> Response:
        """The headers of the limit the request counted against. flask-limiter's
        own (turned off) put ``Retry-After`` on every answer of a limited view, a
        201 as well, and over a 503's own: a sign-up that met a database outage
        was told to come back in an hour."""
        limit = self.current_limit
        if limit is None:
            return response
        try:
            resets_at, remaining = limit.window  # seconds since the epoch, not rounded
        except redis.RedisError as exc:  # the answer goes without them
            log.warning("rate limit headers left out: %s", exc)
            return response
        response.headers["X-RateLimit-Limit"] = str(limit.limit.amount)
        response.headers["X-RateLimit-Remaining"] = str(remaining)
        response.headers["X-RateLimit-Reset"] = str(math.ceil(resets_at))
        if response.status_code == 429:
            # Rounded up: a client that comes back sooner is refused again. At
            # least 1: the window may have ended while the request was answered.
            wait_s = max(1, math.ceil(resets_at - time.time()))
            response.headers["Retry-After"] = str(wait_s)
        return response


def init_limits(app: Flask) -> None:
    """Attach a limiter to ``app`` and the limits to its views (call after the
    blueprints are registered)."""
    limiter = ViewLimiter(
        get_remote_address,
        app=app,
        storage_uri=app.config["REDIS_URL"] or "memory://",
        key_prefix=app.config["REDIS_PREFIX"] + "limits",
        strategy="fixed-window",  # one counter per key: the cheapest check
        headers_enabled=False,  # ViewLimiter.add_headers adds them
        swallow_errors=True,
        enabled=app.config["RATE_LIMITS_ENABLED"],
    )
    for endpoint, limits in LIMITED_VIEWS.items():
        for setting, key_func in limits:
            app.view_functions[endpoint] = limiter.limit(
                _setting(setting), key_func=key_func, scope=setting
            )(app.view_functions[endpoint])
    app.after_request(limiter.add_headers)
    app.extensions["parley.limiter"] = limiter
