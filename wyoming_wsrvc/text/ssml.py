"""SSML to plain text: markup is removed, never read aloud.

Supported meaning: `<sub alias="x">y</sub>` speaks `x`; `<break/>` and `<p>`/`<s>` boundaries
become sentence breaks; every other tag is dropped and its text kept. Entities are unescaped.
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


def ssml_to_text(ssml: str) -> str:
    """Return the text an SSML document speaks."""
    text = _COMMENT.sub(" ", ssml)
    text = _DECL.sub(" ", text)
    text = _SUB.sub(lambda m: f" {m.group(2)} ", text)
    text = _BREAK.sub("\n\n", text)
    text = _TAG.sub(" ", text)
    text = text.replace("<", " ").replace(">", " ")
    text = html.unescape(text)
    lines = [_SPACE_BEFORE_PUNCT.sub(r"\1", " ".join(line.split())) for line in text.split("\n\n")]
    return "\n\n".join(line for line in lines if line)
