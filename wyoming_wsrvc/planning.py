"""Which sentences are generated together: the batching policy of a request.

A one-shot request's first sentence is generated alone (first audio as early as possible; a
long one is cut at its first clause), the rest in batches of `BATCH_SENTENCES` (one model pass
for several sentences; small, so that a disconnect stops work soon). A stream's sentences are
planned as they complete: its first alone, those that complete together in batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .pipeline import Pipeline
from .text.sentences import SentenceStream
from .text.ssml import ssml_to_text
from .voices import VoiceProfile

BATCH_SENTENCES = 3


def batches(sentences: list[str]) -> list[list[str]]:
    return [sentences[i : i + BATCH_SENTENCES] for i in range(0, len(sentences), BATCH_SENTENCES)]


def one_shot(pipeline: Pipeline, text: str) -> list[list[str]]:
    """The groups of a whole text: its first sentence alone, then batches."""
    sentences = pipeline.split(text)
    return [sentences[:1], *batches(sentences[1:])] if sentences else []


class TextTooLongError(ValueError):
    """A stream sent more text than the server accepts."""


@dataclass
class StreamPlan:
    """One `synthesize-start` … `synthesize-stop` stream: its voice, and its sentences as they
    complete (markup removed when it is SSML)."""

    pipeline: Pipeline
    profile: VoiceProfile
    language: str | None
    ssml: bool
    max_chars: int
    chars: int = 0
    started: bool = False
    sentences: SentenceStream = field(init=False)

    def __post_init__(self) -> None:
        self.sentences = self.pipeline.sentence_stream()

    def add(self, text: str) -> list[list[str]]:
        """More text; the groups of the sentences it completed."""
        self.chars += len(text)
        if self.chars > self.max_chars:
            raise TextTooLongError(
                f"Streamed text is over the limit of {self.max_chars} characters"
            )
        return self._groups(self.sentences.add(text))

    def finish(self) -> list[list[str]]:
        """The stream ended: the groups of what was left."""
        return self._groups(self.sentences.finish())

    def _groups(self, sentences: list[str]) -> list[list[str]]:
        if self.ssml:
            sentences = [" ".join(ssml_to_text(sentence).split()) for sentence in sentences]
        sentences = [sentence for sentence in sentences if sentence]
        if not sentences:
            return []
        groups: list[list[str]] = []
        if not self.started:
            self.started = True
            groups += [[piece] for piece in self.pipeline.first_pieces(sentences[0])]
            sentences = sentences[1:]
        return groups + batches(sentences)
