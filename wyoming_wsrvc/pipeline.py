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

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import torch

from .audio import PCM_CHANNELS, PCM_WIDTH, Audio, concat, resample, to_pcm16
from .cache import PhraseCache
from .text.sentences import SentenceStream, first_piece, limit_length, split_sentences
from .voices import RvcParams, VoiceProfile, VoiceUnavailableError, WhisperSpeechParams

_LOGGER = logging.getLogger(__name__)


class EngineUnavailableError(RuntimeError):
    """The server cannot synthesize: a stage it needs is missing."""


class SynthesisError(RuntimeError):
    """A request failed in a way the client should hear about; `code` goes into the error event."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code


class SpeechStage(Protocol):
    """Text to speech (WhisperSpeech)."""

    rate: int
    max_text_bytes: int

    def synthesize(self, text: str, language: str, params: WhisperSpeechParams) -> Audio:
        """Speak one sentence of spoken-form text; returns mono audio at `rate`."""
        ...


class ConversionStage(Protocol):
    """Voice conversion (RVC)."""

    def output_rate(self, params: RvcParams) -> int:
        """The native rate of the converted audio for this voice."""
        ...

    def convert(self, audio: Audio, params: RvcParams) -> Audio:
        """Convert one sentence of speech to the voice in `params`."""
        ...


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


def identity_normalizer(text: str, language: str) -> str:
    return text


class Pipeline:
    """Shared by every connection; called from one worker thread at a time."""

    def __init__(
        self,
        speech: SpeechStage,
        converter: ConversionStage | None = None,
        normalize: Callable[[str, str], str] = identity_normalizer,
        cache: PhraseCache[PcmAudio] | None = None,
        short_first_piece: bool = True,
    ) -> None:
        self.speech = speech
        self.converter = converter
        self.normalize = normalize
        self.cache = cache
        self.short_first_piece = short_first_piece

    def output_rate(self, profile: VoiceProfile) -> int:
        """The one rate every chunk of a response for this profile has."""
        if profile.output_rate is not None:
            return profile.output_rate
        if profile.rvc is not None and self.converter is not None:
            return self.converter.output_rate(profile.rvc)
        return self.speech.rate

    def check(self, profile: VoiceProfile) -> None:
        """Raise `EngineUnavailableError` when this pipeline cannot speak `profile`."""
        if profile.rvc is not None and self.converter is None:
            raise EngineUnavailableError(
                f"voice {profile.name!r} needs RVC, but no RVC engine is available"
            )

    def sentence_stream(self) -> SentenceStream:
        return SentenceStream(self.speech.max_text_bytes)

    def split(self, text: str) -> list[str]:
        """Sentences of `text`; a long first sentence is cut at its first clause (early audio)."""
        sentences = split_sentences(text, self.speech.max_text_bytes)
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
        """Speak several sentences, generated as one batch when the speech stage supports it
        (the models' weights are then read once per step for all of them); one PCM per sentence.

        Raises `SynthesisError` for failures a client should be told about (out of memory, a
        voice that cannot be loaded); the GPU cache is freed after an out-of-memory error.
        """
        self.check(profile)
        lang = language or profile.language
        spoken = [self.normalize(sentence, lang) for sentence in sentences]
        keys = [
            (profile.name, profile.whisperspeech, profile.rvc, profile.output_rate, lang, text)
            for text in spoken
        ]
        results: list[PcmAudio | None] = [
            self.cache.get(key) if self.cache is not None else None for key in keys
        ]
        missing = [i for i, result in enumerate(results) if result is None]
        if missing:
            try:
                rendered = self._render([spoken[i] for i in missing], profile, lang)
            except torch.OutOfMemoryError as err:
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                raise SynthesisError(
                    "out-of-memory", f"Out of memory while speaking: {err}"
                ) from err
            except VoiceUnavailableError as err:
                raise SynthesisError("voice-unavailable", str(err)) from err
            for i, pcm in zip(missing, rendered, strict=True):
                results[i] = pcm
                if self.cache is not None:
                    self.cache.put(keys[i], pcm)
        return [result for result in results if result is not None]

    def _render(self, spoken: list[str], profile: VoiceProfile, lang: str) -> list[PcmAudio]:
        start = time.perf_counter()
        params = profile.whisperspeech
        # Spoken forms can be longer than the written sentence: split again if needed.
        groups = [
            [p for p in limit_length(text, self.speech.max_text_bytes) if p] for text in spoken
        ]
        flat = [piece for group in groups for piece in group]
        batch = getattr(self.speech, "synthesize_batch", None)
        if batch is not None and len(flat) > 1:
            speech: list[Audio] = batch(flat, lang, params)
        else:
            speech = [self.speech.synthesize(piece, lang, params) for piece in flat]
        speech_done = time.perf_counter()
        out, index = [], 0
        for group in groups:
            parts = speech[index : index + len(group)]
            index += len(group)
            audio = concat(parts) if parts else Audio.silence(0, self.speech.rate)
            if profile.rvc is not None and self.converter is not None and len(audio):
                audio = self.converter.convert(audio, profile.rvc)
            audio = resample(audio, self.output_rate(profile))
            out.append(PcmAudio(to_pcm16(audio), audio.rate))
        _LOGGER.debug(
            "%d sentence(s), %d chars -> %.2f s audio in %.3f s (speech %.3f s): %r",
            len(spoken),
            sum(map(len, spoken)),
            sum(p.seconds for p in out),
            time.perf_counter() - start,
            speech_done - start,
            spoken[0][:60] if spoken else "",
        )
        return out

    def silence(self, profile: VoiceProfile, seconds: float) -> PcmAudio:
        """Silence at the profile's output rate."""
        return PcmAudio(
            to_pcm16(Audio.silence(seconds, self.output_rate(profile))), self.output_rate(profile)
        )
