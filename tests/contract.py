"""Every response a test receives is checked against openapi.yaml.

Routes the contract does not list (an unknown path, a wrong method) must still
answer with the documented error shape.
"""

from functools import cache
from pathlib import Path

import jsonschema
from openapi_core import OpenAPI
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
from openapi_core.templating.paths.exceptions import OperationNotFound, PathNotFound

SPEC_PATH = Path(__file__).resolve().parent.parent / "openapi.yaml"


@cache
def spec() -> OpenAPI:
    return OpenAPI.from_file_path(str(SPEC_PATH))


def _check_undocumented_route(status: int, body) -> None:
    assert status in (404, 405), f"undocumented route answered {status}"
    error_schema = spec().spec.contents()["components"]["schemas"]["Error"]
    jsonschema.validate(body, error_schema)


def check_flask_response(response) -> None:
    try:
        spec().validate_response(
            WerkzeugOpenAPIRequest(response.request), WerkzeugOpenAPIResponse(response)
        )
    except (PathNotFound, OperationNotFound):
        _check_undocumented_route(response.status_code, response.get_json())


def check_requests_response(response) -> None:
    try:
        spec().validate_response(
            RequestsOpenAPIRequest(response.request), RequestsOpenAPIResponse(response)
        )
    except (PathNotFound, OperationNotFound):
        _check_undocumented_route(response.status_code, response.json())
