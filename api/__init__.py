"""Parley's web application.

create_app()
  ├── config      api/config.py (defaults → environment → overrides)
  ├── db          one engine per process, a session per request
  ├── hub         wake-ups and cached hints (in-process, or Redis)
  ├── presence    where polls are noted (in-process, or Redis)
  ├── admission   how many API requests work at once; the rest wait their turn
  └── blueprints  accounts, conversations, messages, inbox, presence, ops, web
"""

from typing import Any

from flask import Flask

from api.config import load_config
from api.parley_flask import ParleyFlask


def create_app(overrides: dict[str, Any] | None = None) -> Flask:
    app = ParleyFlask(__name__)
    app.config.update(load_config(overrides))

    from api.accounts.actions import init_password_hasher
    from api.accounts.views import bp as accounts_bp
    from api.admission import init_admission
    from api.auth import init_auth
    from api.conversations.views import bp as conversations_bp
    from api.db import db
    from api.errors import register_error_handlers
    from api.http import init_http
    from api.hub import init_coordinator
    from api.inbox.actions import init_cursors
    from api.inbox.answered import init_answered
    from api.inbox.reading import init_reading
    from api.inbox.views import bp as inbox_bp
    from api.limits import init_limits
    from api.messages.views import bp as messages_bp
    from api.ops import bp as ops_bp
    from api.presence.actions import init_presence
    from api.presence.views import bp as presence_bp
    from api.validation import IdConverter, init_validation
    from api.web.views import bp as web_bp

    app.url_map.converters["id"] = IdConverter
    db.init_app(app)
    init_coordinator(app)
    init_auth(app)
    init_presence(app, app.extensions["parley.hub"])
    init_reading(app)
    init_cursors(app)
    init_answered(app)
    init_password_hasher(app)
    init_http(app)
    init_validation(app)
    init_admission(app)
    register_error_handlers(app)
    blueprints = (accounts_bp, conversations_bp, messages_bp, inbox_bp, presence_bp, ops_bp, web_bp)
    for blueprint in blueprints:
        app.register_blueprint(blueprint)
    init_limits(app)
    return app
