"""Run the Wyoming server: listen on the bound socket, advertise it, shut down cleanly on
SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from functools import partial

from wyoming.event import async_get_stdin
from wyoming.server import AsyncServer, HandlerFactory

from ..config.uri import parse_uri
from .discovery import Advertisement, Discovery, advertised_host, default_name
from .handler import ServerContext, WsrvcEventHandler
from .listener import Listener, bind

_LOGGER = logging.getLogger(__name__)


class SocketServer(AsyncServer):
    """A Wyoming server on a socket that is already bound and listening (see `listener`)."""

    def __init__(self, listener: Listener) -> None:
        super().__init__()
        self.listener = listener
        self._server: asyncio.AbstractServer | None = None

    async def run(self, handler_factory: HandlerFactory) -> None:
        callback = partial(self._handler_callback, handler_factory)
        server = await self._open(callback)
        await server.serve_forever()

    async def start(self, handler_factory: HandlerFactory) -> None:
        server = await self._open(partial(self._handler_callback, handler_factory))
        await server.start_serving()

    async def _open(
        self, callback: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
    ) -> asyncio.AbstractServer:
        if self.listener.endpoint.scheme == "unix":
            self._server = await asyncio.start_unix_server(callback, sock=self.listener.sock)
        else:
            self._server = await asyncio.start_server(callback, sock=self.listener.sock)
        return self._server

    async def stop(self) -> None:
        await super().stop()
        if self._server is not None:
            self._server.close()
        self.listener.close()


async def serve_stdio(context: ServerContext) -> None:
    """One connection over stdin/stdout."""
    reader = await async_get_stdin()
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, sys.stdout
    )
    writer = asyncio.StreamWriter(transport, protocol, None, loop)
    await WsrvcEventHandler(reader, writer, context).run()


async def serve(
    where: Listener | str,
    context: ServerContext,
    zeroconf_name: str | None = None,
    ready: asyncio.Future[int | None] | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT (or cancellation); then stop accepting, withdraw, close.

    `where` is a bound `Listener` (the server's own start-up binds before loading models) or a
    URI, bound here."""
    listener = bind(parse_uri(where)) if isinstance(where, str) else where
    if listener.endpoint.scheme == "stdio":
        await serve_stdio(context)
        return
    server = SocketServer(listener)
    await server.start(partial(WsrvcEventHandler, context=context))
    port = listener.port
    discovery: Discovery | None = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    try:
        if zeroconf_name is not None and port is not None:
            host = advertised_host(listener.endpoint.host)
            discovery = Discovery(Advertisement(zeroconf_name or default_name(), host, port))
            await discovery.start()
        _LOGGER.info(
            "Ready: listening on %s with %d voice(s)", listener.shown, len(context.catalog.voices)
        )
        if ready is not None and not ready.done():
            ready.set_result(port)
        await stop.wait()
        _LOGGER.info("Stopping")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)
        if discovery is not None:
            await discovery.close()
        context.scheduler.cancel_all()
        await server.stop()
