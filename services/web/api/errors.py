"""gRPC status codes as HTTP statuses, and the JSON error body every API error has:
``{"error": "<one line>", "status": <http status>, "grpc_status": "<NAME>"}``."""

from __future__ import annotations

import grpc
from fastapi import HTTPException
from pydantic import BaseModel

HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


class ErrorBody(BaseModel):
    error: str
    status: int
    grpc_status: str | None = None


def http_status(exc: grpc.aio.AioRpcError) -> int:
    code = exc.code()
    details = exc.details() or ""
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than" in details:
        return 413  # a message over the gRPC size limit, not a quota
    return HTTP_STATUS.get(code, 500)


def error_text(exc: grpc.aio.AioRpcError, services: dict[str, str] | None = None) -> str:
    """The one line the caller sees; ``services`` (address -> name) names the service
    that could not be reached."""
    code = exc.code()
    if code == grpc.StatusCode.UNAVAILABLE:
        details = exc.details() or ""
        down = next((name for addr, name in (services or {}).items() if addr in details), "")
        what = f"the {down} service" if down else "a service this request needs"
        return f"{what} is unavailable; try again shortly"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return "a service did not answer in time"
    return (exc.details() or code.name.lower()).splitlines()[0]


def bad_request(message: str) -> HTTPException:
    return HTTPException(400, message)


# What each error status means, for the OpenAPI document.
ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "Bad input",
    401: "No API key, or an unknown, revoked or expired one",
    403: "The key's tenant or role does not allow this",
    404: "Not found",
    413: "The upload is too large",
    429: "Rate limit of the key exceeded",
    503: "A service is unavailable",
}


def error_responses(body: type[BaseModel], described: dict[int, str] | None = None) -> dict[int | str, dict]:
    """The error responses of a router's operations, with ``body`` as their shape;
    ``described`` says more about some statuses than the common text."""
    texts = {**ERROR_DESCRIPTIONS, **(described or {})}
    return {status: {"model": body, "description": text} for status, text in texts.items()}


# The error responses every API operation may give.
ERROR_RESPONSES = error_responses(ErrorBody)
