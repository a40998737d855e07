"""Every response a test receives is checked against openapi.yaml.

Routes the contract does not list (an unknown path, a wrong method) must still
answer with the documented error shape.
"""

import re
from functools import cache
from io import BytesIO
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import yaml
from openapi_core import OpenAPI
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
from openapi_core.templating.paths.exceptions import OperationNotFound, PathNotFound
from werkzeug import Request

SPEC_PATH = Path(__file__).resolve().parent.parent / "openapi.yaml"
# Pages for people, not the JSON API: the web client (/, /web/...) and the API
# docs (/docs...) answer HTML, CSS and JavaScript, which the contract does not describe,
# so it neither lists them nor checks their answers.
PAGE_PATHS = re.compile(r"/(web/.*|docs(/.*)?)?")


@cache
def spec() -> OpenAPI:
    return OpenAPI.from_file_path(str(SPEC_PATH))


@cache
def _error_schema() -> dict:
    # The whole document as the root, so the Error schema's own $refs resolve.
    return {**yaml.safe_load(SPEC_PATH.read_text()), "$ref": "#/components/schemas/Error"}


def _check_undocumented_route(status: int, body) -> None:
    assert status in (404, 405), f"undocumented route answered {status}"
    jsonschema.validate(body, _error_schema())


def _bodiless(request: Request) -> Request:
    """The request without its body: only its route matters for checking a response,
    and a body the app never read cannot be read after the response."""
    return Request({**request.environ, "wsgi.input": BytesIO(), "CONTENT_LENGTH": "0"})


def check_flask_response(response) -> None:
    # A HEAD answer has no body to check: its GET's is checked where one is made.
    if PAGE_PATHS.fullmatch(response.request.path) or response.request.method == "HEAD":
        return
    try:
        spec().validate_response(
            WerkzeugOpenAPIRequest(_bodiless(response.request)), WerkzeugOpenAPIResponse(response)
        )
    except (PathNotFound, OperationNotFound):
        _check_undocumented_route(response.status_code, response.get_json())


def check_requests_response(response) -> None:
    if PAGE_PATHS.fullmatch(urlsplit(response.request.url).path):
        return
    try:
        spec().validate_response(
            RequestsOpenAPIRequest(response.request), RequestsOpenAPIResponse(response)
        )
    except (PathNotFound, OperationNotFound):
        _check_undocumented_route(response.status_code, response.json())
