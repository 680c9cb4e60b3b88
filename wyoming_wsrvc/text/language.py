"""Language codes as clients and profiles write them (`de_DE`, `de-DE`, `DE`) and the base code
the models and text normalization use (`de`)."""

from __future__ import annotations


def base_language(code: str) -> str:
    return code.replace("-", "_").split("_")[0].lower()
