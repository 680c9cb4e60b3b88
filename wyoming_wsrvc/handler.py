"""Wyoming event handler: speaks the protocol, nothing else.

One-shot  ``synthesize`` → ``audio-start``, chunks per sentence (with pauses), ``audio-stop``.
Streaming ``synthesize-start`` → ``synthesize-chunk``* → (``synthesize``, ignored) →
``synthesize-stop``: one ``audio-start``/chunks/``audio-stop`` cycle per sentence, each sentence
submitted as soon as its end arrives, then ``synthesize-stopped``.

Model work runs on the shared `Scheduler`; this class only awaits each sentence's PCM pieces
(`SentenceOutput`) and writes them; which sentences are generated together is `planning`'s. A
failure sends an ``error`` event and closes this connection (Home Assistant ignores errors and
would otherwise wait for its timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.server import AsyncEventHandler
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeStopped,
)

from . import planning
from .audio import iter_chunks
from .errors import ClientError
from .metrics import RequestMetrics
from .pipeline import PcmAudio, Pipeline
from .protocol import ProtocolError, read_event
from .scheduler import Scheduler, SentenceOutput
from .text.ssml import ssml_to_text
from .voices import VoiceNotFoundError, VoiceProfile, resolve_voice

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerContext:
    """What every connection shares."""

    info: Callable[[], Info]
    voices: dict[str, VoiceProfile]
    default_voice: str
    pipeline: Pipeline
    scheduler: Scheduler
    samples_per_chunk: int = 1024
    max_text_length: int = 10_000
    idle_timeout: float = 60.0
    # voice names clients asked for that do not exist, each logged once
    unknown_voices: set[str] = field(default_factory=set)


# An open stream is not idle: an LLM may pause mid-answer (a tool call). A stream without any
# text for this long is a client that is gone.
STREAM_IDLE_LIMIT = 600.0


@dataclass
class _Utterance:
    """One response cycle being written: audio-start sent, audio-stop not yet."""

    profile: VoiceProfile
    rate: int
    spoken: bool = False


@dataclass(frozen=True)
class StartUtterance:
    """One-shot: send audio-start."""

    profile: VoiceProfile
    metrics: RequestMetrics


@dataclass(frozen=True)
class Sentences:
    """One-shot: the audio of these sentences, with the profile's pause between sentences."""

    outputs: list[SentenceOutput]


@dataclass(frozen=True)
class StopUtterance:
    """One-shot: the tail silence, then audio-stop; the request's metrics line."""

    metrics: RequestMetrics


@dataclass(frozen=True)
class StreamSentences:
    """Streaming: each sentence as its own audio-start/chunks/audio-stop cycle."""

    profile: VoiceProfile
    outputs: list[SentenceOutput]
    metrics: RequestMetrics


@dataclass(frozen=True)
class StreamStopped:
    """Streaming: close the last cycle (tail), then synthesize-stopped. A stream that spoke
    nothing still gets one cycle of `profile` (silence): Home Assistant needs an audio-start to
    write a WAV header."""

    profile: VoiceProfile | None
    metrics: RequestMetrics | None


Message = StartUtterance | Sentences | StopUtterance | StreamSentences | StreamStopped


class WsrvcEventHandler(AsyncEventHandler):
    """One per connection."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, context: ServerContext
    ) -> None:
        super().__init__(reader, writer)
        self.ctx = context
        self._queue: asyncio.Queue[Message] = asyncio.Queue()
        self._speaker: asyncio.Task[None] | None = None
        self._stream: planning.StreamPlan | None = None
        self._stream_metrics: RequestMetrics | None = None
        self._metrics: RequestMetrics | None = None  # the request whose audio is being written
        self._busy = 0
        self._closed = False

    # -- reading -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Read events (bounded, with an idle timeout) until the client or the handler stops."""
        self._is_running = True
        last_event = time.monotonic()
        try:
            while self._is_running:
                try:
                    event = await asyncio.wait_for(read_event(self.reader), self.ctx.idle_timeout)
                except TimeoutError:
                    if self._busy or not self._queue.empty():
                        continue  # work in progress
                    if self._stream is not None and (
                        time.monotonic() - last_event
                        < max(STREAM_IDLE_LIMIT, self.ctx.idle_timeout)
                    ):
                        continue  # an open stream waits for its text
                    _LOGGER.info(
                        "Closing idle connection (%.0f s without a request)", self.ctx.idle_timeout
                    )
                    break
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

    async def disconnect(self) -> None:
        """The client is gone (or we closed it): drop its queued work."""
        self._closed = True
        dropped = self.ctx.scheduler.cancel(self)
        if dropped:
            _LOGGER.debug("Client disconnected; dropped %d queued sentence(s)", dropped)
        if self._speaker is not None and not self._speaker.done():
            self._speaker.cancel()
            with contextlib.suppress(asyncio.CancelledError):  # `_speak` reports its own errors
                await self._speaker

    # -- events --------------------------------------------------------------------------------

    async def handle_event(self, event: Event) -> bool:
        try:
            return await self._handle(event)
        except ClientError as err:
            _LOGGER.warning("Refused request: %s", err)
            await self._send_error(err.code, str(err))
            return False

    async def _handle(self, event: Event) -> bool:
        if Describe.is_type(event.type):
            await self.write_event(self.ctx.info().event())
            return True
        if Synthesize.is_type(event.type):
            if self._stream is not None:
                return True  # the compatibility copy inside a stream: obeying it doubles the audio
            self._one_shot(event)
            return True
        if SynthesizeStart.is_type(event.type):
            self._start_stream(event)
            return True
        if SynthesizeChunk.is_type(event.type):
            self._stream_chunk(event)
            return True
        if SynthesizeStop.is_type(event.type):
            self._stop_stream()
            return True
        _LOGGER.debug("Ignoring event %s", event.type)
        return True

    def _one_shot(self, event: Event) -> None:
        text = _field(event, "text", str, required=True) or ""
        profile, language = self._resolve_voice(event)
        text = self._prepare_text(text, event)
        if len(text) > self.ctx.max_text_length:
            raise ClientError(
                "text-too-long",
                f"Text of {len(text)} characters is over the limit of {self.ctx.max_text_length}",
            )
        groups = planning.one_shot(self.ctx.pipeline, text)
        _LOGGER.debug("synthesize: voice=%s, %d group(s)", profile.name, len(groups))
        metrics = RequestMetrics(profile.name, characters=len(text))
        metrics.sentences = sum(len(group) for group in groups)
        self._ensure_speaker()
        self._queue.put_nowait(StartUtterance(profile, metrics))
        for group in groups:
            if group:
                outputs = self.ctx.scheduler.speak(self, group, profile, language, metrics)
                self._queue.put_nowait(Sentences(outputs))
        self._queue.put_nowait(StopUtterance(metrics))

    def _start_stream(self, event: Event) -> None:
        profile, language = self._resolve_voice(event)
        self._stream = planning.StreamPlan(
            self.ctx.pipeline,
            profile,
            language,
            ssml=True if _text_format(event) == "ssml" else None,  # else: does it say <speak>?
            max_chars=self.ctx.max_text_length,
        )
        self._stream_metrics = RequestMetrics(profile.name)
        self._ensure_speaker()
        _LOGGER.debug("synthesize-start: voice=%s", profile.name)

    def _stream_chunk(self, event: Event) -> None:
        text = _field(event, "text", str, required=True) or ""
        if self._stream is None:
            _LOGGER.debug("synthesize-chunk outside a stream; ignored")
            return
        metrics = self._stream_metrics
        if metrics is not None and text.strip():
            if not metrics.characters:
                metrics.started = time.monotonic()  # first audio counts from the first text
            metrics.characters += len(text)
        try:
            self._speak_stream(self._stream, self._stream.add(text))
        except planning.TextTooLongError as err:
            raise ClientError("text-too-long", str(err)) from None

    def _stop_stream(self) -> None:
        self._ensure_speaker()
        if self._stream is not None:
            self._speak_stream(self._stream, self._stream.finish())
        profile = self._stream.profile if self._stream else None
        self._queue.put_nowait(StreamStopped(profile, self._stream_metrics))
        self._stream = None
        self._stream_metrics = None

    def _speak_stream(self, stream: planning.StreamPlan, groups: list[list[str]]) -> None:
        metrics = self._stream_metrics or RequestMetrics(stream.profile.name)
        for group in groups:
            metrics.sentences += len(group)
            outputs = self.ctx.scheduler.speak(
                self, group, stream.profile, stream.language, metrics
            )
            self._queue.put_nowait(StreamSentences(stream.profile, outputs, metrics))

    # -- helpers -------------------------------------------------------------------------------

    def _resolve_voice(self, event: Event) -> tuple[VoiceProfile, str | None]:
        voice = _field(event, "voice", dict) or {}
        name, language = voice.get("name"), voice.get("language")
        if name is not None and not isinstance(name, str):
            raise ClientError("invalid-event", "voice.name must be a string")
        if not isinstance(language, str):
            language = None
        try:
            return resolve_voice(self.ctx.voices, self.ctx.default_voice, name, language)
        except VoiceNotFoundError:
            # Home Assistant 2026.2 drops error events: an error would be silence. Speak with
            # the default voice, and say in the log (once per name) what was asked for.
            if name not in self.ctx.unknown_voices:
                self.ctx.unknown_voices.add(str(name))
                _LOGGER.warning(
                    "Unknown voice %r requested; speaking with %r instead. Voices: %s",
                    name,
                    self.ctx.default_voice,
                    ", ".join(self.ctx.voices),
                )
            return resolve_voice(self.ctx.voices, self.ctx.default_voice, None, language)

    def _prepare_text(self, text: str, event: Event) -> str:
        if _text_format(event) == "ssml" or text.lstrip().startswith("<speak"):
            return ssml_to_text(text)
        return text

    def _ensure_speaker(self) -> None:
        if self._speaker is None:
            self._speaker = asyncio.create_task(self._speak(), name="wsrvc speaker")

    async def _send_error(self, code: str, text: str) -> None:
        try:
            await self.write_event(Error(text=text, code=code).event())
        except (ConnectionError, OSError):
            pass

    # -- writing -------------------------------------------------------------------------------

    async def _speak(self) -> None:
        """Write queued audio in order; on failure send `error` and close the connection."""
        cycle: _Utterance | None = None
        try:
            while True:
                message = await self._queue.get()
                if isinstance(message, StartUtterance):
                    self._metrics = message.metrics
                    cycle = await self._audio_start(message.profile)
                elif isinstance(message, Sentences):
                    if cycle is None:
                        raise RuntimeError("cycle is not set")
                    for output in message.outputs:
                        if cycle.spoken:
                            await self._write_pcm(self._silence(cycle, "pause"))
                        await self._write_sentence(output)
                        cycle.spoken = True
                elif isinstance(message, StopUtterance):
                    if cycle is None:
                        raise RuntimeError("cycle is not set")
                    await self._write_pcm(self._silence(cycle, "tail"))
                    await self.write_event(AudioStop().event())
                    cycle = None
                    self._report(message.metrics)
                elif isinstance(message, StreamSentences):
                    self._metrics = message.metrics
                    for output in message.outputs:
                        first = True
                        async for pcm in self._pieces(output):
                            if first:
                                first = False
                                if cycle is not None:  # the previous sentence ends with a pause
                                    await self._write_pcm(self._silence(cycle, "pause"))
                                    await self.write_event(AudioStop().event())
                                cycle = await self._audio_start(message.profile)
                            await self._write_pcm(pcm)
                        if first:  # a sentence without audio still gets its own cycle
                            if cycle is not None:
                                await self._write_pcm(self._silence(cycle, "pause"))
                                await self.write_event(AudioStop().event())
                            cycle = await self._audio_start(message.profile)
                else:
                    self._metrics = message.metrics
                    if cycle is None and message.profile is not None:
                        cycle = await self._audio_start(message.profile)  # an empty stream
                    if cycle is not None:
                        await self._write_pcm(self._silence(cycle, "tail"))
                        await self.write_event(AudioStop().event())
                        cycle = None
                    await self.write_event(SynthesizeStopped().event())
                    if message.metrics is not None:
                        self._report(message.metrics)
        except asyncio.CancelledError:
            raise
        except (ConnectionError, OSError) as err:
            _LOGGER.debug("Client went away while audio was sent: %s", err)
            self.ctx.scheduler.cancel(self)
        except ClientError as err:
            _LOGGER.warning("Request failed (%s): %s", err.code, err)
            await self._fail(err.code, str(err))
        except Exception as err:
            _LOGGER.exception("Synthesis failed")
            await self._fail("synthesis-failed", f"Synthesis failed: {err}")

    async def _pieces(self, output: SentenceOutput) -> AsyncIterator[PcmAudio]:
        """The sentence's PCM pieces; counts as work in progress while it waits."""
        self._busy += 1
        try:
            async for pcm in output.pieces():
                yield pcm
        finally:
            self._busy -= 1

    async def _write_sentence(self, output: SentenceOutput) -> None:
        async for pcm in self._pieces(output):
            await self._write_pcm(pcm)

    async def _fail(self, code: str, text: str) -> None:
        self.ctx.scheduler.cancel(self)
        await self._send_error(code, text)
        self._closed = True
        await self.stop()

    async def _audio_start(self, profile: VoiceProfile) -> _Utterance:
        rate = self.ctx.pipeline.output_rate(profile)
        await self.write_event(AudioStart(rate=rate, width=2, channels=1).event())
        return _Utterance(profile=profile, rate=rate)

    def _silence(self, cycle: _Utterance, which: str) -> PcmAudio:
        seconds = cycle.profile.sentence_pause if which == "pause" else cycle.profile.tail_silence
        return self.ctx.pipeline.silence(cycle.profile, seconds)

    def _report(self, metrics: RequestMetrics) -> None:
        """The request's metrics line (INFO: what users tune a setup by)."""
        _LOGGER.info("Spoke %s", metrics.line())
        self._metrics = None

    async def _write_pcm(self, pcm: PcmAudio) -> None:
        if not pcm.data:
            return
        if self._metrics is not None:
            self._metrics.audio(pcm.data, pcm.rate, pcm.width)
        for chunk in iter_chunks(pcm.data, self.ctx.samples_per_chunk, pcm.width):
            await self.write_event(
                AudioChunk(
                    rate=pcm.rate, width=pcm.width, channels=pcm.channels, audio=chunk
                ).event()
            )


def _field(event: Event, key: str, kind: type, required: bool = False) -> Any:
    """One field of an event's data, type-checked (clients may send anything)."""
    data = event.data or {}
    value = data.get(key)
    if value is None:
        if required:
            raise ClientError("invalid-event", f"{event.type} needs a {key!r} field")
        return None
    if not isinstance(value, kind):
        raise ClientError("invalid-event", f"{event.type}: {key!r} must be a {kind.__name__}")
    return value


def _text_format(event: Event) -> str:
    value = (event.data or {}).get("text_format")
    return value if isinstance(value, str) else "text"
