"""HTTP details that clients behind proxies rely on."""

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from api.context import this_request

OVERRIDABLE = {"DELETE", "PUT", "PATCH"}


class MethodOverride:
    """Let ``POST`` with ``X-HTTP-Method-Override: DELETE`` (or PUT, PATCH) act as that
    method, for proxies that block anything but GET and POST."""

    def __init__(self, wsgi_app) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        wanted = environ.get("HTTP_X_HTTP_METHOD_OVERRIDE", "").upper()
        if environ.get("REQUEST_METHOD") == "POST" and wanted in OVERRIDABLE:
            environ["REQUEST_METHOD"] = wanted
        return self.wsgi_app(environ, start_response)


def init_http(app: Flask) -> None:
    app.wsgi_app = MethodOverride(app.wsgi_app)
    if hops := app.config["PROXY_HOPS"]:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)

    @app.after_request
    def no_store(response):
        # Inbox answers change with every poll; no proxy may replay one.
        if this_request().path != "/openapi.yaml":
            response.headers["Cache-Control"] = "no-store"
        return response
