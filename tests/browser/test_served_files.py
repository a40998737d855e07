"""The web client's and the docs' files, as the app serves them (no browser needed).

Files are sent as streams: each response is closed (``with``) once read.
"""

import re
from pathlib import Path

import pytest

STATIC = Path(__file__).resolve().parents[2] / "api" / "web" / "static"
# Ways a script can turn a string into markup; the client uses none of them.
HTML_SINKS = re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|DOMParser|eval\(")


def test_the_page_is_served_under_a_strict_content_security_policy(client):
    with client.get("/") as response:
        assert response.status_code == 200
        assert response.mimetype == "text/html"
        assert b'<script type="module" src="/web/app.js">' in response.data
        policy = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "unsafe-inline" not in policy


@pytest.mark.parametrize(
    ("path", "mimetype"),
    [
        ("/web/app.js", "text/javascript"),
        ("/web/client.js", "text/javascript"),
        ("/web/view.js", "text/javascript"),
        ("/web/parley.css", "text/css"),
    ],
)
def test_scripts_and_styles_are_served(client, path, mimetype):
    with client.get(path) as response:
        assert response.status_code == 200
        assert response.mimetype == mimetype  # browsers refuse modules of any other type


def test_pages_like_every_answer_are_not_stored_by_caches(client):
    # File names carry no version, so a cached script could outlive a deploy.
    for path in ("/", "/web/app.js", "/docs/"):
        with client.get(path) as response:
            assert response.headers["Cache-Control"] == "no-store"


def test_a_missing_file_is_the_usual_json_404(client):
    response = client.get("/web/missing.js")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


def test_the_docs_are_swagger_ui_from_the_installed_package_reading_the_contract(client):
    assert client.get("/docs").status_code == 308  # to /docs/
    page = client.get("/docs/")
    assert page.status_code == 200
    assert b"/openapi.yaml" in page.data
    assert b'"validatorUrl": null' in page.data  # nothing sent to an online validator
    with client.get("/docs/swagger-ui-bundle.js") as bundle:
        assert bundle.status_code == 200


def test_the_client_never_turns_text_into_markup():
    for script in STATIC.glob("*.js"):
        assert not HTML_SINKS.search(script.read_text()), script.name
