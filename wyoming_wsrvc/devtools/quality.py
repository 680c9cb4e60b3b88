"""Intelligibility check: speak sentences with a profile, transcribe them with Whisper, report
the character error rate (CER) per profile, so a user can see whether an RVC voice keeps speech
understandable.

``python -m wyoming_wsrvc.devtools quality --voice NAME [--voice NAME…] [--sentences FILE]
[--whisper base|PATH] [--data-dir DIR] [--voices DIR] [--offline]`` (needs the `quality` extra:
openai-whisper). Whisper weights are downloaded (into `<data-dir>/whisper`) only without
`--offline`; a local Whisper checkpoint path works too.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

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
    seconds: float


@dataclass(frozen=True)
class ProfileResult:
    voice: str
    cer: float
    sentences: list[SentenceResult]


def _canonical(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"[^\w\s]", " ", text)
    return " ".join(text.split())


def cer(reference: str, hypothesis: str) -> float:
    """Levenshtein distance between the canonical forms, over the reference length."""
    ref, hyp = _canonical(reference), _canonical(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i]
        for j, h in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1] / len(ref)


def speak(pipeline: Pipeline, text: str, profile: VoiceProfile) -> Audio:
    """The whole text as one 16 kHz Audio (what Whisper listens to)."""
    pcm = b"".join(piece.data for piece in pipeline.synthesize(text, profile))
    rate = pipeline.output_rate(profile)
    samples = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0
    return resample(Audio(samples, rate), 16000)


def evaluate(
    pipeline: Pipeline, profiles: list[VoiceProfile], sentences: list[str], whisper_model: Any
) -> list[ProfileResult]:
    """Speak every sentence with every profile and score Whisper's transcript of it."""
    results = []
    for profile in profiles:
        scored = []
        for text in sentences:
            audio = speak(pipeline, text, profile)
            transcript = str(
                whisper_model.transcribe(
                    audio.samples, language=profile.language, fp16=False, temperature=0.0
                )["text"]
            ).strip()
            scored.append(SentenceResult(text, transcript, cer(text, transcript), audio.seconds))
            _LOGGER.info("%s: CER %.3f %r -> %r", profile.name, scored[-1].cer, text, transcript)
        mean = float(np.mean([s.cer for s in scored])) if scored else 0.0
        results.append(ProfileResult(profile.name, mean, scored))
    return results


def report(results: list[ProfileResult]) -> str:
    lines = ["| voice | CER | sentences |", "|---|---|---|"]
    lines += [f"| {r.voice} | {r.cer:.3f} | {len(r.sentences)} |" for r in results]
    return "\n".join(lines)


def to_json(results: list[ProfileResult]) -> str:
    return json.dumps([asdict(r) for r in results], indent=1, ensure_ascii=False)


def read_sentences(path: Path | None) -> list[str]:
    if path is None:
        return DEFAULT_SENTENCES
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
