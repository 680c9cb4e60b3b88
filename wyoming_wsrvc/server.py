"""Run the Wyoming server: listen on the URI, advertise it, shut down cleanly on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from functools import partial
from urllib.parse import urlparse

from wyoming.event import async_get_stdin
from wyoming.server import AsyncServer, AsyncTcpServer

from .discovery import Advertisement, Discovery, advertised_host, default_name
from .handler import ServerContext, WsrvcEventHandler

_LOGGER = logging.getLogger(__name__)


def bound_port(server: AsyncServer) -> int | None:
    """The real port of a started TCP server (the URI may have asked for port 0)."""
    inner = getattr(server, "_server", None)  # wyoming keeps the asyncio server private
    if isinstance(server, AsyncTcpServer) and inner is not None and inner.sockets:
        return int(inner.sockets[0].getsockname()[1])
    return None


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
    uri: str,
    context: ServerContext,
    zeroconf_name: str | None = None,
    ready: asyncio.Future[int | None] | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT (or cancellation); then stop accepting, withdraw, close."""
    if uri.startswith("stdio://"):
        await serve_stdio(context)
        return
    server = AsyncServer.from_uri(uri)
    await server.start(partial(WsrvcEventHandler, context=context))
    port = bound_port(server)
    discovery: Discovery | None = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    try:
        if zeroconf_name is not None and port is not None:
            host = advertised_host(urlparse(uri).hostname)
            discovery = Discovery(Advertisement(zeroconf_name or default_name(), host, port))
            await discovery.start()
        shown = uri if port is None else f"{uri.rsplit(':', 1)[0]}:{port}"
        _LOGGER.info("Ready: listening on %s with %d voice(s)", shown, len(context.voices))
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
