"""Which sentences are generated together: the batching policy of a request.

A one-shot request's first sentence is generated alone (first audio as early as possible; a
long one is cut at its first clause), the rest in batches of `BATCH_SENTENCES` (one model pass
for several sentences; small, so that a disconnect stops work soon). A stream's sentences are
planned as they complete: its first alone, those that complete together in batches. SSML has
its markup removed first, by one rule (`text.ssml.opens_ssml`) for both.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..config.voices import VoiceProfile
from ..metrics import RequestMetrics
from ..text.sentences import SentenceStream
from ..text.ssml import SsmlStream, opens_ssml, ssml_to_text, tidy

BATCH_SENTENCES = 3


class TextTooLongError(ValueError):
    """A request sent more text than the server accepts."""


def batches(sentences: list[str]) -> list[list[str]]:
    return [sentences[i : i + BATCH_SENTENCES] for i in range(0, len(sentences), BATCH_SENTENCES)]


def one_shot(sentences: list[str]) -> list[list[str]]:
    """The groups of a whole text's sentences: its first alone, then batches."""
    return [sentences[:1], *batches(sentences[1:])] if sentences else []


def plain_text(text: str, declared_ssml: bool, max_chars: int) -> str:
    """A one-shot request's text without markup; `TextTooLongError` past `max_chars`."""
    if declared_ssml or opens_ssml(text):
        text = ssml_to_text(text)
    if len(text) > max_chars:
        raise TextTooLongError(f"Text of {len(text)} characters is over the limit of {max_chars}")
    return text


@dataclass
class StreamPlan:
    """One `synthesize-start` … `synthesize-stop` stream: its voice, and its sentences as they
    complete. SSML (`text_format: ssml`, or text that begins with `<speak`: Home Assistant never
    says the format) has its markup removed as it arrives, tags split between chunks included.
    `first_pieces`: how the first sentence is cut for early audio (`Pipeline.first_pieces`)."""

    sentences: SentenceStream
    first_pieces: Callable[[str, VoiceProfile], list[str]]
    profile: VoiceProfile
    language: str | None
    ssml: bool | None  # None: decided by the stream's first characters
    max_chars: int
    started: bool = False
    metrics: RequestMetrics = field(init=False)  # also the stream's character count
    markup: SsmlStream = field(init=False, default_factory=SsmlStream)
    _head: str = ""  # text held while the format is undecided
    _text_seen: bool = False  # a chunk that is not only whitespace arrived

    def __post_init__(self) -> None:
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
            decided = opens_ssml(self._head)
            if decided is None and not final:
                return ""
            self.ssml = bool(decided)
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
            groups += [[piece] for piece in self.first_pieces(sentences[0], self.profile)]
            sentences = sentences[1:]
        return groups + batches(sentences)
