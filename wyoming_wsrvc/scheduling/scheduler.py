"""Runs the speech work of every connection: decoding on one thread, audio on another.

The decode thread (`DecodeLoop`: every admitted request's T2S and S2A rows stepped together in
shared batches, requests admitted round robin over connections) hands each piece of codes to the
audio worker, which vocodes, converts (RVC) and resamples it while the decoder already works on
the next step: the two stages overlap on their own cores (`threads.ThreadPlan`); once the
decoder has nothing left to do, or only reads a fast upstream (layer mode), the audio worker
takes its threads too (RVC's convolutions use them: `ThreadPlan.audio_now`). Each sentence's PCM
pieces arrive, in order, in its `SentenceOutput`, which the connection's handler awaits on the
event loop. A connection that goes away has its queued
requests dropped and its rows taken out of the batch before the next step.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial

from ..config.settings import MAX_BATCH, MAX_QUEUE
from ..config.voices import VoiceProfile
from ..engine.failures import synthesis_errors
from ..engine.pipeline import Pipeline
from ..engine.speech import SpeechPiece, SpeechWork
from ..engine.threads import ThreadPlan, use
from ..engine.upstream import UpstreamSpeech
from ..engine.utterance import PcmAudio, SentencePcm, Utterance
from ..metrics import RequestMetrics, collecting
from ..models.whisperspeech.decoding import DecodeBatches
from .audio_worker import FairWorker
from .decode_loop import DecodeLoop, DecodeRequest

_LOGGER = logging.getLogger(__name__)


class _End:
    """The sentence is complete."""


@dataclass(frozen=True)
class _Failed:
    error: BaseException


@dataclass(frozen=True)
class ReadyPcm:
    """A PCM piece and when it was ready (`time.monotonic()` on the worker that made it)."""

    pcm: PcmAudio
    ready: float


class SentenceOutput:
    """One sentence's PCM pieces as they become ready. Filled from worker threads, read on the
    event loop; after `end` or `fail` nothing more is accepted. `characters`: the sentence's
    text length (what its audio's length is expected from)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, characters: int = 0) -> None:
        self._loop = loop
        self.characters = characters
        self._queue: asyncio.Queue[ReadyPcm | _End | _Failed] = asyncio.Queue()
        self.closed = False  # touched by the one thread that feeds it at a time

    def _post(self, item: ReadyPcm | _End | _Failed) -> None:
        if self.closed:
            return
        if not isinstance(item, ReadyPcm):
            self.closed = True
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            pass

    def put(self, pcm: PcmAudio) -> None:
        self._post(ReadyPcm(pcm, time.monotonic()))

    def end(self) -> None:
        self._post(_End())

    def fail(self, error: BaseException) -> None:
        self._post(_Failed(error))

    async def get(self, within: float | None = None) -> ReadyPcm | None:
        """The next PCM piece, None once the sentence is complete; raises what made it fail, or
        `TimeoutError` when nothing came `within` seconds."""
        if within is None:
            item = await self._queue.get()
        else:
            item = await asyncio.wait_for(self._queue.get(), within)
        if isinstance(item, _End):
            self._queue.put_nowait(item)  # complete stays complete
            return None
        if isinstance(item, _Failed):
            raise item.error
        return item

    async def pieces(self) -> AsyncIterator[ReadyPcm]:
        """The PCM pieces in order, with when each was ready; raises what made the sentence
        fail."""
        while (item := await self.get()) is not None:
            yield item


class Scheduler:
    """Speech work for all connections (one per server)."""

    def __init__(
        self,
        pipeline: Pipeline,
        plan: ThreadPlan | None = None,
        max_rows: int = MAX_BATCH,
        max_queue: int = MAX_QUEUE,
    ) -> None:
        self.pipeline = pipeline
        self.plan = plan or ThreadPlan.for_threads()
        self.decoder = DecodeLoop("wsrvc-decode", self.plan.decode, max_rows, max_queue)
        # round robin over connections, so a long answer's conversion never holds back the
        # first audio of another
        self._audio = FairWorker("wsrvc-audio", self.plan.audio) if self.plan.overlap else None

    def speak(
        self,
        client: object,
        sentences: list[str],
        profile: VoiceProfile,
        language: str | None,
        metrics: RequestMetrics | None = None,
        new: bool = False,
    ) -> list[SentenceOutput]:
        """Queue `sentences` (generated together) for `client`; call on the event loop. Stage
        times go to `metrics`. `new`: the first sentences of a request (their first audio is
        awaited: `Pipeline.utterance`'s `opens`), refused with `ClientError("busy")` when too
        many clients already wait."""
        loop = asyncio.get_running_loop()
        outputs = [SentenceOutput(loop, len(sentence)) for sentence in sentences]
        utterance = self.pipeline.utterance(sentences, profile, language, metrics, opens=new)
        first = [new]  # the request's first audio is still to come

        def start(batches: DecodeBatches) -> SpeechWork:
            work = utterance.begin(batches)  # normalizes and looks up the cache here
            cached = utterance.cached()
            if cached:
                self._on_audio_worker(client, outputs, partial(_post, outputs, cached))
            return work

        def deliver(pieces: list[SpeechPiece]) -> None:
            urgent, first[0] = first[0], False
            job = partial(self._audio_pieces, utterance, outputs, pieces)
            self._on_audio_worker(client, outputs, job, urgent)

        def fail(error: BaseException) -> None:
            self._on_audio_worker(client, outputs, partial(_fail_all, outputs, error))

        self.decoder.submit(DecodeRequest(client, len(sentences), start, deliver, fail), new)
        return outputs

    def cancel(self, client: object) -> int:
        """Drop `client`'s queued requests and stop its running one; return how many were
        dropped."""
        if self._audio is not None:
            self._audio.cancel(client)
        return self.decoder.cancel(client)

    def cancel_all(self) -> int:
        return self.decoder.cancel_all()

    def pending(self) -> int:
        return self.decoder.pending()

    def shutdown(self, timeout: float | None = 5.0) -> bool:
        stopped = self.decoder.shutdown(timeout)
        if self._audio is not None:  # let a running conversion end: torch must not die mid-op
            stopped = self._audio.shutdown(timeout) and stopped
        return stopped

    def _on_audio_worker(
        self,
        client: object,
        outputs: list[SentenceOutput],
        job: Callable[[], None],
        urgent: bool = False,
    ) -> None:
        """Run `job` on the audio worker (inline without one). Whatever it raises ends every
        sentence of its request with that error: the client hears `error`, never silence."""

        def guarded() -> None:
            try:
                with synthesis_errors():
                    job()
            except Exception as err:  # noqa: BLE001 - every failure reaches the client as `error`
                _LOGGER.debug("An audio job failed: %s", err)
                _fail_all(outputs, err)

        if self._audio is None:
            guarded()
        else:
            self._audio.submit(client, guarded, urgent)

    def _audio_pieces(
        self, utterance: Utterance, outputs: list[SentenceOutput], pieces: list[SpeechPiece]
    ) -> None:
        """On the audio worker: pieces of speech → PCM into their sentences' outputs. While the
        decode side leaves its core free (nothing to decode, or only a fast upstream to read:
        Piper makes a sentence in a tenth of its length, so a core kept for it would idle),
        the audio worker uses every thread."""
        slow_upstream = any(
            isinstance(stage, UpstreamSpeech) and stage.occupies_core
            for stage in list(self.pipeline.upstream.values())
        )
        use(self.plan.audio_now(not self.decoder.idle(), slow_upstream))
        with collecting(utterance.metrics):
            done = utterance.audio(pieces, skip=lambda sentence: outputs[sentence].closed)
        _post(outputs, done)


def _post(outputs: list[SentenceOutput], pieces: list[SentencePcm]) -> None:
    for piece in pieces:
        output = outputs[piece.sentence]
        if piece.pcm.data:
            output.put(piece.pcm)
        if piece.final:
            output.end()


def _fail_all(outputs: list[SentenceOutput], error: BaseException) -> None:
    for output in outputs:
        output.fail(error)
