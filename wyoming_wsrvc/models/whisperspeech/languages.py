"""Whisper's language order, which the WhisperSpeech language embeddings are indexed by."""

from __future__ import annotations

from ...text.language import base_language

LANGUAGES = (
    "en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu ta no th ur "
    "hr bg lt la mi ml cy sk te fa lv bn sr az sl kn et mk br eu is hy ne mn bs kk sq sw gl mr pa si "
    "km sn yo so af oc ka be tg sd gu am yi lo uz fo ht ps tk nn mt sa lb my bo tl mg as tt haw ln "
    "ha ba jw su"
).split()


def to_id(code: str) -> int:
    """Index of a language code such as `en` or `de_DE`; ValueError for unknown codes."""
    base = base_language(code)
    try:
        return LANGUAGES.index(base)
    except ValueError:
        raise ValueError(f"unknown language {code!r}") from None
