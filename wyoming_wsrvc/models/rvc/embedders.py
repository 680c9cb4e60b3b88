"""Which content model (embedder) gives a voice its features.

RVC voices are trained on the features of one HuBERT-family model. Classic RVC WebUI voices use
RVC's `hubert_base.pt` (the role Applio calls `contentvec`); Applio writes the embedder into the
voice file (`embedder_model`) and offers HuBERT base models trained on other data. The choice for
a voice is the profile's `rvc.embedder`, else the file's, else `contentvec`. Each embedder is one
shared model, loaded when the first voice that needs it is loaded.
"""

from __future__ import annotations

from pathlib import Path

CONTENTVEC = "contentvec"
CUSTOM = "custom"
# Applio's embedders that are HuBERT base models: name -> folder under
# IAHispano/Applio:Resources/embedders/ (config.json + pytorch_model.bin).
APPLIO_EMBEDDERS: dict[str, str] = {
    "chinese-hubert-base": "chinese_hubert_base",
    "japanese-hubert-base": "japanese_hubert_base",
    "korean-hubert-base": "korean_hubert_base",
    "spin": "spin",
    "spin-v2": "spin-v2",
}
KNOWN = (CONTENTVEC, *APPLIO_EMBEDDERS)
# What older files and other tools write for RVC's own model.
ALIASES = {"": CONTENTVEC, "hubert_base": CONTENTVEC, "hubert": CONTENTVEC}


class EmbedderError(ValueError):
    """The voice's embedder cannot be used; the message names the file and says what to do."""


def canonical(name: str) -> str:
    return ALIASES.get(name, name)


def embedder_for(profile_choice: str | None, file_choice: object, voice: Path) -> str:
    """The embedder a voice runs with: a known name, or a custom model's path (from the profile).

    Raises `EmbedderError` when the file names one this server does not know (or `custom`) and the
    profile does not say which model to use.
    """
    if profile_choice is not None:
        return profile_choice
    if file_choice is None:
        return CONTENTVEC
    name = canonical(str(file_choice))
    if name in KNOWN:
        return name
    if name == CUSTOM:
        raise EmbedderError(
            f"{voice}: trained with a custom embedder; set rvc.embedder in the profile to its "
            "folder (config.json + pytorch_model.bin) or .pt file"
        )
    raise EmbedderError(
        f"{voice}: unknown embedder {file_choice!r} (known: {', '.join(KNOWN)}); "
        "set rvc.embedder in the profile to one of them or to a custom model's path"
    )
