"""One request's sentences from text to PCM: the object every path through the engine runs.

    sentences ──normalize, phrase cache──► jobs                       (any thread)
    jobs ──stage.begin──► SpeechWork: pieces of codes or audio        (the decode side)
    pieces ──vocoder, RVC, resample──► PCM pieces at the output rate  (the audio side)

The scheduler runs `begin` on its decode thread and `audio` on its audio worker;
`Pipeline.synthesize` runs the same two inline (`run_alone` for the decode side).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

from ..audio import PCM_CHANNELS, PCM_WIDTH, Audio, StreamResampler, to_pcm16
from ..config.voices import VoiceProfile
from ..metrics import RequestMetrics, timed
from ..models.vocos import VocoderStream
from ..models.whisperspeech.decoding import DecodeBatches
from .cache import PhraseCache
from .speech import CHUNK_FRAMES, NoWork, SpeechPiece, SpeechStage, SpeechWork

if TYPE_CHECKING:
    from .conversion_stream import ConversionStream

CacheKey = tuple[object, ...]


@dataclass(frozen=True)
class PcmAudio:
    """Signed 16-bit little-endian mono PCM at `rate`."""

    data: bytes
    rate: int
    width: int = PCM_WIDTH
    channels: int = PCM_CHANNELS

    @property
    def seconds(self) -> float:
        return len(self.data) / (self.width * self.channels * self.rate)


@dataclass(frozen=True)
class SentenceJob:
    """One sentence to speak: its phrase-cache key, spoken form and language, or its audio."""

    key: CacheKey
    spoken: str
    language: str
    cached: PcmAudio | None


@dataclass(frozen=True)
class SentencePcm:
    """A PCM piece of sentence `sentence` (its last when `final`)."""

    sentence: int
    pcm: PcmAudio
    final: bool


# (speech rate, sentence number in the utterance) → that sentence's conversion, if any
OpenConversion = Callable[[int, int], "ConversionStream | None"]


class Utterance:
    """Sentences generated together for one profile. `prepare` (normalization, the phrase
    cache) runs once, on the first call that needs it; `begin` starts the decode side of the
    sentences not in the cache; `audio` turns their pieces into PCM, in order per sentence."""

    def __init__(
        self,
        sentences: Sequence[str],
        profile: VoiceProfile,
        language: str,
        stage: SpeechStage,
        normalize: Callable[[str, str], str],
        cache: PhraseCache[PcmAudio] | None,
        open_conversion: OpenConversion,
        output_rate: Callable[[], int],
        metrics: RequestMetrics | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        """`output_rate`: the profile's output rate (asked on the audio side: it may load the
        RVC voice). `generator`: the random numbers the speech stage's sampling draws (None:
        torch's global generator)."""
        self.sentences = list(sentences)
        self.profile = profile
        self.language = language
        self.stage = stage
        self._output_rate = output_rate
        self._rate: int | None = None
        self.metrics = metrics
        self.generator = generator
        self._normalize = normalize
        self._cache = cache
        self._open_conversion = open_conversion
        self._jobs: list[SentenceJob] | None = None
        self._streams: dict[int, SentenceAudio] = {}

    @property
    def output_rate(self) -> int:
        if self._rate is None:
            self._rate = self._output_rate()
        return self._rate

    @property
    def jobs(self) -> list[SentenceJob]:
        """Each sentence's spoken form and cache entry (normalized on first use)."""
        if self._jobs is None:
            profile, jobs = self.profile, []
            for sentence in self.sentences:
                spoken = self._normalize(sentence, self.language)
                key = (
                    profile.name,
                    profile.whisperspeech,
                    profile.upstream,
                    profile.rvc,
                    profile.output_rate,
                    self.language,
                    spoken,
                )
                cached = self._cache.get(key) if self._cache is not None else None
                jobs.append(SentenceJob(key, spoken, self.language, cached))
            self._jobs = jobs
        return self._jobs

    def cached(self) -> list[SentencePcm]:
        """The sentences the phrase cache answers, whole."""
        return [
            SentencePcm(index, job.cached, True)
            for index, job in enumerate(self.jobs)
            if job.cached is not None
        ]

    def begin(self, batches: DecodeBatches, chunk: int = CHUNK_FRAMES) -> SpeechWork:
        """Start the decode side of the sentences not in the cache (their pieces carry this
        utterance's sentence numbers)."""
        todo = [i for i, job in enumerate(self.jobs) if job.cached is None]
        if not todo:
            return NoWork()
        texts = [self.jobs[i].spoken for i in todo]
        work = self.stage.begin(
            batches,
            texts,
            self.language,
            self.profile.whisperspeech,
            chunk,
            self.metrics,
            self.generator,
        )
        return _Numbered(work, todo)

    def conversion(self, sentence: int) -> ConversionStream | None:
        """A new conversion for sentence number `sentence` of this utterance (None: the profile
        has no RVC voice). Loads the RVC voice if it is not loaded."""
        return self._open_conversion(self.stage.rate, sentence)

    def audio(
        self, pieces: Sequence[SpeechPiece], skip: Callable[[int], bool] | None = None
    ) -> list[SentencePcm]:
        """The audio side of `pieces` (in order within each sentence; on one thread at a
        time): their PCM at the output rate. `skip`: sentences nobody waits for any more.
        Loads the RVC voice if it is not loaded (`VoiceUnavailableError`)."""
        out = []
        for piece in pieces:
            if skip is not None and skip(piece.sentence):
                continue
            stream = self._streams.get(piece.sentence)
            if stream is None:
                stream = SentenceAudio(
                    self.stage,
                    self._cache,
                    self.jobs[piece.sentence],
                    self.conversion(piece.sentence),
                    self.output_rate,
                )
                self._streams[piece.sentence] = stream
            out.append(SentencePcm(piece.sentence, stream.feed(piece), piece.final))
            if piece.final:
                del self._streams[piece.sentence]
        return out


class _Numbered:
    """A stage's work over some of an utterance's sentences, its pieces renumbered to the
    utterance's."""

    def __init__(self, work: SpeechWork, todo: list[int]) -> None:
        self._work = work
        self._todo = todo

    @property
    def rows(self) -> int:
        return self._work.rows

    @property
    def done(self) -> bool:
        return self._work.done

    def advance(self) -> None:
        self._work.advance()

    def pieces(self) -> list[SpeechPiece]:
        return [replace(p, sentence=self._todo[p.sentence]) for p in self._work.pieces()]

    def cancel(self) -> None:
        self._work.cancel()


class SentenceAudio:
    """One sentence's audio side: speech pieces in order → PCM pieces at the output rate.

    Codes are vocoded in pieces equal to whole decoding, converted by RVC in context windows,
    resampled in pieces equal to whole resampling; the finished sentence goes into the phrase
    cache."""

    def __init__(
        self,
        speech: SpeechStage,
        cache: PhraseCache[PcmAudio] | None,
        job: SentenceJob,
        conversion: ConversionStream | None,
        output_rate: int,
    ) -> None:
        self.speech = speech
        self.cache = cache
        self.job = job
        self.conversion = conversion
        native = conversion.rate if conversion is not None else speech.rate
        self.resampler = StreamResampler(native, output_rate)
        self._vocoder: VocoderStream | None = None
        self._pcm: list[bytes] = []

    def feed(self, piece: SpeechPiece) -> PcmAudio:
        if piece.codes is not None:
            with timed("vocoder"):
                if self._vocoder is None:
                    self._vocoder = self.speech.open_vocoder()
                speech = self._vocoder.feed(piece.codes, piece.part_end)
            if piece.part_end:
                self._vocoder = None
        elif piece.audio is not None:
            speech = piece.audio
        else:
            speech = Audio.silence(0, self.speech.rate)
        if self.conversion is not None:
            with timed("rvc"):
                speech = self.conversion.feed(speech, piece.final)
        with timed("resample"):
            audio = self.resampler.feed(speech, piece.final)
        pcm = PcmAudio(to_pcm16(audio), audio.rate)
        self._pcm.append(pcm.data)
        if piece.final and self.cache is not None:
            self.cache.put(self.job.key, PcmAudio(b"".join(self._pcm), audio.rate))
        return pcm
