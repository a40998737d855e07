"""Pages for people: the web chat client at ``/`` and the API docs at ``/docs``.

web (this blueprint)
  ├── GET /               index.html, under a strict Content-Security-Policy
  ├── GET /web/<file>     static/: the page's CSS and JavaScript modules (no build step)
  └── docs (nested)       Swagger UI from the flask-swagger-ui package, reading /openapi.yaml

Like every answer of the app, these carry ``Cache-Control: no-store`` (api/http.py).
That suits them: their file names carry no version, so a cached script could
outlive a deploy and talk to a newer API; and they are small, read from loopback
or a nearby balancer (the docs' 2 MB bundle is fetched only by people reading docs).
"""

from pathlib import Path

from flask import Blueprint, send_file
from flask_swagger_ui import get_swaggerui_blueprint

# Not /static: Flask gives the app itself that route (for an api/static/ that does not exist).
bp = Blueprint("web", __name__, static_folder="static", static_url_path="/web")
PAGE_PATH = Path(__file__).resolve().parent / "index.html"

# Scripts, styles and requests only from this origin: even if message text ever
# reached the DOM as HTML, no injected inline script or event handler would run.
PAGE_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "img-src 'self' data:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)

docs = get_swaggerui_blueprint(
    "/docs",
    "/openapi.yaml",
    # validatorUrl None: Swagger UI would otherwise send the spec to an online validator.
    config={"app_name": "Parley API", "validatorUrl": None},
    blueprint_name="docs",
)
bp.register_blueprint(docs)


@bp.get("/")
def chat_client():
    """The web chat client."""
    response = send_file(PAGE_PATH)
    response.headers["Content-Security-Policy"] = PAGE_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
