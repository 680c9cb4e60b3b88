"""Who may use the studio and the APIs, checked before any handler runs.

- `peers`: with `--http-ingress` only Home Assistant's ingress proxy may connect.
- `token`: with `--http-token`, every request shows it: `Authorization: Bearer TOKEN`, or the
  cookie the page sets after `/?token=TOKEN` (or its sign-in form).
- Bound to loopback without a token: the `Host` header must name a loopback host (a web page
  cannot reach the studio through a DNS name that points at 127.0.0.1).
- A request that changes anything (not GET/HEAD) and carries an `Origin` must come from the
  page's own origin: another web site open in the same browser cannot post to it (behind
  ingress, Home Assistant's own session checks guard it).

Every refusal is a JSON error (`errors`); handlers' `HttpError`s are turned into one here too.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware

from ..config.http_settings import HttpSettings
from .errors import HttpError, error_response

_LOGGER = logging.getLogger(__name__)

COOKIE = "wsrvc_token"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
# reachable without the token: the sign-in page and what it loads
OPEN_PATHS = {"/login", "/static/studio.css"}


def _host(value: str) -> str:
    """The host of a `Host` header (`name:port`, `[::1]:port`)."""
    if value.startswith("["):
        return value[: value.find("]") + 1]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def _token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.cookies.get(COOKIE) or request.query.get("token")


# aiohttp's own refusals (no route, wrong method, a body over the limit) as JSON errors too
HTTP_CODES = {404: "not-found", 405: "method-not-allowed", 413: "too-large"}


def signed_in(token: str) -> web.Response:
    """To the page, the token kept as a cookie (HttpOnly, this site only)."""
    response = web.Response(status=302, headers={"Location": "./"})
    response.set_cookie(COOKIE, token, httponly=True, samesite="Strict")
    return response


def same_token(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(), token.encode())


def guard(settings: HttpSettings) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        peer = request.remote or ""
        if settings.peers is not None and peer not in settings.peers:
            _LOGGER.warning("Refused an HTTP request from %s (only ingress may connect)", peer)
            return error_response("forbidden", "only Home Assistant's ingress proxy may connect")
        loopback_only = settings.loopback and settings.token is None
        if loopback_only and _host(request.host) not in LOOPBACK_HOSTS:
            return error_response("forbidden", f"unexpected Host header {request.host!r}")
        # behind ingress the browser's origin is Home Assistant's, whose session guards it
        if settings.peers is None and request.method not in ("GET", "HEAD", "OPTIONS"):
            origin = request.headers.get("Origin")
            if origin is not None and urlsplit(origin).netloc != request.host:
                return error_response("forbidden", f"cross-origin request from {origin!r}")
        if settings.token is not None and request.path not in OPEN_PATHS:
            given = _token(request)
            if given is None or not same_token(given, settings.token):
                if request.method == "GET" and request.path == "/":
                    raise web.HTTPFound("login")
                return error_response("unauthorized", "a valid token is needed (--http-token)")
            if request.query.get("token") and request.method == "GET" and request.path == "/":
                # opened as /?token=…: the browser keeps it as a cookie, the address drops it
                return signed_in(settings.token)
        try:
            return await handler(request)
        except HttpError as err:
            return error_response(err.code, err.message, err.param)
        except web.HTTPException as err:
            if err.status < 400:
                raise
            code = HTTP_CODES.get(err.status, "invalid-request")
            return error_response(code, f"{err.reason}: {request.method} {request.path}")

    return middleware
