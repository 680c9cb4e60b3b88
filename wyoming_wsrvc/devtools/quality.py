"""Intelligibility check: speak sentences with a profile, transcribe them with Whisper, report
the character and word error rates (CER, WER) per profile, so a user can see whether an RVC voice
keeps speech understandable.

``python -m wyoming_wsrvc.devtools quality --voice NAME [--voice NAME…] [--sentences FILE]
[--whisper base|PATH|DIR] [--uri tcp://HOST:PORT [--streaming]] [--data-dir DIR] [--voices DIR]
[--offline]`` (needs the `quality` extra). Whisper is an openai-whisper model name (its weights
downloaded into `<data-dir>/whisper` only without `--offline`), an openai-whisper checkpoint file,
or a folder with a Whisper model in CTranslate2 format (`model.bin`, `config.json`, …), run by
faster-whisper. With `--uri` the sentences are spoken by a running Wyoming TTS server (this one
or another: wyoming-piper, say) over its socket, as Home Assistant asks for them, instead of by
the profiles in-process.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from ..audio import Audio, resample
from ..config.voices import VoiceProfile
from ..engine.pipeline import Pipeline

_LOGGER = logging.getLogger(__name__)

DEFAULT_SENTENCES = [
    "Turn on the lights in the living room.",
    "The temperature outside is twenty one degrees.",
    "Your timer for the pasta is done.",
    "Good night, and sleep well.",
]


@dataclass(frozen=True)
class SentenceResult:
    text: str
    transcript: str
    cer: float
    wer: float
    seconds: float


@dataclass(frozen=True)
class ProfileResult:
    voice: str
    cer: float
    wer: float
    sentences: list[SentenceResult]


class Transcriber(Protocol):
    def __call__(self, samples: np.ndarray, language: str | None) -> str:
        """The words heard in 16 kHz mono float32 `samples`."""
        ...


def openai_whisper(checkpoint: Path) -> Transcriber:
    """An openai-whisper checkpoint (`.pt`), greedy, float32 on the CPU."""
    import whisper

    model = whisper.load_model(str(checkpoint), device="cpu")

    def transcribe(samples: np.ndarray, language: str | None) -> str:
        result = model.transcribe(samples, language=language, fp16=False, temperature=0.0)
        return str(result["text"]).strip()

    return transcribe


def faster_whisper(folder: Path) -> Transcriber:
    """A Whisper model in CTranslate2 format (a folder with `model.bin`), run by faster-whisper:
    greedy, float32 on the CPU, no voice-activity filter (every piece of the audio is heard)."""
    from faster_whisper import WhisperModel

    model = WhisperModel(str(folder), device="cpu", compute_type="float32")
    english_only = model.model.is_multilingual is False

    def transcribe(samples: np.ndarray, language: str | None) -> str:
        segments, _ = model.transcribe(
            samples,
            language="en" if english_only else language,
            beam_size=1,
            temperature=0.0,
            vad_filter=False,
            condition_on_previous_text=False,
        )
        return " ".join(segment.text.strip() for segment in segments).strip()

    return transcribe


def transcriber(whisper: Path) -> Transcriber:
    """faster-whisper for a CTranslate2 folder, openai-whisper for a checkpoint file."""
    if whisper.is_dir():
        return faster_whisper(whisper)
    return openai_whisper(whisper)


def _canonical(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"[^\w\s]", " ", text)
    return " ".join(text.split())


def _error_rate(ref: list[str] | str, hyp: list[str] | str) -> float:
    """Levenshtein distance over the reference length."""
    if not ref:
        return 0.0 if not hyp else 1.0
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i]
        for j, h in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1] / len(ref)


def cer(reference: str, hypothesis: str) -> float:
    """Character error rate between the canonical forms (lower case, no punctuation)."""
    return _error_rate(_canonical(reference), _canonical(hypothesis))


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate between the canonical forms ("7:45" heard as "7.45" is two words)."""
    return _error_rate(_canonical(reference).split(), _canonical(hypothesis).split())


def to_16k(pcm: bytes, rate: int) -> Audio:
    """16-bit mono PCM at `rate` as the 16 kHz Audio Whisper listens to."""
    samples = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0
    return resample(Audio(samples, rate), 16000)


def speak(pipeline: Pipeline, text: str, profile: VoiceProfile) -> Audio:
    """The whole text as one 16 kHz Audio, spoken in-process."""
    pcm = b"".join(piece.data for piece in pipeline.synthesize(text, profile))
    return to_16k(pcm, pipeline.output_rate(profile))


def score(
    voice: str, spoken: list[tuple[str, Audio]], transcribe: Transcriber, language: str | None
) -> ProfileResult:
    """Whisper's transcript of each (text, audio) scored against its text."""
    scored = []
    for text, audio in spoken:
        transcript = transcribe(audio.samples, language)
        result = SentenceResult(
            text, transcript, cer(text, transcript), wer(text, transcript), audio.seconds
        )
        scored.append(result)
        _LOGGER.info(
            "%s: CER %.3f WER %.3f %r -> %r", voice, result.cer, result.wer, text, transcript
        )
    return ProfileResult(
        voice,
        float(np.mean([s.cer for s in scored])) if scored else 0.0,
        float(np.mean([s.wer for s in scored])) if scored else 0.0,
        scored,
    )


def evaluate(
    pipeline: Pipeline, profiles: list[VoiceProfile], sentences: list[str], transcribe: Transcriber
) -> list[ProfileResult]:
    """Speak every sentence with every profile in-process and score Whisper's transcript."""
    return [
        score(
            profile.name,
            [(text, speak(pipeline, text, profile)) for text in sentences],
            transcribe,
            profile.language,
        )
        for profile in profiles
    ]


async def evaluate_remote(
    host: str,
    port: int,
    voices: list[str | None],
    sentences: list[str],
    transcribe: Transcriber,
    streaming: bool = False,
    language: str | None = "en",
) -> list[ProfileResult]:
    """Every sentence as a running Wyoming TTS server on `host:port` speaks it (one request each,
    as Home Assistant sends it: `streaming` word by word), scored like `evaluate`. `None` is the
    server's default voice."""
    from .loopback import speak as ask

    results = []
    for voice in voices:
        spoken = []
        for text in sentences:
            heard = await ask(port, text, voice, streaming=streaming, host=host, silence=120.0)
            if heard.error is not None:
                raise RuntimeError(f"{host}:{port} answered an error: {heard.error.text}")
            if len(heard.rates) != 1:
                raise RuntimeError(f"{host}:{port} sent audio at rates {sorted(heard.rates)}")
            spoken.append((text, to_16k(heard.audio, next(iter(heard.rates)))))
        results.append(score(voice or "(default)", spoken, transcribe, language))
    return results


def report(results: list[ProfileResult]) -> str:
    lines = ["| voice | CER | WER | sentences |", "|---|---|---|---|"]
    lines += [f"| {r.voice} | {r.cer:.3f} | {r.wer:.3f} | {len(r.sentences)} |" for r in results]
    return "\n".join(lines)


def to_json(results: list[ProfileResult]) -> str:
    return json.dumps([asdict(r) for r in results], indent=1, ensure_ascii=False)


def read_sentences(path: Path | None) -> list[str]:
    if path is None:
        return DEFAULT_SENTENCES
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
