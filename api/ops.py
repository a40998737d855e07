"""Operations endpoints: liveness, readiness, metrics and the API contract."""

from pathlib import Path

import redis
from flask import Blueprint, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from api.db import db
from api.hub import coordinator
from api.metrics import registry

bp = Blueprint("ops", __name__)

OPENAPI_PATH = Path(__file__).resolve().parent.parent / "openapi.yaml"


@bp.get("/healthz")
def healthz():
    """The process answers."""
    return {"status": "ok"}


@bp.get("/readyz")
def readyz():
    """The process can reach its database (and Redis in scaled mode)."""
    checks = {"database": "ok"}
    try:
        with db.statements() as session:
            session.execute(text("SELECT 1"))
    except Exception:
        current_app.logger.warning("readiness: database unreachable", exc_info=True)
        checks["database"] = "unreachable"
    if current_app.config["REDIS_URL"]:
        checks["redis"] = "ok"
        try:
            # Through the process's own pool: what requests use, and no new
            # connection (with its handshake) for every probe of the balancer.
            coordinator().client.ping()
        except redis.RedisError:
            checks["redis"] = "unreachable"
    ready = all(state == "ok" for state in checks.values())
    return {"status": "ready" if ready else "not_ready", "checks": checks}, 200 if ready else 503


@bp.get("/metrics")
def metrics():
    """Prometheus metrics (summed over every worker process in multiprocess mode)."""
    # As content_type, taken as is: as a mimetype, werkzeug would add a second charset.
    return Response(generate_latest(registry()), content_type=CONTENT_TYPE_LATEST)


@bp.get("/openapi.yaml")
def openapi():
    """The API contract."""
    return Response(OPENAPI_PATH.read_bytes(), mimetype="application/yaml")
