"""Voice profiles: one YAML file per voice, parsed and validated once at start-up.

A profile is WhisperSpeech settings plus an optional RVC section. Paths inside a profile are
relative to the YAML file. Every error names the file, the field and the reason.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..models.rvc.embedders import KNOWN as EMBEDDERS
from ..models.rvc.embedders import canonical as canonical_embedder
from ..text.language import base_language

_LOGGER = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
LANGUAGE_PATTERN = re.compile(r"^[a-z]{2,3}([_-][A-Za-z0-9]{2,8})?$")
F0_METHODS = ("rmvpe", "yin")
DEFAULT_PRESET = "fast"


class VoiceConfigError(ValueError):
    """A voice profile is invalid; the message names the file, the field and the reason."""

    def __init__(self, path: Path, field: str, reason: str) -> None:
        super().__init__(f"{path}: {field}: {reason}")
        self.path = path
        self.field = field
        self.reason = reason


class VoiceUnavailableError(RuntimeError):
    """A configured voice cannot be used right now (e.g. its model file broke after start-up)."""


class VoiceNotFoundError(KeyError):
    """A client asked for a voice that no profile provides."""

    def __init__(self, name: str, available: list[str]) -> None:
        super().__init__(name)
        self.name = name
        self.available = available

    def __str__(self) -> str:
        return f"Unknown voice {self.name!r}; available voices: {', '.join(self.available)}"


@dataclass(frozen=True)
class Attribution:
    name: str
    url: str


@dataclass(frozen=True)
class WhisperSpeechParams:
    """How WhisperSpeech speaks for this voice.

    `t2s`/`s2a` are model refs (`repo:file` or local paths); None means "take the preset's".
    `speaker` is None for upstream's default speaker, or a local embedding file (.npy/.pt, 192 floats).
    """

    preset: str = DEFAULT_PRESET
    t2s: str | None = None
    s2a: str | None = None
    speaker: Path | None = None
    speaking_rate: float = 13.0
    temperature: float = 0.7
    top_k: int | None = None


@dataclass(frozen=True)
class RvcParams:
    """How RVC converts this voice. `model` is a local `.pth`, `index` an optional faiss file."""

    model: Path
    index: Path | None = None
    pitch_shift: float = 0.0
    f0_method: str = "rmvpe"
    index_rate: float = 0.75
    protect: float = 0.33
    rms_mix_rate: float = 0.25
    speaker_id: int = 0
    # content model: a name of rvc.embedders.KNOWN or a custom model's path; None = the file's
    embedder: str | None = None


@dataclass(frozen=True)
class UpstreamParams:
    """Layer mode: the speech comes from another Wyoming TTS server (wyoming-piper, say)."""

    uri: str  # tcp://HOST:PORT or unix://PATH
    voice: str | None = None  # the upstream's voice name; None: its default
    speaker: str | None = None
    # it runs on this host (the Piper add-on beside this one): while it answers, conversion
    # leaves it a core; false for an upstream on another machine
    same_host: bool = True


@dataclass(frozen=True)
class VoiceProfile:
    """One voice the server offers."""

    name: str
    path: Path
    description: str
    languages: tuple[str, ...]
    language: str
    attribution: Attribution
    version: str | None
    whisperspeech: WhisperSpeechParams
    rvc: RvcParams | None
    output_rate: int | None
    sentence_pause: float
    tail_silence: float
    # layer mode: speech from another Wyoming server instead of WhisperSpeech
    upstream: UpstreamParams | None = None


class _Fields:
    """Typed access to one mapping of a profile, raising `VoiceConfigError` with the field path."""

    def __init__(self, path: Path, data: Any, prefix: str = "") -> None:
        if not isinstance(data, Mapping):
            raise VoiceConfigError(path, prefix or "(top level)", "must be a mapping")
        self.path = path
        self.data = data
        self.prefix = prefix

    def name(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def error(self, key: str, reason: str) -> VoiceConfigError:
        return VoiceConfigError(self.path, self.name(key), reason)

    def check_known(self, known: set[str]) -> None:
        for key in self.data:
            if key not in known:
                raise self.error(str(key), f"unknown field (known: {', '.join(sorted(known))})")

    def text(self, key: str, default: str | None = None) -> str | None:
        value = self.data.get(key, default)
        if value is None:
            return None
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise self.error(key, "must be a string")
        return str(value)

    def number(self, key: str, default: float, low: float, high: float) -> float:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, f"must be a number, got {value!r}")
        if not low <= value <= high:
            raise self.error(key, f"must be between {low} and {high}, got {value}")
        return float(value)

    def flag(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false, got {value!r}")
        return value

    def integer(self, key: str, default: int | None, low: int, high: int) -> int | None:
        value = self.data.get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"must be an integer, got {value!r}")
        if not low <= value <= high:
            raise self.error(key, f"must be between {low} and {high}, got {value}")
        return value

    def file(self, key: str, required: bool, suffixes: tuple[str, ...]) -> Path | None:
        value = self.text(key)
        if value is None:
            if required:
                raise self.error(key, "is required")
            return None
        file = (self.path.parent / value).resolve()
        if not file.is_file():
            raise self.error(key, f"file not found: {file}")
        if file.suffix.lower() not in suffixes:
            raise self.error(key, f"must be a {' or '.join(suffixes)} file")
        return file


def _parse_whisperspeech(fields: _Fields, presets: frozenset[str]) -> WhisperSpeechParams:
    fields.check_known({"preset", "t2s", "s2a", "speaker", "speaking_rate", "temperature", "top_k"})
    preset = fields.text("preset", DEFAULT_PRESET) or DEFAULT_PRESET
    if presets and preset not in presets:
        raise fields.error(
            "preset", f"unknown preset {preset!r} (known: {', '.join(sorted(presets))})"
        )
    return WhisperSpeechParams(
        preset=preset,
        t2s=_model_ref(fields, "t2s"),
        s2a=_model_ref(fields, "s2a"),
        speaker=fields.file("speaker", False, (".npy", ".pt")),
        speaking_rate=fields.number("speaking_rate", 13.0, 5.0, 20.0),
        temperature=fields.number("temperature", 0.7, 0.0, 2.0),
        top_k=fields.integer("top_k", None, 1, 1026),
    )


def _model_ref(fields: _Fields, key: str) -> str | None:
    """A `repo:file` ref stays as it is; anything else is a local path relative to the YAML."""
    value = fields.text(key)
    if value is None:
        return None
    if re.match(r"^[\w.-]+/[\w.-]+:[^/].*", value) and not Path(value).is_absolute():
        return value
    file = (fields.path.parent / value).resolve()
    if not file.is_file():
        raise fields.error(key, f"file not found: {file}")
    return str(file)


def _parse_upstream(fields: _Fields) -> UpstreamParams:
    fields.check_known({"uri", "voice", "speaker", "same_host"})
    uri = fields.text("uri")
    if uri is None:
        raise fields.error("uri", "is required (tcp://HOST:PORT of a Wyoming TTS server)")
    if not uri.startswith(("tcp://", "unix://")):
        raise fields.error("uri", f"must be tcp://HOST:PORT or unix://PATH, got {uri!r}")
    if uri.startswith("tcp://"):
        from ..errors import SettingsError
        from .uri import parse_uri  # the same checks as --uri

        try:
            parse_uri(uri)
        except SettingsError as err:
            raise fields.error("uri", str(err).split(": ", 1)[1].split(";")[0]) from None
    return UpstreamParams(
        uri, fields.text("voice"), fields.text("speaker"), fields.flag("same_host", True)
    )


def _parse_rvc(fields: _Fields) -> RvcParams:
    fields.check_known(
        {
            "model",
            "index",
            "pitch_shift",
            "f0_method",
            "index_rate",
            "protect",
            "rms_mix_rate",
            "speaker_id",
            "embedder",
        }
    )
    model = fields.file("model", True, (".pth",))
    if model is None:
        raise RuntimeError("model is not set")
    f0_method = fields.text("f0_method", "rmvpe") or "rmvpe"
    if f0_method not in F0_METHODS:
        raise fields.error("f0_method", f"must be one of {', '.join(F0_METHODS)}")
    return RvcParams(
        model=model,
        index=fields.file("index", False, (".index",)),
        pitch_shift=fields.number("pitch_shift", 0.0, -24.0, 24.0),
        f0_method=f0_method,
        index_rate=fields.number("index_rate", 0.75, 0.0, 1.0),
        protect=fields.number("protect", 0.33, 0.0, 0.5),
        rms_mix_rate=fields.number("rms_mix_rate", 0.25, 0.0, 1.0),
        speaker_id=fields.integer("speaker_id", 0, 0, 10_000) or 0,
        embedder=_parse_embedder(fields),
    )


def _parse_embedder(fields: _Fields) -> str | None:
    """A known embedder name, or a custom model (a HuBERT folder or `.pt` file) by path."""
    value = fields.text("embedder", None)
    if value is None:
        return None
    if canonical_embedder(value) in EMBEDDERS:
        return canonical_embedder(value)
    path = (fields.path.parent / value).resolve()
    if not path.exists():
        raise fields.error(
            "embedder",
            f"neither a known embedder ({', '.join(EMBEDDERS)}) nor an existing path: {path}",
        )
    return str(path)


def _parse_languages(fields: _Fields) -> tuple[str, ...]:
    value = fields.data.get("languages")
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise fields.error(
            "languages", "must be a non-empty list of language codes, e.g. [en, en_US]"
        )
    for code in value:
        if not isinstance(code, str) or not LANGUAGE_PATTERN.match(code):
            raise fields.error("languages", f"{code!r} is not a language code like en or en_US")
    return tuple(dict.fromkeys(value))


def _parse_attribution(fields: _Fields) -> Attribution:
    value = fields.data.get("attribution")
    if value is None:
        return Attribution(
            name="WhisperSpeech + RVC", url="https://github.com/WhisperSpeech/WhisperSpeech"
        )
    if isinstance(value, str):
        return Attribution(name=value, url="")
    sub = _Fields(fields.path, value, fields.name("attribution"))
    sub.check_known({"name", "url"})
    return Attribution(name=sub.text("name", "") or "", url=sub.text("url", "") or "")


TOP_LEVEL_FIELDS = {
    "name",
    "description",
    "languages",
    "language",
    "attribution",
    "version",
    "whisperspeech",
    "upstream",
    "rvc",
    "output_rate",
    "sentence_pause",
    "tail_silence",
}


def parse_profile(path: Path, data: Any, presets: frozenset[str] = frozenset()) -> VoiceProfile:
    """Validate one parsed YAML document; `presets` are the known WhisperSpeech preset names."""
    fields = _Fields(path, data)
    fields.check_known(TOP_LEVEL_FIELDS)
    name = fields.text("name", path.stem) or path.stem
    if not NAME_PATTERN.match(name):
        raise fields.error("name", "use letters, digits, '_', '-', '.', '+' (at most 64)")
    languages = _parse_languages(fields)
    language = fields.text("language", base_language(languages[0]))
    if language is None:
        raise RuntimeError("language is not set")
    ws_data = fields.data.get("whisperspeech") or {}
    rvc_data = fields.data.get("rvc")
    upstream_data = fields.data.get("upstream")
    if upstream_data is not None and "whisperspeech" in fields.data:
        raise fields.error("upstream", "a voice takes its speech from whisperspeech or upstream")
    return VoiceProfile(
        name=name,
        path=path,
        description=fields.text("description", name) or name,
        languages=languages,
        language=base_language(language),
        attribution=_parse_attribution(fields),
        version=fields.text("version"),
        whisperspeech=_parse_whisperspeech(_Fields(path, ws_data, "whisperspeech"), presets),
        rvc=None if rvc_data is None else _parse_rvc(_Fields(path, rvc_data, "rvc")),
        output_rate=fields.integer("output_rate", None, 8000, 96000),
        sentence_pause=fields.number("sentence_pause", 0.2, 0.0, 5.0),
        tail_silence=fields.number("tail_silence", 0.3, 0.0, 5.0),
        upstream=None
        if upstream_data is None
        else _parse_upstream(_Fields(path, upstream_data, "upstream")),
    )


def load_profile(path: Path, presets: frozenset[str] = frozenset()) -> VoiceProfile:
    """Read and validate one YAML profile file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise VoiceConfigError(path, "(file)", f"cannot read: {err}") from err
    except yaml.YAMLError as err:
        raise VoiceConfigError(path, "(file)", f"invalid YAML: {err}".replace("\n", " ")) from err
    return parse_profile(path, data, presets)


PROFILE_SUFFIXES = (".yaml", ".yml")


def profile_paths(folder: Path) -> list[Path]:
    """The profile files of `folder`, sorted by name (the order voices are offered in)."""
    return sorted(p for p in folder.iterdir() if p.suffix in PROFILE_SUFFIXES and p.is_file())


@dataclass(frozen=True)
class FolderScan:
    """Every profile of the folder by name, and each profile file's error."""

    profiles: dict[str, VoiceProfile]
    errors: dict[Path, VoiceConfigError]


def scan_folder(folder: Path, presets: frozenset[str] = frozenset()) -> FolderScan:
    """Read and validate every profile in `folder` (the checks of start-up); a file whose name
    an earlier file (by file name) already uses is an error."""
    if not folder.is_dir():
        raise VoiceConfigError(folder, "(folder)", "voices folder does not exist")
    profiles: dict[str, VoiceProfile] = {}
    errors: dict[Path, VoiceConfigError] = {}
    for file in profile_paths(folder):
        try:
            profile = load_profile(file, presets)
            if profile.name in profiles:
                raise VoiceConfigError(
                    file,
                    "name",
                    f"{profile.name!r} is already used by {profiles[profile.name].path}",
                )
        except VoiceConfigError as err:
            errors[file] = err
            continue
        profiles[profile.name] = profile
    return FolderScan(profiles, errors)


def load_voices(
    folder: Path, presets: frozenset[str] = frozenset(), skip_bad: bool = False
) -> dict[str, VoiceProfile]:
    """Load every `*.yaml`/`*.yml` in `folder`, sorted by file name.

    Raises `VoiceConfigError` for the first invalid profile unless `skip_bad`, in which case
    it is logged and left out.
    """
    scan = scan_folder(folder, presets)
    for error in scan.errors.values():
        if not skip_bad:
            raise error
        _LOGGER.error("Skipping voice profile: %s", error)
    return scan.profiles


def resolve_voice(
    voices: Mapping[str, VoiceProfile], default: str, name: str | None, language: str | None
) -> tuple[VoiceProfile, str | None]:
    """The profile a request asks for, and the language to speak (None: the profile's own).

    A name picks that profile (`VoiceNotFoundError` if there is none). Without a name, the
    default profile if it speaks the requested language, else the first (by file name) that
    does, else the default. A language the chosen profile does not list is ignored (logged).
    """
    if name:
        profile = voices.get(name)
        if profile is None:
            raise VoiceNotFoundError(name, sorted(voices))
    else:
        profile = voices[default]
        if language and not _speaks(profile, language):
            profile = next((p for p in voices.values() if _speaks(p, language)), profile)
    if not language:
        return profile, None
    if not _speaks(profile, language):
        _LOGGER.warning(
            "Voice %s does not speak %r; using %s", profile.name, language, profile.language
        )
        return profile, None
    return profile, base_language(language)


def speaking_voice(
    voices: Mapping[str, VoiceProfile],
    default: str,
    name: str | None,
    language: str | None,
    warned: set[str],
) -> tuple[VoiceProfile, str | None]:
    """`resolve_voice`, except that an unknown name is spoken by the default voice, with a
    WARNING once per name (in `warned`): Home Assistant 2026.2 drops error events, so an error
    would be silence."""
    try:
        return resolve_voice(voices, default, name, language)
    except VoiceNotFoundError:
        if name not in warned:
            warned.add(str(name))
            _LOGGER.warning(
                "Unknown voice %r requested; speaking with %r instead. Voices: %s",
                name,
                default,
                ", ".join(voices),
            )
        return resolve_voice(voices, default, None, language)


def _speaks(profile: VoiceProfile, language: str) -> bool:
    return base_language(language) in {base_language(code) for code in profile.languages}


PACKAGE_VOICES = Path(__file__).resolve().parent.parent / "example_voices"  # package data


def voices_folder(data_dir: Path, given: Path | None) -> Path:
    """The voices folder the server and the tools use: `given`, else `<data-dir>/voices` if it
    exists, else the example profile shipped in the package."""
    if given is not None:
        return given.expanduser().resolve()
    if (data_dir / "voices").is_dir():
        return data_dir / "voices"
    return PACKAGE_VOICES
