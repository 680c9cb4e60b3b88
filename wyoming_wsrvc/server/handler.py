"""Wyoming event handler: speaks the protocol, nothing else.

Reads events (bounded, with an idle timeout), answers ``describe``, and turns ``synthesize`` and
``synthesize-start`` … ``synthesize-chunk``* … ``synthesize-stop`` into work for the shared
`Scheduler` (which sentences go together is `planning`'s) and typed messages for this connection's
`ResponseWriter`, which writes the audio. The ``synthesize`` inside a stream is Home Assistant's
compatibility copy of the text and is not spoken. A failure sends an ``error`` event and closes
this connection (Home Assistant 2026.2 ignores errors and would otherwise wait for its timeout).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe
from wyoming.server import AsyncEventHandler
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
)

from ..config.voices import VoiceProfile, speaking_voice
from ..engine import planning
from ..engine.build import Engine
from ..engine.pacing import Speeds
from ..engine.pipeline import Pipeline
from ..engine.threads import ThreadPlan
from ..errors import ClientError
from ..metrics import RequestMetrics
from ..scheduling.scheduler import Scheduler, SentenceOutput
from ..stats import ServerStats
from .catalog import VoiceCatalog
from .protocol import ProtocolError, event_field, read_event, text_format
from .responses import (
    ResponseWriter,
    Sentences,
    StartUtterance,
    StopUtterance,
    StreamSentences,
    StreamStopped,
    VoiceFormat,
)

_LOGGER = logging.getLogger(__name__)

# An open stream is not idle: an LLM may pause mid-answer (a tool call). A stream without any
# text for this long is a client that is gone.
STREAM_IDLE_LIMIT = 600.0


@dataclass(frozen=True)
class ServerContext:
    """What every connection shares."""

    catalog: VoiceCatalog  # the voices offered now (they may change while the server runs)
    pipeline: Pipeline
    scheduler: Scheduler
    samples_per_chunk: int = 1024
    max_text_length: int = 10_000
    idle_timeout: float = 60.0
    # voice names clients asked for that do not exist, each logged once
    unknown_voices: set[str] = field(default_factory=set)
    # each voice's measured speed (warm-up, then requests): the writers pace answers by it
    speeds: Speeds = field(default_factory=Speeds)
    stats: ServerStats = field(default_factory=ServerStats)

    @property
    def voices(self) -> dict[str, VoiceProfile]:
        return self.catalog.current.voices

    @property
    def default_voice(self) -> str:
        return self.catalog.current.default

    @classmethod
    def wire(
        cls,
        pipeline: Pipeline,
        voices: dict[str, VoiceProfile],
        default_voice: str,
        streaming: bool = True,
        scheduler: Scheduler | None = None,
        samples_per_chunk: int = 1024,
        max_text_length: int = 10_000,
        idle_timeout: float = 60.0,
        engine: Engine | None = None,
        folder: Path | None = None,
        presets: frozenset[str] = frozenset(),
    ) -> ServerContext:
        """Everything a server needs around a loaded pipeline: its scheduler, its voice catalog
        (`engine` and `folder`: voices may change while it runs), each voice's output format
        (the one place that wires a server: start-up, tests, benchmark). Call off the event
        loop: an RVC voice may load to tell its rate."""
        scheduler = scheduler or Scheduler(pipeline, ThreadPlan.for_profiles(None, voices.values()))
        stats = ServerStats()
        scheduler.decoder.on_step = stats.decode_step
        catalog = VoiceCatalog(
            pipeline,
            voices,
            default_voice,
            streaming,
            {p: VoiceFormat.of(pipeline, p) for p in voices.values()},
            engine=engine,
            plan=scheduler.plan,
            folder=folder,
            presets=presets,
        )
        return cls(
            catalog=catalog,
            pipeline=pipeline,
            scheduler=scheduler,
            samples_per_chunk=samples_per_chunk,
            max_text_length=max_text_length,
            idle_timeout=idle_timeout,
            speeds=pipeline.speeds,
            stats=stats,
        )

    def writer(
        self,
        write_event: Callable[[Event], Awaitable[None]],
        fail: Callable[[str, str], Awaitable[None]],
        gone: Callable[[], None],
        api: str,
    ) -> ResponseWriter:
        """A `ResponseWriter` for one client of `api` (`wyoming`, `http`): its requests are
        counted in `stats`."""
        return ResponseWriter(
            write_event,
            self.catalog.format,
            self.samples_per_chunk,
            fail,
            gone,
            self.speeds,
            lambda metrics: self.stats.finished(metrics, api),
        )

    def one_shot(
        self,
        client: object,
        responses: ResponseWriter,
        text: str,
        profile: VoiceProfile,
        language: str | None,
        ssml: bool,
    ) -> None:
        """Queue a one-shot request (a `synthesize`): its sentences for the scheduler, its
        messages for `responses`. `ClientError` for a text that is too long or `busy`."""
        try:
            text = planning.plain_text(text, ssml, self.max_text_length)
        except planning.TextTooLongError as err:
            raise ClientError("text-too-long", str(err)) from None
        groups = planning.one_shot(self.pipeline.split(text, profile))
        metrics = RequestMetrics(profile.name, characters=len(text))
        metrics.sentences = sum(len(group) for group in groups)
        spoken: list[list[SentenceOutput]] = []
        for group in groups:
            if group:  # the first may be refused (`busy`) before anything is sent
                new = not spoken
                spoken.append(self.scheduler.speak(client, group, profile, language, metrics, new))
        responses.put(StartUtterance(profile, metrics))
        for outputs in spoken:
            responses.put(Sentences(outputs))
        responses.put(StopUtterance(metrics))


class WsrvcEventHandler(AsyncEventHandler):
    """One per connection."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, context: ServerContext
    ) -> None:
        super().__init__(reader, writer)
        self.ctx = context
        self.responses = context.writer(self.write_event, self._fail, self._gone, "wyoming")
        self._stream: planning.StreamPlan | None = None
        self._stream_spoke = False  # the open stream has queued sentences
        self._open = True

    async def run(self) -> None:
        """Read events until the client leaves, a request fails, or the connection is idle."""
        last_event = time.monotonic()
        try:
            while self._open:
                try:
                    event = await asyncio.wait_for(read_event(self.reader), self.ctx.idle_timeout)
                except TimeoutError:
                    if self._idle(time.monotonic() - last_event):
                        _LOGGER.info(
                            "Closing idle connection (%.0f s without a request)",
                            self.ctx.idle_timeout,
                        )
                        break
                    continue
                except ProtocolError as err:
                    _LOGGER.warning("Closing connection after a protocol error: %s", err)
                    await self._send_error("protocol-error", str(err))
                    break
                except (ConnectionError, OSError):
                    break
                if event is None or not await self.handle_event(event):
                    break
                last_event = time.monotonic()
        finally:
            await self.disconnect()
            self.writer.close()

    def _idle(self, quiet: float) -> bool:
        """Nothing in progress, and no open stream waiting for its text."""
        if self.responses.busy:
            return False
        return self._stream is None or quiet >= max(STREAM_IDLE_LIMIT, self.ctx.idle_timeout)

    async def disconnect(self) -> None:
        """The client is gone (or we closed it): drop its queued work."""
        self._open = False
        dropped = self.ctx.scheduler.cancel(self)
        if dropped:
            _LOGGER.debug("Client disconnected; dropped %d queued sentence(s)", dropped)
        await self.responses.close()

    async def handle_event(self, event: Event) -> bool:
        try:
            return await self._handle(event)
        except ClientError as err:
            _LOGGER.warning("Refused request: %s", err)
            await self._send_error(err.code, str(err))
            return False

    async def _handle(self, event: Event) -> bool:
        if Describe.is_type(event.type):
            await self.write_event(self.ctx.catalog.info().event())
            self.ctx.catalog.poke()  # a folder that changed is rescanned (in the background)
        elif Synthesize.is_type(event.type):
            if self._stream is None:  # inside a stream it is the compatibility copy
                self._one_shot(event)
        elif SynthesizeStart.is_type(event.type):
            profile, language = self._voice(event)
            ssml = True if text_format(event) == "ssml" else None  # None: does it say <speak>?
            self._stream_spoke = False
            pipeline = self.ctx.pipeline
            self._stream = planning.StreamPlan(
                pipeline.sentence_stream(),
                pipeline.first_pieces,
                profile,
                language,
                ssml,
                self.ctx.max_text_length,
            )
        elif SynthesizeChunk.is_type(event.type):
            text = event_field(event, "text", str, required=True) or ""
            if self._stream is not None:
                try:
                    self._speak_stream(self._stream, self._stream.add(text))
                except planning.TextTooLongError as err:
                    raise ClientError("text-too-long", str(err)) from None
        elif SynthesizeStop.is_type(event.type):
            stream, self._stream = self._stream, None
            if stream is not None:
                self._speak_stream(stream, stream.finish())
            self.responses.put(
                StreamStopped(
                    stream.profile if stream else None, stream.metrics if stream else None
                )
            )
        else:
            _LOGGER.debug("Ignoring event %s", event.type)
        return True

    def _one_shot(self, event: Event) -> None:
        text = event_field(event, "text", str, required=True) or ""
        profile, language = self._voice(event)
        ssml = text_format(event) == "ssml"
        self.ctx.one_shot(self, self.responses, text, profile, language, ssml)

    def _speak_stream(self, stream: planning.StreamPlan, groups: list[list[str]]) -> None:
        for group in groups:
            new, self._stream_spoke = not self._stream_spoke, True
            outputs = self.ctx.scheduler.speak(
                self, group, stream.profile, stream.language, stream.metrics, new
            )
            self.responses.put(StreamSentences(stream.profile, outputs, stream.metrics))

    def _voice(self, event: Event) -> tuple[VoiceProfile, str | None]:
        voice = event_field(event, "voice", dict) or {}
        name, language = voice.get("name"), voice.get("language")
        if name is not None and not isinstance(name, str):
            raise ClientError("invalid-event", "voice.name must be a string")
        current = self.ctx.catalog.current
        return speaking_voice(
            current.voices,
            current.default,
            name,
            language if isinstance(language, str) else None,
            self.ctx.unknown_voices,
        )

    async def _send_error(self, code: str, text: str) -> None:
        self.ctx.stats.error(code, "wyoming")
        try:
            await self.write_event(Error(text=text, code=code).event())
        except (ConnectionError, OSError):
            pass

    async def _fail(self, code: str, text: str) -> None:
        """A request failed while its audio was written: tell the client, close the connection."""
        self.ctx.scheduler.cancel(self)
        await self._send_error(code, text)
        self._open = False
        await self.stop()

    def _gone(self) -> None:
        self.ctx.scheduler.cancel(self)
