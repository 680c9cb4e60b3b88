"""The synchronous engine behind the server: text and a voice profile in, PCM sentences out.

Data flow, one sentence at a time::

    text ──normalize(language)──► spoken-form text ──split──► sentences
    sentence ──speech stage (WhisperSpeech)──► Audio @ speech rate (24 kHz)
             ──conversion stage (RVC, optional)──► Audio @ voice rate (32/40/48 kHz)
             ──resample──► Audio @ profile output rate ──pcm16──► PcmAudio

The pipeline owns splitting, resampling and PCM conversion; the stages own the models. It knows
nothing about asyncio or Wyoming.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import torch

from ..audio import PCM_CHANNELS, PCM_WIDTH, Audio, StreamResampler, to_pcm16
from ..config.voices import RvcParams, VoiceProfile, VoiceUnavailableError, WhisperSpeechParams
from ..errors import ClientError
from ..metrics import RequestMetrics, timed
from ..models.vocos import VocoderStream
from ..models.whisperspeech.decoding import DecodeBatches, SpeechTask
from ..text.sentences import SentenceStream, first_piece, split_sentences
from .cache import PhraseCache
from .conversion_stream import ConversionStream
from .pacing import Speeds
from .whisperspeech import MAX_TEXT_BYTES, SpeechPiece, WhisperSpeechStage

_LOGGER = logging.getLogger(__name__)


class EngineUnavailableError(RuntimeError):
    """The server cannot synthesize: a stage it needs is missing."""


class SpeechStage(Protocol):
    """Text to speech (WhisperSpeech)."""

    rate: int
    max_text_bytes: int

    def stream(
        self, texts: Sequence[str], language: str, params: WhisperSpeechParams, chunk: int
    ) -> Iterator[SpeechPiece]:
        """Speak sentences of spoken-form text (generated together), as pieces that arrive in
        order within each sentence: codes of about `chunk` frames to vocode, or audio at `rate`."""
        ...

    def open_vocoder(self) -> VocoderStream:
        """A decoder for one run of codes pieces (`SpeechPiece.codes`), at `rate`."""
        ...


class ConversionStage(Protocol):
    """Voice conversion (RVC)."""

    def output_rate(self, params: RvcParams) -> int:
        """The native rate of the converted audio for this voice."""
        ...

    def convert(self, audio: Audio, params: RvcParams) -> Audio:
        """Convert one sentence of speech to the voice in `params`."""
        ...

    def open_stream(self, params: RvcParams, rate: int) -> ConversionStream:
        """Convert one sentence that arrives in pieces at `rate`."""
        ...


CHUNK_FRAMES = 24  # S2A frames (75 Hz) per speech piece: 0.32 s
CacheKey = tuple[object, ...]


@contextlib.contextmanager
def synthesis_errors() -> Iterator[None]:
    """Turn the failures a client should hear about into `ClientError`."""
    try:
        yield
    except torch.OutOfMemoryError as err:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise ClientError("out-of-memory", f"Out of memory while speaking: {err}") from err
    except VoiceUnavailableError as err:
        raise ClientError("voice-unavailable", str(err)) from err


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


def identity_normalizer(text: str, language: str) -> str:
    return text


class Pipeline:
    """Shared by every connection; called from one worker thread at a time."""

    def __init__(
        self,
        speech: SpeechStage | None,
        converter: ConversionStage | None = None,
        normalize: Callable[[str, str], str] = identity_normalizer,
        cache: PhraseCache[PcmAudio] | None = None,
        short_first_piece: bool = True,
        upstream: dict[str, SpeechStage] | None = None,
    ) -> None:
        """`speech`: WhisperSpeech (None when every voice takes its speech from an upstream);
        `upstream`: layer mode's speech stages, by profile name."""
        self.speech = speech
        self.upstream = upstream or {}
        self.converter = converter
        self.normalize = normalize
        self.cache = cache
        self.short_first_piece = short_first_piece
        # each voice's production speed, measured at warm-up (`engine`), then by the server
        self.speeds = Speeds()

    def output_rate(self, profile: VoiceProfile) -> int:
        """The one rate every chunk of a response for this profile has."""
        if profile.output_rate is not None:
            return profile.output_rate
        if profile.rvc is not None and self.converter is not None:
            return self.converter.output_rate(profile.rvc)
        return self.speech_for(profile).rate

    def speech_for(self, profile: VoiceProfile) -> SpeechStage:
        """The stage that speaks `profile`'s text: its upstream, or WhisperSpeech."""
        stage = self.upstream.get(profile.name) if profile.upstream is not None else self.speech
        if stage is None:
            raise EngineUnavailableError(f"voice {profile.name!r} has no speech stage loaded")
        return stage

    @property
    def max_text_bytes(self) -> int:
        return self.speech.max_text_bytes if self.speech is not None else MAX_TEXT_BYTES

    def check(self, profile: VoiceProfile) -> None:
        """Raise `EngineUnavailableError` when this pipeline cannot speak `profile`."""
        if profile.rvc is not None and self.converter is None:
            raise EngineUnavailableError(
                f"voice {profile.name!r} needs RVC, but no RVC engine is available"
            )
        self.speech_for(profile)

    def sentence_stream(self) -> SentenceStream:
        return SentenceStream(self.max_text_bytes)

    def split(self, text: str) -> list[str]:
        """Sentences of `text`; a long first sentence is cut at its first clause (early audio)."""
        sentences = split_sentences(text, self.max_text_bytes)
        return self.first_pieces(sentences[0]) + sentences[1:] if sentences else []

    def first_pieces(self, sentence: str) -> list[str]:
        return first_piece(sentence) if self.short_first_piece else [sentence]

    def synthesize(
        self, text: str, profile: VoiceProfile, language: str | None = None
    ) -> Iterator[PcmAudio]:
        """Yield one PCM piece per sentence of `text`, in order, without pauses between them."""
        for sentence in self.split(text):
            yield self.synthesize_sentence(sentence, profile, language)

    def synthesize_sentence(
        self, sentence: str, profile: VoiceProfile, language: str | None = None
    ) -> PcmAudio:
        """Speak one sentence with `profile`, at the profile's output rate."""
        return self.synthesize_sentences([sentence], profile, language)[0]

    def synthesize_sentences(
        self, sentences: list[str], profile: VoiceProfile, language: str | None = None
    ) -> list[PcmAudio]:
        """Speak several sentences, generated as one batch (the models' weights are then read
        once per step for all of them); one PCM per sentence. The same code as the server's
        streamed path, run to the end in the calling thread.

        Raises `ClientError` for failures a client should be told about (out of memory, a
        voice that cannot be loaded); the GPU cache is freed after an out-of-memory error.
        """
        jobs = self.prepare(sentences, profile, language)
        out: list[list[bytes]] = [[] for _ in jobs]
        for index, job in enumerate(jobs):
            if job.cached is not None:
                out[index].append(job.cached.data)
        streams: dict[int, SentenceAudio] = {}
        with synthesis_errors():
            for piece in self.speech_pieces(jobs, profile, CHUNK_FRAMES):
                stream = streams.get(piece.sentence)
                if stream is None:
                    stream = self.sentence_audio(jobs[piece.sentence], profile)
                    streams[piece.sentence] = stream
                out[piece.sentence].append(stream.feed(piece).data)
        rate = self.output_rate(profile)
        return [PcmAudio(b"".join(parts), rate) for parts in out]

    def prepare(
        self, sentences: list[str], profile: VoiceProfile, language: str | None = None
    ) -> list[SentenceJob]:
        """Normalize each sentence and look it up in the phrase cache (cheap: any thread)."""
        self.check(profile)
        lang = language or profile.language
        jobs = []
        for sentence in sentences:
            spoken = self.normalize(sentence, lang)
            key = (
                profile.name,
                profile.whisperspeech,
                profile.upstream,
                profile.rvc,
                profile.output_rate,
                lang,
                spoken,
            )
            cached = self.cache.get(key) if self.cache is not None else None
            jobs.append(SentenceJob(key, spoken, lang, cached))
        return jobs

    def speech_pieces(
        self, jobs: list[SentenceJob], profile: VoiceProfile, chunk: int
    ) -> Iterator[SpeechPiece]:
        """The decode side: speech pieces of every job not in the cache, `sentence` indexing
        `jobs`, in order within each sentence. Run it in one thread."""
        todo = [i for i, job in enumerate(jobs) if job.cached is None]
        if not todo:
            return
        # Spoken forms can be longer than the models take: the stage splits them again.
        texts = [jobs[i].spoken for i in todo]
        language = jobs[todo[0]].language
        stage = self.speech_for(profile)
        for piece in stage.stream(texts, language, profile.whisperspeech, chunk):
            yield replace(piece, sentence=todo[piece.sentence])

    def begin_speech(
        self,
        jobs: list[SentenceJob],
        profile: VoiceProfile,
        chunk: int,
        batches: DecodeBatches,
        metrics: RequestMetrics | None = None,
    ) -> SpeechWork:
        """Start the decode side of `jobs` (those not in the cache): in the shared `batches`
        when the profile speaks with WhisperSpeech, else on the stage's own iterator."""
        todo = [i for i, job in enumerate(jobs) if job.cached is None]
        stage = self.speech_for(profile)
        if todo and isinstance(stage, WhisperSpeechStage):
            texts = [jobs[i].spoken for i in todo]
            language = jobs[todo[0]].language
            task = stage.begin(
                batches, texts, language, profile.whisperspeech, chunk, None, metrics
            )
            return SharedSpeech(todo, task)
        return IteratorSpeech(self.speech_pieces(jobs, profile, chunk))

    def sentence_audio(self, job: SentenceJob, profile: VoiceProfile) -> SentenceAudio:
        """The audio side of one sentence: vocoder, RVC and resampling streams (on the thread
        that feeds it). Loads the RVC voice if it is not loaded (`VoiceUnavailableError`)."""
        stage = self.speech_for(profile)
        conversion = None
        if profile.rvc is not None and self.converter is not None:
            conversion = self.converter.open_stream(profile.rvc, stage.rate)
        native = conversion.rate if conversion is not None else stage.rate
        return SentenceAudio(
            stage, self.cache, job, conversion, StreamResampler(native, self.output_rate(profile))
        )

    def silence(self, profile: VoiceProfile, seconds: float) -> PcmAudio:
        """Silence at the profile's output rate."""
        return PcmAudio(
            to_pcm16(Audio.silence(seconds, self.output_rate(profile))), self.output_rate(profile)
        )


class SentenceAudio:
    """One sentence's audio side: speech pieces in order → PCM pieces at the output rate.

    Codes are vocoded in pieces equal to whole decoding, converted by RVC in context windows,
    resampled in pieces equal to whole resampling; the finished sentence goes into the phrase
    cache. Fed from one thread (the audio worker)."""

    def __init__(
        self,
        speech: SpeechStage,
        cache: PhraseCache[PcmAudio] | None,
        job: SentenceJob,
        conversion: ConversionStream | None,
        resampler: StreamResampler,
    ) -> None:
        self.speech = speech
        self.cache = cache
        self.job = job
        self.conversion = conversion
        self.resampler = resampler
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


class SharedSpeech:
    """One `speak` call decoded in the shared batches (whoever steps them makes its pieces)."""

    def __init__(self, todo: list[int], task: SpeechTask) -> None:
        self._todo = todo
        self._task = task

    @property
    def rows(self) -> int:
        return self._task.rows

    @property
    def done(self) -> bool:
        return self._task.done

    def advance(self) -> None:
        """Nothing to do alone: the shared step moves this work on."""

    def pieces(self) -> list[SpeechPiece]:
        return [replace(p, sentence=self._todo[p.sentence]) for p in self._task.pieces()]

    def cancel(self) -> None:
        self._task.cancel()


class IteratorSpeech:
    """One `speak` call decoded by a stage's own iterator, one piece per `advance`."""

    def __init__(self, pieces: Iterator[SpeechPiece]) -> None:
        self._iterator = pieces
        self._ready: list[SpeechPiece] = []
        self.done = False
        self.rows = 1

    def advance(self) -> None:
        if self.done:
            return
        with timed("speech"):
            piece = next(self._iterator, None)
        if piece is None:
            self.done = True
        else:
            self._ready.append(piece)

    def pieces(self) -> list[SpeechPiece]:
        ready, self._ready = self._ready, []
        return ready

    def cancel(self) -> None:
        self.done = True


SpeechWork = SharedSpeech | IteratorSpeech
