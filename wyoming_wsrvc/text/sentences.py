"""Sentence splitting, for whole texts and for text that arrives in arbitrary chunks.

A boundary is sentence-final punctuation (`. ! ? … 。 ！ ？` and friends), optionally followed by
closing quotes or brackets, then whitespace and a next character that can start a sentence; or a
line break. A `.` after a known abbreviation, a single letter ("J. R. R."), or before a lowercase
word is not a boundary. Pieces longer than the model accepts are split again at clause boundaries
(`, ; : –`), then between words, so no text is ever dropped.
"""

from __future__ import annotations

import re

_FINAL = ".!?…。！？؟"
_CLOSERS = "\"'”’»)]}」』"
# Words after which "." is an abbreviation, not a sentence end (lowercase, without the dot).
# Ordinary words ("no", "sun", "art") are left out on purpose: they end sentences far more often.
_ABBREVIATIONS = frozenset(
    """mr mrs ms dr prof sr jr vs etc eg ie e.g i.e nr fig approx dept inc ltd corp
    feb apr jun jul aug sep sept oct nov dec tue thu fri hr herr bzw ca dh z.b zb usw ggf vgl
    mme mlle av ave blvd sra srta dña uds núm pág sgt capt lt""".split()
)
_CLAUSE = re.compile(r"(?<=[,;:–—])\s+")
_SPACE = re.compile(r"\s+")


def _is_abbreviation(text: str, pos: int, next_char: str) -> bool:
    """Whether the `.` at `text[pos]` ends an abbreviation, an initial or an ordinal."""
    word = re.search(r"(\S+)\.$", text[: pos + 1])
    token = word.group(1).lower().lstrip(_CLOSERS + "\"'(") if word else ""
    if token in _ABBREVIATIONS or (len(token) == 1 and token.isalpha()):
        return True
    return next_char.islower() or (next_char.isdigit() and token.isdigit())


def _first_boundary(text: str, final: bool) -> int | None:
    """Index just past the first complete sentence in `text`, or None when there is none yet."""
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\n":
            return i + 1
        if ch not in _FINAL:
            i += 1
            continue
        j = i + 1
        while j < n and (text[j] in _FINAL or text[j] in _CLOSERS):
            j += 1
        if j < n and not text[j].isspace():
            i = j  # "3.5", "a.b", "?!x": no boundary here
            continue
        k = j
        while k < n and text[k].isspace() and text[k] != "\n":
            k += 1
        if k >= n:
            return j if final else None  # the next character decides; wait for it
        if ch == "." and text[k] != "\n" and _is_abbreviation(text, i, text[k]):
            i = k
            continue
        return j
    return None


def _clean(sentence: str) -> str:
    return _SPACE.sub(" ", sentence).strip()


def limit_length(sentence: str, max_bytes: int) -> list[str]:
    """Split a sentence whose UTF-8 form is over `max_bytes` at clauses, then words, then bytes."""
    if len(sentence.encode("utf-8")) <= max_bytes:
        return [sentence]
    pieces: list[str] = []
    for unit_pattern in (_CLAUSE, _SPACE):
        units = unit_pattern.split(sentence)
        if len(units) > 1:
            current = ""
            for unit in units:
                candidate = f"{current} {unit}".strip()
                if current and len(candidate.encode("utf-8")) > max_bytes:
                    pieces.extend(limit_length(current, max_bytes))
                    current = unit
                else:
                    current = candidate
            if current:
                pieces.extend(limit_length(current, max_bytes))
            return pieces
    # One unbroken word longer than the limit: cut at character boundaries.
    current = ""
    for ch in sentence:
        if len((current + ch).encode("utf-8")) > max_bytes:
            pieces.append(current)
            current = ""
        current += ch
    if current:
        pieces.append(current)
    return pieces


# Words that start a phrase: a long first sentence without a comma is cut before one of them.
_PHRASE_STARTS = frozenset(
    """and or but because so when if while in on at for with to from after before until
    und oder aber weil wenn dass mit für nach vor bis et ou mais parce quand si avec pour dans
    y o pero porque cuando con para en e ma perché quando per con em para com en of maar omdat
    wanneer met voor i lub ale bo gdy kiedy dla przez""".split()
)


def first_piece(sentence: str, longer_than: int = 32, min_chars: int = 14) -> list[str]:
    """Cut a long first sentence so the first audio comes early: at its first clause boundary
    (`, ; : –`), else before a word that starts a phrase ("… lights | in ten minutes").

    Returns [sentence] when it is short or has no such place with `min_chars` on both sides.
    """
    if len(sentence) <= longer_than:
        return [sentence]
    for match in _CLAUSE.finditer(sentence):
        head, tail = sentence[: match.start()].strip(), sentence[match.end() :].strip()
        if len(head) >= min_chars and len(tail) >= min_chars // 2:
            return [head, tail]
    for match in re.finditer(r"\s+(\w+)", sentence):
        head, tail = sentence[: match.start()].strip(), sentence[match.start() :].strip()
        if (
            match.group(1).lower() in _PHRASE_STARTS
            and len(head) >= min_chars
            and len(tail) >= min_chars
        ):
            return [head, tail]
    return [sentence]


def split_sentences(text: str, max_bytes: int = 10_000) -> list[str]:
    """Split a whole text into sentences of at most `max_bytes` UTF-8 bytes each."""
    stream = SentenceStream(max_bytes)
    return stream.add(text) + stream.finish()


class SentenceStream:
    """Yields sentences as soon as their end is known, from text arriving in arbitrary chunks."""

    def __init__(self, max_bytes: int = 10_000) -> None:
        self.max_bytes = max_bytes
        self._buffer = ""

    def add(self, chunk: str) -> list[str]:
        """Add text; return the sentences completed by it."""
        self._buffer += chunk
        return self._drain(final=False)

    def finish(self) -> list[str]:
        """No more text: return whatever is left as the last sentences."""
        sentences = self._drain(final=True)
        rest = _clean(self._buffer)
        self._buffer = ""
        if rest:
            sentences.extend(limit_length(rest, self.max_bytes))
        return sentences

    @property
    def pending(self) -> str:
        return self._buffer

    def _drain(self, final: bool) -> list[str]:
        out: list[str] = []
        while True:
            cut = _first_boundary(self._buffer, final)
            if cut is None:
                break
            sentence, self._buffer = _clean(self._buffer[:cut]), self._buffer[cut:]
            if sentence:
                out.extend(limit_length(sentence, self.max_bytes))
        # A very long run without any boundary is emitted at a clause once it is safely long.
        if not final and len(self._buffer.encode("utf-8")) > 2 * self.max_bytes:
            pieces = limit_length(_clean(self._buffer), self.max_bytes)
            out.extend(pieces[:-1])
            self._buffer = pieces[-1] if pieces else ""
        return out
