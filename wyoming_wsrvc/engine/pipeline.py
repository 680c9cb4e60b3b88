"""The engine behind the server: text and a voice profile in, PCM sentences out.

Data flow, one `Utterance` (sentences generated together) at a time::

    text ──normalize(language)──► spoken-form text ──split──► sentences
    sentence ──speech stage (WhisperSpeech, or an upstream)──► pieces of speech @ 24 kHz
             ──conversion stage (RVC, optional)──► Audio @ voice rate (32/40/48 kHz)
             ──resample──► Audio @ profile output rate ──pcm16──► PcmAudio

The pipeline owns the stages and makes utterances; the scheduler runs their decode side and
audio side on its threads, and `synthesize` runs the very same steps inline (warm-up, the
quality check, the benchmark's references, tests). It knows nothing about asyncio or Wyoming.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence

import torch

from ..audio import Audio, to_pcm16
from ..config.voices import UpstreamParams, VoiceProfile
from ..metrics import RequestMetrics
from ..models.whisperspeech.decoding import DecodeBatches
from ..text.sentences import SentenceStream, first_piece, split_sentences
from .cache import PhraseCache
from .conversion import LoadedVoice, RvcConverter
from .conversion_stream import ConversionStream
from .failures import synthesis_errors
from .pacing import Speeds
from .planning import one_shot
from .speech import SpeechPiece, SpeechStage, run_alone
from .utterance import PcmAudio, Utterance
from .whisperspeech import MAX_TEXT_BYTES

_LOGGER = logging.getLogger(__name__)


class EngineUnavailableError(RuntimeError):
    """The server cannot synthesize: a stage it needs is missing."""


def identity_normalizer(text: str, language: str) -> str:
    return text


class Pipeline:
    """Shared by every connection; its utterances run on one thread per side at a time."""

    def __init__(
        self,
        speech: SpeechStage | None,
        converter: RvcConverter | None = None,
        normalize: Callable[[str, str], str] = identity_normalizer,
        cache: PhraseCache[PcmAudio] | None = None,
        short_first_piece: bool = True,
        upstream: dict[UpstreamParams, SpeechStage] | None = None,
    ) -> None:
        """`speech`: WhisperSpeech (None when every voice takes its speech from an upstream);
        `upstream`: layer mode's speech stages, by their settings (a voice changed while the
        server runs gets a stage of its own; requests under way keep theirs)."""
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
        upstream = profile.upstream
        stage = self.speech if upstream is None else self.upstream.get(upstream)
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

    def split(self, text: str, profile: VoiceProfile) -> list[str]:
        """Sentences of `text`; a long first sentence is cut at its first clause for early audio
        (`first_pieces`)."""
        sentences = split_sentences(text, self.max_text_bytes)
        return self.first_pieces(sentences[0], profile) + sentences[1:] if sentences else []

    def first_pieces(self, sentence: str, profile: VoiceProfile) -> list[str]:
        """How a request's first sentence is cut for early audio: at its first clause for a
        WhisperSpeech voice (its speech is decoded token by token, so a short piece is heard
        sooner); whole for a layer voice, whose upstream speaks a sentence in a fraction of its
        length, while each piece would be a request of its own, with its own intonation and a
        pause where the sentence was cut."""
        if profile.upstream is not None or not self.short_first_piece:
            return [sentence]
        return first_piece(sentence)

    def utterance(
        self,
        sentences: Sequence[str],
        profile: VoiceProfile,
        language: str | None = None,
        metrics: RequestMetrics | None = None,
        opens: bool = True,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> Utterance:
        """`sentences` to be generated together with `profile` (stage times to `metrics`).
        `opens`: they are the first of a request (or stream), so the first sentence's audio is
        what the listener waits for: its conversion starts with a short segment; every other
        sentence's audio plays after audio that comes before it, so its conversion starts with
        a full segment, which costs less (`ConversionStream`'s `short_start`). `generator`: the
        random numbers the speech stage's sampling draws (None: torch's global generator).
        `use_cache`: the phrase cache answers and keeps its sentences (False: the models speak
        every sentence, and nothing is kept: the warm-up, which measures them)."""
        self.check(profile)
        rvc, converter = profile.rvc, self.converter

        loaded: list[LoadedVoice] = []  # its sentences all speak with the voice loaded first

        def open_conversion(rate: int, sentence: int) -> ConversionStream | None:
            if rvc is None or converter is None:
                return None
            voice = loaded[0] if loaded else None
            short_start = opens and sentence == 0
            stream = ConversionStream(converter, rvc, rate, voice, short_start)
            loaded[:] = [stream.voice]
            return stream

        return Utterance(
            sentences,
            profile,
            language or profile.language,
            self.speech_for(profile),
            self.normalize,
            self.cache if use_cache else None,
            open_conversion,
            lambda: self.output_rate(profile),
            metrics,
            generator,
        )

    def decode(self, utterance: Utterance) -> Iterator[list[SpeechPiece]]:
        """The decode side of `utterance` alone, turn by turn (on the calling thread)."""
        batches = DecodeBatches()
        with torch.inference_mode():
            yield from run_alone(batches, utterance.begin(batches))

    def synthesize(
        self, text: str, profile: VoiceProfile, language: str | None = None
    ) -> Iterator[PcmAudio]:
        """Yield one PCM piece per sentence of `text`, in order, without pauses between them:
        the sentences grouped as the server groups a one-shot request (`planning.one_shot`)."""
        for number, group in enumerate(one_shot(self.split(text, profile))):
            yield from self.synthesize_sentences(group, profile, language, opens=number == 0)

    def synthesize_sentence(
        self, sentence: str, profile: VoiceProfile, language: str | None = None
    ) -> PcmAudio:
        """Speak one sentence with `profile`, at the profile's output rate."""
        return self.synthesize_sentences([sentence], profile, language)[0]

    def synthesize_sentences(
        self,
        sentences: list[str],
        profile: VoiceProfile,
        language: str | None = None,
        opens: bool = True,
    ) -> list[PcmAudio]:
        """Speak several sentences generated together (the models' weights are then read once
        per step for all of them); one PCM per sentence. The server's steps, inline (`opens`:
        as `utterance`).

        Raises `ClientError` for failures a client should be told about (out of memory, a
        voice that cannot be loaded); the GPU cache is freed after an out-of-memory error.
        """
        utterance = self.utterance(sentences, profile, language, opens=opens)
        out: list[list[bytes]] = [[] for _ in sentences]
        with synthesis_errors():
            for each in utterance.cached():
                out[each.sentence].append(each.pcm.data)
            for pieces in self.decode(utterance):
                for each in utterance.audio(pieces):
                    out[each.sentence].append(each.pcm.data)
        return [PcmAudio(b"".join(parts), utterance.output_rate) for parts in out]

    def silence(self, profile: VoiceProfile, seconds: float) -> PcmAudio:
        """Silence at the profile's output rate."""
        rate = self.output_rate(profile)
        return PcmAudio(to_pcm16(Audio.silence(seconds, rate)), rate)
