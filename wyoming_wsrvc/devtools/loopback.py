"""The server in-process on a loopback port, a Wyoming client that speaks to it as Home
Assistant does, and a competing busy core: what the tests and both benchmarks share.

`speak` sends what Home Assistant sends: with `streaming`, `synthesize-start`, the text in
chunks (word by word, as an LLM streams, unless `chunks` are given), the compatibility
`synthesize` with the whole text, `synthesize-stop`, then reads until `synthesize-stopped`;
otherwise one `synthesize`, read until `audio-stop`. It plays the answer at real time from its
first chunk (each chunk plays when the one before has played, or when it arrives if that is
later: the listener ran dry, an underrun).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, replace

from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeVoice,
)

from ..config.http_settings import HttpSettings
from ..server.app import serve
from ..server.handler import ServerContext


@dataclass(frozen=True)
class Heard:
    """One request as a real-time listener hears it: first audio and total time (s from the
    request; first audio is infinite without any), the PCM, the rates its chunks had, the seconds
    it had nothing to play after it started, and the `error` that ended it, if one did."""

    first_audio: float
    total: float
    audio: bytes
    rates: frozenset[int]
    underrun: float
    error: Error | None = None

    @property
    def seconds(self) -> float:
        """Seconds of audio (16-bit mono)."""
        rate = next(iter(self.rates), 0)
        return len(self.audio) / 2 / rate if rate else 0.0


def words(text: str) -> list[str]:
    """`text` as an LLM streams it: word by word, each with its space."""
    return [word + " " for word in text.split(" ")]


async def speak(
    port: int,
    text: str,
    voice: str | None = None,
    streaming: bool = False,
    chunks: Sequence[str] | None = None,
    host: str = "127.0.0.1",
    silence: float = 60.0,
) -> Heard:
    """One request, as Home Assistant sends it; the server silent for longer than `silence`
    seconds raises `TimeoutError` (a hang is an error, never a wait)."""
    named = SynthesizeVoice(name=voice) if voice is not None else None
    start = time.monotonic()
    first: float | None = None
    audio, rates = bytearray(), set()
    ends = underrun = 0.0
    error = None
    async with AsyncTcpClient(host, port) as client:
        if streaming:
            await client.write_event(SynthesizeStart(voice=named).event())
            for chunk in chunks if chunks is not None else words(text):
                await client.write_event(SynthesizeChunk(text=chunk).event())
            await client.write_event(Synthesize(text=text, voice=named).event())
            await client.write_event(SynthesizeStop().event())
        else:
            await client.write_event(Synthesize(text=text, voice=named).event())
        stop = "synthesize-stopped" if streaming else "audio-stop"
        while True:
            event = await asyncio.wait_for(client.read_event(), silence)
            if event is None:
                raise ConnectionError("the server closed the connection before the end marker")
            if event.type == "audio-chunk":
                now = time.monotonic()
                rate = int(event.data["rate"])
                payload = event.payload or b""
                if first is None:
                    first, ends = now - start, now
                elif now > ends:
                    underrun += now - ends
                ends = max(ends, now) + len(payload) / 2 / rate
                audio += payload
                rates.add(rate)
            elif Error.is_type(event.type):
                error = Error.from_event(event)
                break
            elif event.type == stop:
                break
    return Heard(
        math.inf if first is None else first,
        time.monotonic() - start,
        bytes(audio),
        frozenset(rates),
        underrun,
        error,
    )


@contextlib.asynccontextmanager
async def serving(context: ServerContext, uri: str = "tcp://127.0.0.1:0") -> AsyncIterator[int]:
    """The real server on a free loopback port (yielded) until the block ends; then its
    scheduler is shut down."""
    ready: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(uri, context, ready=ready))
    port = await asyncio.wait_for(ready, 10)
    if not port:
        raise RuntimeError("the server did not start")
    try:
        yield port
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        context.scheduler.shutdown()


class HoldLog(logging.Handler):
    """The server's metrics lines as they are logged: each request's hold (`(held X s)`, 0 when
    none). Attach with `holds()`."""

    def __init__(self) -> None:
        super().__init__()
        self.holds: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Spoke "):
            found = re.search(r"\(held ([\d.]+) s\)", message)
            self.holds.append(float(found.group(1)) if found else 0.0)


@contextlib.contextmanager
def holds() -> Iterator[HoldLog]:
    """Collect the holds of the requests served inside the block."""
    log = HoldLog()
    logger = logging.getLogger("wyoming_wsrvc.server.responses")
    logger.addHandler(log)
    try:
        yield log
    finally:
        logger.removeHandler(log)


@contextlib.contextmanager
def busy_core() -> Iterator[subprocess.Popen[bytes]]:
    """Another program keeping one core busy (what a Home Assistant host often has)."""
    competitor = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield competitor
    finally:
        competitor.kill()
        competitor.wait()


@contextlib.asynccontextmanager
async def serving_studio(
    context: ServerContext, settings: HttpSettings | None = None
) -> AsyncIterator[tuple[int, int]]:
    """The Wyoming server and the studio's HTTP listener (default: loopback, a free port, no
    token) in-process; yields (Wyoming port, HTTP port)."""
    from ..config.registry import PRESETS
    from ..web.app import bind_http, start_http

    settings = settings or HttpSettings(host="127.0.0.1", port=0)
    sock = bind_http(settings)
    http_port = sock.getsockname()[1]
    runner = await start_http(context, replace(settings, port=http_port), sock, frozenset(PRESETS))
    try:
        async with serving(context) as port:
            yield port, http_port
    finally:
        await runner.cleanup()
