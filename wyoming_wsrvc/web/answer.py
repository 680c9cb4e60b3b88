"""One HTTP speech answer: a one-shot request through the same scheduler and `ResponseWriter` as
a Wyoming `synthesize` (so the same pauses, pacing, metrics and failures), its audio events
turned into an HTTP body by an `encoders.Encoder` as they come.

The response starts with the first audio: a request refused before that (busy, text too long, a
voice that cannot load) is answered with a JSON error and its status; a failure after it ends
the body early (the status is sent by then), logged.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aiohttp import web
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.event import Event

from ..config.voices import VoiceProfile
from ..errors import ClientError
from ..server.handler import ServerContext
from .encoders import Encoder
from .errors import HttpError

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Failure:
    code: str
    text: str


class _Gone:
    """The listener went away."""


class HttpAnswer:
    """Speak `text` with `profile` into the response of `request` (one per request)."""

    def __init__(self, context: ServerContext, request: web.Request, encoder: Encoder) -> None:
        self.ctx = context
        self.request = request
        self.encoder = encoder
        self._events: asyncio.Queue[Event | _Failure | _Gone] = asyncio.Queue()
        self.rate = 0
        self.samples = 0

    async def _event(self, event: Event) -> None:
        self._events.put_nowait(event)

    async def _fail(self, code: str, text: str) -> None:
        self._events.put_nowait(_Failure(code, text))

    def _gone(self) -> None:
        self._events.put_nowait(_Gone())

    async def speak(
        self, text: str, profile: VoiceProfile, headers: dict[str, str] | None = None
    ) -> web.StreamResponse:
        writer = self.ctx.writer(self._event, self._fail, self._gone, "http")
        response: web.StreamResponse | None = None
        try:
            try:
                self.ctx.one_shot(self, writer, text, profile, None, ssml=False)
            except ClientError as err:
                self.ctx.stats.error(err.code, "http")
                raise HttpError(err.code, str(err)) from None
            held: list[bytes] = []  # until the first audio: the status may still be an error
            while True:
                item = await self._events.get()
                if isinstance(item, _Failure):
                    self.ctx.stats.error(item.code, "http")
                    if response is None:
                        raise HttpError(item.code, item.text)
                    _LOGGER.warning("HTTP answer cut short (%s): %s", item.code, item.text)
                    break
                if isinstance(item, _Gone):
                    break
                data, done = self._bytes(item)
                if response is None:
                    held.append(data)
                    if not self.samples and not done:
                        continue
                    response = await self._start(headers or {})
                    data = b"".join(held)
                try:
                    if data:
                        await response.write(data)
                    if done:
                        await response.write_eof()
                        break
                except ConnectionError:
                    _LOGGER.debug("The HTTP client went away mid-answer")
                    break
        finally:
            self.ctx.scheduler.cancel(self)
            await writer.close()
        return response if response is not None else web.Response(status=204)

    async def _start(self, headers: dict[str, str]) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": self.encoder.content_type,
                "Cache-Control": "no-store",
                "X-Sample-Rate": str(self.encoder.output_rate),
                **headers,
            }
        )
        response.enable_chunked_encoding()
        await response.prepare(self.request)
        return response

    def _bytes(self, event: Event) -> tuple[bytes, bool]:
        """The body bytes for one audio event, and whether it was the last."""
        if AudioStart.is_type(event.type):
            self.rate = AudioStart.from_event(event).rate
            return self.encoder.start(self.rate), False
        if AudioChunk.is_type(event.type):
            chunk = AudioChunk.from_event(event)
            self.samples += len(chunk.audio) // chunk.width
            return self.encoder.feed(chunk.audio), False
        if AudioStop.is_type(event.type):
            return self.encoder.finish(), True
        return b"", False
