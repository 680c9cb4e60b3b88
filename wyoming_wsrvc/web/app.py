"""The HTTP listener: the voice studio's page and API, OpenAI's speech API and `/metrics`, on
`--http-uri`, beside the Wyoming server (same process, same event loop, same voices).

All links in the page are relative, so it works at `/` and behind Home Assistant's ingress
(`/api/hassio_ingress/<token>/`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from importlib import resources
from pathlib import Path

from aiohttp import web

from ..config.http_settings import HttpSettings
from ..errors import SettingsError
from ..server.app import serve
from ..server.handler import ServerContext
from ..server.listener import Listener
from .guard import guard, same_token, signed_in
from .openai import OpenAiSpeech
from .studio import Studio

_LOGGER = logging.getLogger(__name__)

STATIC = Path(str(resources.files(__package__) / "static"))
MAX_JSON_BYTES = 1024 * 1024  # a JSON body (text to speak, settings); uploads stream apart
LOGIN_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>wyoming-wsrvc</title>
<link rel="stylesheet" href="static/studio.css"></head><body><main class="login">
<h1>Voice studio</h1><form method="post" action="login"><label>Token
<input type="password" name="token" autofocus></label><button>Open</button></form>
<p class="hint">The token is the server's <code>--http-token</code>.</p></main></body></html>"""


def bind_http(settings: HttpSettings) -> socket.socket:
    """Bind the studio's port now (before the models load: a port in use fails at once)."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError as err:
        sock.close()
        raise SettingsError(f"--http-uri {settings.shown}: cannot listen: {err.strerror}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


def make_app(
    context: ServerContext, settings: HttpSettings, presets: frozenset[str]
) -> web.Application:
    app = web.Application(middlewares=[guard(settings)], client_max_size=MAX_JSON_BYTES)
    studio = Studio(context, settings.max_upload_bytes, sorted(presets))
    openai = OpenAiSpeech(context, presets)

    async def index(request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "studio.html", headers={"Cache-Control": "no-store"})

    async def login_form(request: web.Request) -> web.Response:
        return web.Response(text=LOGIN_PAGE, content_type="text/html")

    async def login(request: web.Request) -> web.Response:
        form = await request.post()
        given = str(form.get("token", ""))
        if settings.token is None or not same_token(given, settings.token):
            return web.Response(text=LOGIN_PAGE, content_type="text/html", status=401)
        return signed_in(given)

    async def metrics(request: web.Request) -> web.Response:
        catalog = context.catalog
        text = context.stats.render(
            {
                "wsrvc_queue_length": (
                    "Requests waiting for their turn to decode.",
                    float(context.scheduler.pending()),
                ),
                "wsrvc_voices": ("Voices offered.", float(len(catalog.voices))),
                "wsrvc_voice_problems": (
                    "Profile files that did not load (see the studio or the log).",
                    float(len(catalog.problems)),
                ),
            }
        )
        return web.Response(
            text=text,
            content_type="text/plain",
            charset="utf-8",
            headers={"X-Content-Type-Options": "nosniff"},
        )

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "voices": len(context.catalog.voices)})

    app.add_routes(
        [
            web.get("/", index),
            web.get("/login", login_form),
            web.post("/login", login),
            web.get("/metrics", metrics),
            web.get("/healthz", health),
            web.static("/static", STATIC),
            *studio.routes(),
            *openai.routes(),
        ]
    )
    return app


async def start_http(
    context: ServerContext,
    settings: HttpSettings,
    sock: socket.socket,
    presets: frozenset[str],
) -> web.AppRunner:
    # at shutdown, answers still streaming get a few seconds, not aiohttp's default minute
    runner = web.AppRunner(
        make_app(context, settings, presets), access_log=None, shutdown_timeout=3.0
    )
    await runner.setup()
    await web.SockSite(runner, sock).start()
    _LOGGER.info("Voice studio and HTTP API on %s", settings.shown)
    return runner


async def serve_all(
    listener: Listener,
    context: ServerContext,
    zeroconf_name: str | None,
    http: tuple[HttpSettings, socket.socket] | None,
    presets: frozenset[str],
    watch_interval: float,
) -> None:
    """The Wyoming server, the HTTP listener (if asked for) and the voices folder's watcher,
    until SIGTERM/SIGINT."""
    runner = None
    watcher = None
    try:
        if http is not None:
            runner = await start_http(context, http[0], http[1], presets)
        if watch_interval > 0 and context.catalog.editable:
            watcher = asyncio.create_task(context.catalog.watch(watch_interval), name="watch")
        await serve(listener, context, zeroconf_name)
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        if runner is not None:
            await runner.cleanup()
