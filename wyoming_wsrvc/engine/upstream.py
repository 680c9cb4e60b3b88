"""Layer mode: speech from another Wyoming TTS server (wyoming-piper on the same host, say),
instead of WhisperSpeech; the pipeline then converts it with the profile's RVC voice.

A speech stage like WhisperSpeech's (`pipeline.SpeechStage`), synchronous, on the decode worker:
each sentence is one `synthesize` on a new connection to the upstream; its audio (any rate,
16-bit) is resampled to `RATE` and handed on piece by piece as it arrives, so conversion starts
before the upstream has finished the sentence. Every failure is an `UpstreamError` that names
the upstream.

It also measures how long the upstream takes per second of speech (`rtf`, the time spent waiting
for its events), so the scheduler knows whether an upstream on this host keeps a core busy while
it answers (`occupies_core`) or answers in bursts that are better shared (Piper: ~0.1).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Generator, Iterator, Sequence
from typing import BinaryIO, cast

import numpy as np
import torch
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event, read_event, write_event
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize, SynthesizeVoice

from ..audio import Audio, StreamResampler
from ..config.uri import parse_uri
from ..config.voices import UpstreamParams, WhisperSpeechParams
from ..errors import ClientError
from ..metrics import RequestMetrics
from ..models.vocos import VocoderStream
from ..models.whisperspeech.decoding import DecodeBatches
from .speech import IteratorWork, SpeechPiece
from .whisperspeech import MAX_TEXT_BYTES

_LOGGER = logging.getLogger(__name__)

RATE = 24_000  # Hz: what the rest of the pipeline gets, as from WhisperSpeech
TIMEOUT = 30.0  # seconds the upstream may stay silent (connecting, or between events)
SLOW = 0.5  # an upstream taking this many seconds per second of speech keeps a core busy
SMOOTHING = 0.3  # the weight of the newest sentence in the running `rtf`
MIN_SPEECH = 0.2  # seconds of speech below which a sentence teaches no rate


class UpstreamError(ClientError):
    """The upstream server cannot be reached, or answers with an error or nonsense."""

    def __init__(self, uri: str, text: str) -> None:
        super().__init__("upstream-failed", f"upstream {uri}: {text}")


class UpstreamSpeech:
    """Speech from the Wyoming TTS server in `params` (one per profile)."""

    rate = RATE
    max_text_bytes = MAX_TEXT_BYTES

    def __init__(self, params: UpstreamParams, timeout: float = TIMEOUT) -> None:
        self.params = params
        self.timeout = timeout
        # seconds of waiting for the upstream per second of its speech, running (None: not yet
        # measured); written on the decode thread, read on the audio worker
        self.rtf: float | None = None

    @property
    def uri(self) -> str:
        return self.params.uri

    @property
    def occupies_core(self) -> bool:
        """Whether answering keeps a core of this host busy most of the time it runs: an
        upstream on this host (`same_host`) measured at `SLOW` or slower. A fast one (Piper
        makes a sentence in a tenth of its length) shares the cores: a core left to it would
        idle while a conversion started beside it runs on one thread fewer to its end."""
        return self.params.same_host and self.rtf is not None and self.rtf >= SLOW

    def _observe(self, waited: float, speech: float) -> None:
        if speech < MIN_SPEECH:
            return
        rate = waited / speech
        self.rtf = rate if self.rtf is None else self.rtf + SMOOTHING * (rate - self.rtf)

    def check(self) -> None:
        """At start-up: the upstream answers `describe` with a TTS program that has the voice
        the profile names. Raises `UpstreamError` otherwise."""
        with self._connection() as stream:
            write_event(Describe().event(), stream)
            stream.flush()
            while True:
                event = self._read(stream)
                if Info.is_type(event.type):
                    break
        info = Info.from_event(event)
        voices = [voice.name for program in info.tts for voice in program.voices]
        if not info.tts:
            raise UpstreamError(self.uri, "is not a text-to-speech server (no tts in its info)")
        wanted = self.params.voice
        if wanted is not None and wanted not in voices:
            raise UpstreamError(
                self.uri, f"has no voice {wanted!r} (its voices: {', '.join(voices) or 'none'})"
            )
        _LOGGER.info(
            "Upstream %s: %s, voice %s",
            self.uri,
            info.tts[0].name,
            wanted or "(its default)",
        )

    def begin(
        self,
        batches: DecodeBatches,
        texts: Sequence[str],
        language: str,
        params: WhisperSpeechParams,
        chunk: int,
        metrics: RequestMetrics | None = None,
        generator: torch.Generator | None = None,
    ) -> IteratorWork:
        """Each sentence in turn, as audio pieces at `RATE` (the last one `final`), one piece
        per decode turn (`generator` unused: the upstream draws its own)."""
        return IteratorWork(self._sentences(texts), metrics, stage="upstream")

    def _sentences(self, texts: Sequence[str]) -> Generator[SpeechPiece, None, None]:
        for index, text in enumerate(list(texts)):
            yield from self._sentence(index, text)

    def open_vocoder(self) -> VocoderStream:
        raise RuntimeError("an upstream sends audio, never codes")

    def _sentence(self, index: int, text: str) -> Iterator[SpeechPiece]:
        voice = None
        if self.params.voice is not None or self.params.speaker is not None:
            voice = SynthesizeVoice(name=self.params.voice, speaker=self.params.speaker)
        with self._connection() as stream:
            write_event(Synthesize(text=text, voice=voice).event(), stream)
            stream.flush()
            start: AudioStart | None = None
            resampler: StreamResampler | None = None
            waited, samples = 0.0, 0  # seconds spent waiting for events; samples received
            while True:
                began = time.perf_counter()
                event = self._read(stream)
                waited += time.perf_counter() - began
                if AudioStart.is_type(event.type):
                    start = AudioStart.from_event(event)
                    if start.width != 2:
                        raise UpstreamError(self.uri, f"sends {8 * start.width}-bit audio")
                    resampler = StreamResampler(start.rate, RATE)
                elif AudioChunk.is_type(event.type):
                    if start is None or resampler is None:
                        raise UpstreamError(self.uri, "sent audio before audio-start")
                    mono = _mono(AudioChunk.from_event(event).audio, start.channels)
                    samples += len(mono)
                    audio = resampler.feed(Audio(mono, start.rate), final=False)
                    if len(audio.samples):
                        yield SpeechPiece(index, audio=audio, final=False)
                elif AudioStop.is_type(event.type):
                    rest = (
                        resampler.feed(Audio(np.zeros(0, np.float32), resampler.orig), final=True)
                        if resampler is not None
                        else Audio(np.zeros(0, np.float32), RATE)
                    )
                    if start is not None:
                        self._observe(waited, samples / start.rate)
                    yield SpeechPiece(index, audio=rest, final=True)
                    return
                elif Error.is_type(event.type):
                    raise UpstreamError(self.uri, f"error: {Error.from_event(event).text}")

    @contextlib.contextmanager
    def _connection(self) -> Iterator[BinaryIO]:
        endpoint = parse_uri(self.uri)
        try:
            if endpoint.scheme == "unix":
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.timeout)
                sock.connect(endpoint.path)
            else:
                sock = socket.create_connection((endpoint.host, endpoint.port), self.timeout)
        except OSError as err:
            raise UpstreamError(self.uri, f"cannot connect ({_reason(err)})") from None
        try:
            with sock, sock.makefile("rwb") as stream:
                yield cast(BinaryIO, stream)
        except OSError as err:
            raise UpstreamError(self.uri, f"connection failed ({_reason(err)})") from None

    def _read(self, stream: BinaryIO) -> Event:
        try:
            event = read_event(stream)
        except TimeoutError:
            raise UpstreamError(self.uri, f"no answer within {self.timeout:.0f} s") from None
        except (ValueError, UnicodeDecodeError) as err:
            raise UpstreamError(self.uri, f"sent something that is not Wyoming ({err})") from None
        if event is None:
            raise UpstreamError(self.uri, "closed the connection before answering")
        return event


def _mono(pcm: bytes, channels: int) -> np.ndarray:
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % (2 * channels)], "<i2")
    samples = samples.astype(np.float32) / 32768.0
    return samples.reshape(-1, channels).mean(axis=1) if channels > 1 else samples


def _reason(err: OSError) -> str:
    return err.strerror or type(err).__name__
