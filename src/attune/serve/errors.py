"""Errors that become HTTP responses: a status code and a message in OpenAI's error shape."""

from __future__ import annotations

from attune.errors import AttuneError


class ServeError(AttuneError):
    """A request the server refuses; `status` is the HTTP code, `param` the offending field if any."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.param = param
        self.code = code


ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 409: "conflict_error", 413: "invalid_request_error", 422: "invalid_request_error",
               429: "rate_limit_error", 500: "server_error", 503: "server_error"}


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    """The body OpenAI clients parse into their exception types."""
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "server_error"), "param": param, "code": code}}
