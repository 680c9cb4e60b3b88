"""SSML to plain text: markup is removed, never read aloud.

Supported meaning: `<sub alias="x">y</sub>` speaks `x`; `<break/>` and `<p>`/`<s>` boundaries
become sentence breaks; every other tag is dropped and its text kept. Entities are unescaped;
line breaks are spaces (whitespace means nothing in SSML). `SsmlStream` does the same for SSML
that arrives in chunks, holding back a tag, comment, `<sub>` or entity split between chunks.
"""

from __future__ import annotations

import html
import re

_SUB = re.compile(r"<sub\b[^>]*?\balias\s*=\s*(['\"])(.*?)\1[^>]*>.*?</sub\s*>", re.S | re.I)
_BREAK = re.compile(r"<(break|/p|/s)\b[^>]*>", re.I)
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_DECL = re.compile(r"<\?.*?\?>|<!\[CDATA\[|\]\]>|<!DOCTYPE[^>]*>", re.S | re.I)
_TAG = re.compile(r"</?[A-Za-z][^<>]*>")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,!?;:…])")
_SUB_OPEN = re.compile(r"<sub\b", re.I)
_SUB_CLOSE = re.compile(r"</sub\s*>", re.I)
BREAK = "\n\n"  # a sentence boundary for the sentence splitter
ROOT = "<speak"
ENTITY_MAX = 10  # "&#x1F600;" and "&hellip;" fit


def opens_ssml(text: str) -> bool | None:
    """Whether a document that starts with `text` is SSML: the one rule for one-shot text and
    streams alike. It is when it says so (`text_format: ssml`, which Home Assistant never
    sends) or begins with `<speak` (any case, after whitespace); None while `text` is too
    short to tell (a stream's first characters)."""
    probe = text.lstrip().lower()
    if len(probe) < len(ROOT) and ROOT.startswith(probe):
        return None
    return probe.startswith(ROOT)


def ssml_to_text(ssml: str) -> str:
    """Return the text an SSML document speaks."""
    return tidy(strip_markup(ssml))


def strip_markup(ssml: str) -> str:
    """Markup removed from a complete fragment, its outer whitespace kept (fragments of a stream
    join without gluing words); sentence boundaries are `BREAK`."""
    text = ssml.replace("\r", " ").replace("\n", " ")
    text = _COMMENT.sub(" ", text)
    text = _DECL.sub(" ", text)
    text = _SUB.sub(lambda m: f" {m.group(2)} ", text)
    text = _BREAK.sub(BREAK, text)
    text = _TAG.sub(" ", text)
    text = text.replace("<", " ").replace(">", " ")
    return html.unescape(text)


def tidy(text: str) -> str:
    """Whitespace collapsed, no space before punctuation, empty sentences dropped."""
    lines = [_SPACE_BEFORE_PUNCT.sub(r"\1", " ".join(line.split())) for line in text.split(BREAK)]
    return BREAK.join(line for line in lines if line)


class SsmlStream:
    """SSML arriving in chunks → text: each `add` returns the text of what is complete so far."""

    def __init__(self) -> None:
        self._pending = ""

    def add(self, chunk: str) -> str:
        self._pending += chunk
        cut = _complete_prefix(self._pending)
        ready, self._pending = self._pending[:cut], self._pending[cut:]
        return strip_markup(ready)

    def finish(self) -> str:
        rest, self._pending = self._pending, ""
        return strip_markup(rest)


def _complete_prefix(text: str) -> int:
    """Length of the longest prefix that ends outside any tag, comment, `<sub>` or entity."""
    cut = len(text)
    tag = text.rfind("<")
    if tag >= 0 and ">" not in text[tag:]:
        cut = tag
    comment = text.rfind("<!--")
    if comment >= 0 and "-->" not in text[comment:]:
        cut = min(cut, comment)
    subs = list(_SUB_OPEN.finditer(text))
    if subs and not _SUB_CLOSE.search(text, subs[-1].start()):
        cut = min(cut, subs[-1].start())
    entity = text.rfind("&")
    if entity >= 0 and ";" not in text[entity:] and len(text) - entity < ENTITY_MAX:
        cut = min(cut, entity)
    return cut
