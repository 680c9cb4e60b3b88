"""Writing one connection's responses: typed messages from the handler → Wyoming audio events.

One-shot  ``synthesize`` → ``audio-start``, chunks per sentence (with pauses), ``audio-stop``.
Streaming: one ``audio-start``/chunks/``audio-stop`` cycle per sentence, then
``synthesize-stopped`` (an empty stream still gets one cycle: Home Assistant writes its WAV header
from the first ``audio-start``).

The handler queues messages in request order; `ResponseWriter` awaits each sentence's PCM pieces
(`SentenceOutput`, filled by the scheduler's workers) and writes them, counts the request's
metrics and logs its line. Rates and silences come from each voice's `VoiceFormat` (`catalog`).

A voice made more slowly than real time has its first audio held (`pacing`): a one-shot answer
as a whole, a streamed one sentence by sentence, just long enough that a listener playing it in
real time never runs dry; `audio-start` still goes out at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.event import Event
from wyoming.tts import SynthesizeStopped

from ..audio import iter_chunks
from ..config.voices import VoiceProfile
from ..engine.pacing import Gate, Player, Speeds, Timeline
from ..engine.pipeline import Pipeline
from ..engine.utterance import PcmAudio
from ..errors import ClientError
from ..metrics import RequestMetrics
from ..scheduling.scheduler import ReadyPcm, SentenceOutput

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class VoiceFormat:
    """A voice's output, fixed when the voice is loaded: its rate and its silences as PCM."""

    rate: int
    pause: PcmAudio  # between sentences
    tail: PcmAudio  # after the last sentence

    @classmethod
    def of(cls, pipeline: Pipeline, profile: VoiceProfile) -> VoiceFormat:
        """(May load the RVC voice to learn its rate: call off the event loop.)"""
        return cls(
            pipeline.output_rate(profile),
            pipeline.silence(profile, profile.sentence_pause),
            pipeline.silence(profile, profile.tail_silence),
        )


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
    nothing still gets one cycle of `profile` (silence)."""

    profile: VoiceProfile | None
    metrics: RequestMetrics | None


Message = StartUtterance | Sentences | StopUtterance | StreamSentences | StreamStopped


@dataclass
class _Cycle:
    """One audio-start … audio-stop being written."""

    format: VoiceFormat
    spoken: bool = False


_NEXT_CYCLE = object()  # streaming, held: the next sentence's cycle begins here


class ResponseWriter:
    """Writes queued messages in order on its own task. A failure calls `fail(code, text)`; a
    client that went away calls `gone()`."""

    def __init__(
        self,
        write_event: Callable[[Event], Awaitable[None]],
        formats: Callable[[VoiceProfile], VoiceFormat],
        samples_per_chunk: int,
        fail: Callable[[str, str], Awaitable[None]],
        gone: Callable[[], None],
        speeds: Speeds | None = None,
        report: Callable[[RequestMetrics], None] | None = None,
    ) -> None:
        """`formats`: each voice's output format; `report`: told each request's metrics when
        its last audio is sent."""
        self._write_event = write_event
        self._speeds = speeds or Speeds()
        self._player = Player()
        self._gate: Gate | None = None  # the one-shot answer being paced
        self._held: list[PcmAudio] = []  # its audio held back
        self._profile: VoiceProfile | None = None  # its voice
        self._timeline: Timeline | None = None  # the answer being written, for its voice's speed
        self._queued: dict[SentenceOutput, float] = {}  # streamed sentences: when they came
        self._upcoming = 0  # characters of streamed sentences queued, not yet begun
        self._stream_gate: Gate | None = None  # the streamed sentences being paced
        self._stream_held: list[PcmAudio | object] = []  # their audio and cycle starts
        self._formats = formats
        self._on_report = report
        self._samples_per_chunk = samples_per_chunk
        self._fail = fail
        self._gone = gone
        self._queue: asyncio.Queue[Message] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._waiting = 0  # sentences whose pieces are awaited
        self._metrics: RequestMetrics | None = None  # the request whose audio is being written

    def put(self, message: Message) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="wsrvc writer")
        if isinstance(message, StreamSentences):
            self._upcoming += sum(output.characters for output in message.outputs)
            now = time.monotonic()
            self._queued.update((output, now) for output in message.outputs)
        self._queue.put_nowait(message)

    @property
    def busy(self) -> bool:
        """Work in progress: queued messages, or a sentence still being made."""
        return bool(self._waiting) or not self._queue.empty()

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):  # `_run` reports its own errors
                await self._task

    async def _run(self) -> None:
        cycle: _Cycle | None = None
        try:
            while True:
                message = await self._queue.get()
                if isinstance(message, StartUtterance):
                    self._metrics = message.metrics
                    cycle = await self._start(message.profile)
                    self._gate = self._new_gate(message.profile, message.metrics.characters)
                    self._profile = message.profile
                    self._timeline = Timeline(characters=message.metrics.characters)
                elif isinstance(message, Sentences):
                    if cycle is None:
                        raise RuntimeError("sentences outside an utterance")
                    for output in message.outputs:
                        if cycle.spoken:
                            await self._emit(cycle.format.pause, None)
                        async for ready in self._pieces(output, self._gate):
                            if ready is None:  # the hold's time has come
                                await self._open_gate()
                            else:
                                await self._emit(ready.pcm, ready.ready)
                        cycle.spoken = True
                elif isinstance(message, StopUtterance):
                    if cycle is None:
                        raise RuntimeError("stop outside an utterance")
                    await self._open_gate()
                    self._gate = None
                    await self._stop(cycle)
                    cycle = None
                    self._learn(self._profile)
                    self._report(message.metrics)
                elif isinstance(message, StreamSentences):
                    self._metrics = message.metrics
                    for output in message.outputs:
                        cycle = await self._stream_sentence(cycle, message.profile, output)
                else:
                    self._metrics = message.metrics
                    if message.profile is not None:  # anything still held goes now
                        cycle = await self._end_stream_gate(cycle, message.profile)
                        self._learn(message.profile)
                    if cycle is None and message.profile is not None:
                        cycle = await self._start(message.profile)  # an empty stream
                    if cycle is not None:
                        await self._stop(cycle)
                        cycle = None
                    await self._write_event(SynthesizeStopped().event())
                    if message.metrics is not None:
                        self._report(message.metrics)
        except asyncio.CancelledError:
            raise
        except (ConnectionError, OSError) as err:
            _LOGGER.debug("Client went away while audio was sent: %s", err)
            self._gone()
        except ClientError as err:
            _LOGGER.warning("Request failed (%s): %s", err.code, err)
            await self._fail(err.code, str(err))
        except Exception as err:
            _LOGGER.exception("Synthesis failed")
            await self._fail("synthesis-failed", f"Synthesis failed: {err}")

    async def _stream_sentence(
        self, cycle: _Cycle | None, profile: VoiceProfile, output: SentenceOutput
    ) -> _Cycle | None:
        """A streamed sentence in a cycle of its own; the previous one ends with a pause once this
        one's first audio may go (so the pause is not sent before the next sentence exists).

        Paced: the sentence's audio is held until the listener, with what it still has of the
        sentences before, will not run dry in it or in the sentences already queued behind it. A
        sentence that ends before that joins the next one's hold (its cycle too), until the
        held audio covers the rest or nothing more is queued."""
        self._upcoming -= output.characters
        timeline = self._timeline
        if timeline is None:
            timeline = self._timeline = Timeline()
        elif cycle is not None or self._stream_held:
            timeline.add(self._formats(profile).pause.seconds, None)  # the pause before it
        # a sentence whose text came after the answer's first audio tells nothing of the voice
        queued = self._queued.pop(output, 0.0)
        counted = timeline.first is None or queued <= timeline.first
        if counted:
            timeline.characters += output.characters
        gate = self._stream_gate
        if gate is None:
            gate = self._new_gate(profile, output.characters, lambda: self._upcoming)
            if counted and timeline.first is not None:  # judged on the answer's own line
                gate.origin = (timeline.first, timeline.position)
            self._stream_gate = gate
        else:  # still held from the sentence before: this one joins its unit
            gate.characters += output.characters
        self._stream_held.append(_NEXT_CYCLE)
        async for ready in self._pieces(output, gate):
            if ready is not None:
                timeline.add(ready.pcm.seconds, ready.ready, counted)
                gate.add(ready.pcm.seconds, ready=ready.ready)
                self._stream_held.append(ready.pcm)
            else:
                gate.release()
            if gate.open:
                cycle = await self._replay(cycle, profile)
        if not self._upcoming:
            gate.release()
        if gate.open:
            cycle = await self._end_stream_gate(cycle, profile)
        return cycle  # None while its audio is still held

    async def _end_stream_gate(self, cycle: _Cycle | None, profile: VoiceProfile) -> _Cycle | None:
        """Streaming: the paced sentences are done (or the stream is): send what is held."""
        gate, self._stream_gate = self._stream_gate, None
        if gate is None:
            return cycle
        gate.release()
        cycle = await self._replay(cycle, profile)
        if self._metrics is not None:
            self._metrics.hold += gate.held
        return cycle

    async def _replay(self, cycle: _Cycle | None, profile: VoiceProfile) -> _Cycle | None:
        """Streaming: send what is held, each sentence in its cycle."""
        held, self._stream_held = self._stream_held, []
        for item in held:
            if item is _NEXT_CYCLE:
                cycle = await self._next_cycle(cycle, profile)
            elif isinstance(item, PcmAudio):
                await self._write_pcm(item)
        return cycle

    def _new_gate(
        self, profile: VoiceProfile, characters: int, upcoming: Callable[[], int] | None = None
    ) -> Gate:
        return Gate(self._speeds.get(profile.name), characters, self._player, upcoming)

    def _learn(self, profile: VoiceProfile | None) -> None:
        """An answer is done: what it took to make goes into its voice's speed."""
        timeline, self._timeline = self._timeline, None
        if profile is not None and timeline is not None:
            self._speeds.observe(profile.name, timeline)

    async def _emit(self, pcm: PcmAudio, ready: float | None) -> None:
        """One-shot: send `pcm` (made at `ready`; None: a pause, made at once) now, or hold it
        while the answer's gate is shut."""
        if self._timeline is not None:
            self._timeline.add(pcm.seconds, ready)
        gate = self._gate
        if gate is not None:
            gate.add(pcm.seconds, ready is not None, ready)
            if not gate.open:
                self._held.append(pcm)
                return
            await self._open_gate()
        await self._write_pcm(pcm)

    async def _open_gate(self) -> None:
        """One-shot: the hold is over (covered, its time came, or the answer is complete)."""
        gate = self._gate
        if gate is not None and (self._held or not gate.open):  # its hold, counted once
            gate.release()
            if self._metrics is not None:
                self._metrics.hold += gate.held
        held, self._held = self._held, []
        for pcm in held:
            await self._write_pcm(pcm)

    async def _next_cycle(self, cycle: _Cycle | None, profile: VoiceProfile) -> _Cycle:
        if cycle is not None:
            await self._write_pcm(cycle.format.pause)
            await self._write_event(AudioStop().event())
        return await self._start(profile)

    async def _pieces(
        self, output: SentenceOutput, gate: Gate | None = None
    ) -> AsyncIterator[ReadyPcm | None]:
        """The sentence's PCM pieces; counts as work in progress while it waits. While `gate`
        holds, None when its release time comes before the next piece."""
        self._waiting += 1
        try:
            while True:
                at = gate.release_at() if gate is not None else None
                timeout = None if at is None else max(0.0, at - time.monotonic())
                try:
                    ready = await output.get(within=timeout)
                except TimeoutError:
                    yield None
                    continue
                if ready is None:
                    return
                yield ready
        finally:
            self._waiting -= 1

    async def _start(self, profile: VoiceProfile) -> _Cycle:
        voice = self._formats(profile)
        await self._write_event(AudioStart(rate=voice.rate, width=2, channels=1).event())
        return _Cycle(voice)

    async def _stop(self, cycle: _Cycle) -> None:
        await self._write_pcm(cycle.format.tail)
        await self._write_event(AudioStop().event())

    def _report(self, metrics: RequestMetrics) -> None:
        """The request's metrics line (INFO: what users tune a setup by)."""
        _LOGGER.info("Spoke %s", metrics.line())
        self._metrics = None
        if self._on_report is not None:
            self._on_report(metrics)

    async def _write_pcm(self, pcm: PcmAudio) -> None:
        if not pcm.data:
            return
        if self._metrics is not None:
            self._metrics.audio(pcm.data, pcm.rate, pcm.width)
        self._player.sent(pcm.seconds)
        for chunk in iter_chunks(pcm.data, self._samples_per_chunk, pcm.width):
            await self._write_event(
                AudioChunk(
                    rate=pcm.rate, width=pcm.width, channels=pcm.channels, audio=chunk
                ).event()
            )
