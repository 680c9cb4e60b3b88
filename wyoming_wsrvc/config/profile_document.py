"""A voice profile as a YAML document again: what the studio saves, and what its settings are
merged into before they are validated (by `voices.parse_profile`, as at start-up).

Paths are written relative to the profile's folder, as hand-written profiles have them; fields
at their defaults are written too, so the file shows what can be tuned.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .voices import VoiceConfigError, VoiceProfile, parse_profile


def _path(value: Path | str | None, folder: Path) -> str | None:
    if value is None:
        return None
    path = Path(value)
    if not path.is_absolute():
        return str(value)  # a `repo:file` model ref
    try:
        return Path(os.path.relpath(path, folder)).as_posix()  # as a hand-written profile has it
    except ValueError:  # another drive
        return str(path)


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def to_document(profile: VoiceProfile) -> dict[str, Any]:
    """`profile` as the mapping its YAML file holds (`parse_profile` gives it back)."""
    folder = profile.path.parent
    document: dict[str, Any] = {
        "name": profile.name,
        "description": profile.description,
        "languages": list(profile.languages),
        "language": profile.language,
        "attribution": {"name": profile.attribution.name, "url": profile.attribution.url},
        "version": profile.version,
    }
    if profile.upstream is not None:
        up = profile.upstream
        document["upstream"] = _drop_none(
            {"uri": up.uri, "voice": up.voice, "speaker": up.speaker, "same_host": up.same_host}
        )
    else:
        ws = profile.whisperspeech
        document["whisperspeech"] = _drop_none(
            {
                "preset": ws.preset,
                "t2s": _path(ws.t2s, folder),
                "s2a": _path(ws.s2a, folder),
                "speaker": _path(ws.speaker, folder),
                "speaking_rate": ws.speaking_rate,
                "temperature": ws.temperature,
                "top_k": ws.top_k,
            }
        )
    if profile.rvc is not None:
        rvc = profile.rvc
        embedder = rvc.embedder
        document["rvc"] = _drop_none(
            {
                "model": _path(rvc.model, folder),
                "index": _path(rvc.index, folder),
                "pitch_shift": rvc.pitch_shift,
                "f0_method": rvc.f0_method,
                "index_rate": rvc.index_rate,
                "protect": rvc.protect,
                "rms_mix_rate": rvc.rms_mix_rate,
                "speaker_id": rvc.speaker_id,
                "embedder": _path(embedder, folder) if embedder and "/" in embedder else embedder,
            }
        )
    document["output_rate"] = profile.output_rate
    document["sentence_pause"] = profile.sentence_pause
    document["tail_silence"] = profile.tail_silence
    return _drop_none(document)


def merged(document: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """`document` with `changes` laid over it, section by section (a section's value None
    removes it, e.g. `{"rvc": None}`)."""
    result = dict(document)
    for key, value in changes.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            section = dict(result[key])
            section.update(value)
            result[key] = _drop_none(section)
        else:
            result[key] = value
    return result


def tuned(
    profile: VoiceProfile, changes: Mapping[str, Any], presets: frozenset[str] = frozenset()
) -> VoiceProfile:
    """`profile` with `changes` (the YAML's own fields and sections), validated as at start-up:
    a `VoiceConfigError` names the profile's file and the field."""
    if "name" in changes and changes["name"] != profile.name:
        raise VoiceConfigError(profile.path, "name", "a voice keeps its name")
    return parse_profile(profile.path, merged(to_document(profile), changes), presets)


def dump(document: Mapping[str, Any]) -> str:
    header = (
        "# Voice profile (written by the wyoming-wsrvc voice studio; editing by hand is fine)\n"
    )
    return header + yaml.safe_dump(dict(document), sort_keys=False, allow_unicode=True)


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` so that a reader sees the old file or the new one, never a part:
    a temporary file in the same folder, flushed, then renamed over it."""
    handle, temporary = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
