"""Runs the speech work of every connection: decoding on one worker, audio on another.

The decode worker (a `FairWorker`: round robin over connections, one job at a time) runs T2S and
S2A and hands each piece of codes to the audio worker, which vocodes, converts (RVC) and
resamples it while the decoder already works on the next piece — the two stages overlap on
their own cores (`threads.ThreadPlan`); once the decoder has nothing left to do, the audio worker
takes its threads too (RVC's convolutions use them; the next decode job may briefly share them). Each sentence's PCM pieces arrive, in order, in its
`SentenceOutput`, which the connection's handler awaits on the event loop. A connection that
goes away has its queued jobs dropped and its running job stopped at the next piece.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

from .metrics import RequestMetrics, collecting, timed
from .pipeline import CHUNK_FRAMES, PcmAudio, Pipeline, SentenceAudio, SentenceJob, synthesis_errors
from .threads import ThreadPlan, use
from .voices import VoiceProfile
from .whisperspeech.stage import SpeechPiece
from .worker import FairWorker

_LOGGER = logging.getLogger(__name__)


class _End:
    """The sentence is complete."""


@dataclass(frozen=True)
class _Failed:
    error: BaseException


class SentenceOutput:
    """One sentence's PCM pieces as they become ready. Filled from worker threads, read on the
    event loop; after `end` or `fail` nothing more is accepted."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[PcmAudio | _End | _Failed] = asyncio.Queue()
        self.closed = False  # touched by the one thread that feeds it at a time

    def _post(self, item: PcmAudio | _End | _Failed) -> None:
        if self.closed:
            return
        if not isinstance(item, PcmAudio):
            self.closed = True
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            pass

    def put(self, pcm: PcmAudio) -> None:
        self._post(pcm)

    def end(self) -> None:
        self._post(_End())

    def fail(self, error: BaseException) -> None:
        self._post(_Failed(error))

    async def pieces(self) -> AsyncIterator[PcmAudio]:
        """The PCM pieces in order; raises what made the sentence fail."""
        while True:
            item = await self._queue.get()
            if isinstance(item, _End):
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item


class Scheduler:
    """Speech work for all connections (one per server)."""

    def __init__(self, pipeline: Pipeline, plan: ThreadPlan | None = None) -> None:
        self.pipeline = pipeline
        self.plan = plan or ThreadPlan.for_threads()
        self.decoder = FairWorker("wsrvc-decode", threads=self.plan.decode)
        self._audio = (
            ThreadPoolExecutor(1, "wsrvc-audio", initializer=use, initargs=(self.plan.audio,))
            if self.plan.overlap
            else None
        )
        self._stopped: weakref.WeakSet[object] = weakref.WeakSet()

    def speak(
        self,
        client: object,
        sentences: list[str],
        profile: VoiceProfile,
        language: str | None,
        metrics: RequestMetrics | None = None,
    ) -> list[SentenceOutput]:
        """Queue `sentences` (generated together) for `client`; call on the event loop. Stage
        times go to `metrics`."""
        loop = asyncio.get_running_loop()
        outputs = [SentenceOutput(loop) for _ in sentences]
        job = partial(self._decode, client, outputs, sentences, profile, language, metrics)
        self.decoder.submit(client, job)
        return outputs

    def cancel(self, client: object) -> int:
        """Drop `client`'s queued jobs and stop its running one; return how many were dropped."""
        self._stopped.add(client)
        return self.decoder.cancel(client)

    def cancel_all(self) -> int:
        return self.decoder.cancel_all()

    def pending(self) -> int:
        return self.decoder.pending()

    def shutdown(self, timeout: float | None = 5.0) -> bool:
        stopped = self.decoder.shutdown(timeout)
        if self._audio is not None:
            self._audio.shutdown(wait=False, cancel_futures=True)
        return stopped

    def _on_audio_worker(self, fn: Callable[[], None]) -> None:
        if self._audio is None:
            fn()
        else:
            self._audio.submit(fn)

    def _decode(
        self,
        client: object,
        outputs: list[SentenceOutput],
        sentences: list[str],
        profile: VoiceProfile,
        language: str | None,
        metrics: RequestMetrics | None,
    ) -> None:
        """On the decode worker: speech pieces, each handed to the audio worker."""
        streams: dict[int, SentenceAudio] = {}
        try:
            with synthesis_errors(), collecting(metrics):
                jobs = self.pipeline.prepare(sentences, profile, language)
                for index, job in enumerate(jobs):
                    if job.cached is not None:
                        self._on_audio_worker(partial(_cached, outputs[index], job))
                pieces = self.pipeline.speech_pieces(jobs, profile, CHUNK_FRAMES)
                while True:
                    with timed("speech"):  # all of decoding (T2S is also recorded alone)
                        piece = next(pieces, None)
                    if piece is None:
                        break
                    if client in self._stopped:
                        _LOGGER.debug("Client gone: its sentence stops here")
                        return
                    deliver = partial(
                        self._audio_piece, streams, jobs, outputs, profile, piece, metrics
                    )
                    self._on_audio_worker(deliver)
        except Exception as err:  # noqa: BLE001 - every failure reaches the client as `error`
            failure = err
            self._on_audio_worker(partial(_fail_all, outputs, failure))

    def _audio_piece(
        self,
        streams: dict[int, SentenceAudio],
        jobs: list[SentenceJob],
        outputs: list[SentenceOutput],
        profile: VoiceProfile,
        piece: SpeechPiece,
        metrics: RequestMetrics | None,
    ) -> None:
        """On the audio worker: one piece of speech → PCM into its sentence's output. While the
        decoder has nothing to do, the audio worker may use the decoder's threads too."""
        output = outputs[piece.sentence]
        if output.closed:
            return
        use(self.plan.total if self.decoder.idle() else self.plan.audio)
        try:
            with synthesis_errors(), collecting(metrics):
                stream = streams.get(piece.sentence)
                if stream is None:
                    stream = self.pipeline.sentence_audio(jobs[piece.sentence], profile)
                    streams[piece.sentence] = stream
                pcm = stream.feed(piece)
        except Exception as err:  # noqa: BLE001 - every failure reaches the client as `error`
            _fail_all(outputs, err)
            return
        if pcm.data:
            output.put(pcm)
        if piece.final:
            output.end()


def _cached(output: SentenceOutput, job: SentenceJob) -> None:
    if job.cached is None:
        raise RuntimeError("job.cached is not set")
    output.put(job.cached)
    output.end()


def _fail_all(outputs: list[SentenceOutput], error: BaseException) -> None:
    for output in outputs:
        output.fail(error)
