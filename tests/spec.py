"""The operations openapi.yaml documents, for tests that walk the contract.

Tests driven by this list cover a new route or a newly documented status as soon
as it is written into the contract, without a hand-kept list to update.
"""

import re
from dataclasses import dataclass
from functools import cache

import yaml

from tests.contract import SPEC_PATH

HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


@dataclass(frozen=True)
class Operation:
    operation_id: str
    method: str
    path: str  # the template, e.g. /v1/conversations/{conversation_id}
    statuses: tuple[int, ...]
    needs_token: bool
    request_schema: str | None  # the name of the JSON body's schema, if it has one
    required_headers: tuple[tuple[str, str], ...]  # a required header and its first allowed value

    @property
    def path_parameters(self) -> list[str]:
        return re.findall(r"{(\w+)}", self.path)

    def url(self, **ids: int) -> str:
        return self.path.format(**ids)

    def __str__(self) -> str:
        return self.operation_id


@cache
def document() -> dict:
    return yaml.safe_load(SPEC_PATH.read_text())


def _resolve(node: dict) -> dict:
    """Follow a local ``$ref`` (``#/components/...``) to what it names."""
    while "$ref" in node:
        target = document()
        for key in node["$ref"].removeprefix("#/").split("/"):
            target = target[key]
        node = target
    return node


def _request_schema(operation: dict) -> str | None:
    body = operation.get("requestBody", {}).get("content", {}).get("application/json")
    return body["schema"]["$ref"].rsplit("/", 1)[-1] if body else None


def _required_headers(parameters: list[dict]) -> tuple[tuple[str, str], ...]:
    headers = []
    for parameter in map(_resolve, parameters):
        if parameter["in"] == "header" and parameter.get("required"):
            headers.append((parameter["name"], _resolve(parameter["schema"])["enum"][0]))
    return tuple(headers)


@cache
def operations() -> tuple[Operation, ...]:
    spec = document()
    found = []
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue  # path-level keys such as `parameters`
            parameters = item.get("parameters", []) + operation.get("parameters", [])
            found.append(
                Operation(
                    operation_id=operation["operationId"],
                    method=method.upper(),
                    path=path,
                    statuses=tuple(int(status) for status in operation["responses"]),
                    needs_token=bool(operation.get("security", spec["security"])),
                    request_schema=_request_schema(operation),
                    required_headers=_required_headers(parameters),
                )
            )
    return tuple(found)


def documentation(operation: Operation, status: int) -> str:
    """What the contract says of ``operation`` answering ``status``: the operation's
    description and the response's."""
    described = document()["paths"][operation.path][operation.method.lower()]
    response = _resolve(described["responses"][str(status)])
    return f"{described.get('description', '')}\n{response.get('description', '')}"


def authenticated_operations() -> list[Operation]:
    return [operation for operation in operations() if operation.needs_token]
