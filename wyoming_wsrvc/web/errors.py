"""Errors as JSON, shaped as OpenAI's API shapes them, with the codes of the Wyoming `error`
events (`errors.ClientError`) and a few of HTTP's own.

    {"error": {"message": "...", "type": "invalid_request_error", "param": null, "code": "busy"}}
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

# code → (HTTP status, OpenAI error type)
STATUS: dict[str, tuple[int, str]] = {
    "invalid-request": (400, "invalid_request_error"),
    "invalid-event": (400, "invalid_request_error"),
    "invalid-profile": (400, "invalid_request_error"),
    "text-too-long": (400, "invalid_request_error"),
    "unknown-voice": (400, "invalid_request_error"),
    "unsupported-format": (400, "invalid_request_error"),
    "unauthorized": (401, "authentication_error"),
    "forbidden": (403, "permission_error"),
    "not-found": (404, "not_found_error"),
    "method-not-allowed": (405, "invalid_request_error"),
    "name-taken": (409, "invalid_request_error"),
    "read-only": (409, "invalid_request_error"),
    "too-large": (413, "invalid_request_error"),
    "busy": (429, "rate_limit_error"),
    "synthesis-failed": (500, "server_error"),
    "upstream-failed": (502, "server_error"),
    "voice-unavailable": (503, "server_error"),
    "out-of-memory": (503, "server_error"),
}


class HttpError(Exception):
    """A request refused with `code` (a key of `STATUS`) and a one-line message."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param

    @property
    def status(self) -> int:
        return STATUS.get(self.code, (500, "server_error"))[0]


def error_response(code: str, message: str, param: str | None = None) -> web.Response:
    status, kind = STATUS.get(code, (500, "server_error"))
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return web.json_response(body, status=status)


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object (`HttpError` for anything else)."""
    try:
        body = await request.json()
    except ValueError:
        raise HttpError("invalid-request", "the body must be JSON") from None
    if not isinstance(body, dict):
        raise HttpError("invalid-request", "the body must be a JSON object")
    return body
