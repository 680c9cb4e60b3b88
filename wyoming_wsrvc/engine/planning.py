"""Which sentences are generated together: the batching policy of a request.

A one-shot request's first sentence is generated alone (first audio as early as possible; a
long one is cut at its first clause), the rest in batches of `BATCH_SENTENCES` (one model pass
for several sentences; small, so that a disconnect stops work soon). A stream's sentences are
planned as they complete: its first alone, those that complete together in batches.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..config.voices import VoiceProfile
from ..metrics import RequestMetrics
from ..text.sentences import SentenceStream
from ..text.ssml import SsmlStream, tidy
from .pipeline import Pipeline

BATCH_SENTENCES = 3


def batches(sentences: list[str]) -> list[list[str]]:
    return [sentences[i : i + BATCH_SENTENCES] for i in range(0, len(sentences), BATCH_SENTENCES)]


def one_shot(pipeline: Pipeline, text: str) -> list[list[str]]:
    """The groups of a whole text: its first sentence alone, then batches."""
    sentences = pipeline.split(text)
    return [sentences[:1], *batches(sentences[1:])] if sentences else []


class TextTooLongError(ValueError):
    """A stream sent more text than the server accepts."""


SSML_ROOT = "<speak"


@dataclass
class StreamPlan:
    """One `synthesize-start` … `synthesize-stop` stream: its voice, and its sentences as they
    complete. SSML (`text_format: ssml`, or text that begins with `<speak`: Home Assistant never
    says the format) has its markup removed as it arrives, tags split between chunks included."""

    pipeline: Pipeline
    profile: VoiceProfile
    language: str | None
    ssml: bool | None  # None: decided by the stream's first characters
    max_chars: int
    started: bool = False
    sentences: SentenceStream = field(init=False)
    metrics: RequestMetrics = field(init=False)  # also the stream's character count
    markup: SsmlStream = field(init=False, default_factory=SsmlStream)
    _head: str = ""  # text held while the format is undecided
    _text_seen: bool = False  # a chunk that is not only whitespace arrived

    def __post_init__(self) -> None:
        self.sentences = self.pipeline.sentence_stream()
        self.metrics = RequestMetrics(self.profile.name)

    def add(self, text: str) -> list[list[str]]:
        """More text; the groups of the sentences it completed."""
        if text.strip() and not self._text_seen:
            self._text_seen = True
            self.metrics.started = time.monotonic()  # first audio counts from the first text
        self.metrics.characters += len(text)
        if self.metrics.characters > self.max_chars:
            raise TextTooLongError(
                f"Streamed text is over the limit of {self.max_chars} characters"
            )
        return self._groups(self.sentences.add(self._plain(text)))

    def finish(self) -> list[list[str]]:
        """The stream ended: the groups of what was left."""
        text = self._plain("", final=True)
        if self.ssml:
            text += self.markup.finish()
        return self._groups(self.sentences.add(text) + self.sentences.finish())

    def _plain(self, text: str, final: bool = False) -> str:
        """`text` without markup, once the format is known ("" while it is not)."""
        if self.ssml is None:
            self._head += text
            probe = self._head.lstrip().lower()
            if not final and len(probe) < len(SSML_ROOT) and SSML_ROOT.startswith(probe):
                return ""
            self.ssml = probe.startswith(SSML_ROOT)
            text, self._head = self._head, ""
        return self.markup.add(text) if self.ssml else text

    def _groups(self, sentences: list[str]) -> list[list[str]]:
        if self.ssml:
            sentences = [tidy(sentence) for sentence in sentences]
        sentences = [sentence for sentence in sentences if sentence]
        if not sentences:
            return []
        self.metrics.sentences += len(sentences)
        groups: list[list[str]] = []
        if not self.started:
            self.started = True
            groups += [[piece] for piece in self.pipeline.first_pieces(sentences[0])]
            sentences = sentences[1:]
        return groups + batches(sentences)
