"""Voice profile parsing and validation: errors name the file, the field and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from wyoming_wsrvc.config.voices import VoiceConfigError, load_profile, load_voices

from .conftest import REPO


def write(tmp_path: Path, text: str, name: str = "v.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_example_profile_loads() -> None:
    profile = load_profile(
        REPO / "wyoming_wsrvc" / "example_voices" / "example.yaml",
        frozenset({"tiny", "fast", "quality"}),
    )
    assert profile.name == "example"
    assert profile.languages == ("en", "en_US", "en_GB")
    assert profile.language == "en"
    assert profile.rvc is None
    assert profile.whisperspeech.preset == "fast"
    assert profile.sentence_pause == 0.2
    assert profile.tail_silence == 0.3


def test_defaults_and_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "a.pth").write_bytes(b"x")
    (tmp_path / "models" / "a.index").write_bytes(b"x")
    path = write(
        tmp_path,
        "languages: de_DE\nrvc:\n  model: models/a.pth\n  index: models/a.index\n"
        "  pitch_shift: -3\n",
    )
    profile = load_profile(path)
    assert profile.name == "v"
    assert profile.description == "v"
    assert profile.language == "de"
    assert profile.rvc is not None
    assert profile.rvc.model == (tmp_path / "models" / "a.pth").resolve()
    assert profile.rvc.index == (tmp_path / "models" / "a.index").resolve()
    assert profile.rvc.pitch_shift == -3.0
    assert profile.rvc.f0_method == "rmvpe"
    assert profile.output_rate is None


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        ("description: x\n", "languages", "non-empty list"),
        ("languages: [english]\n", "languages", "not a language code"),
        ("languages: [en]\nspeed: 3\n", "speed", "unknown field"),
        ("languages: [en]\nname: 'a b'\n", "name", "letters"),
        ("languages: [en]\nsentence_pause: -1\n", "sentence_pause", "between"),
        ("languages: [en]\noutput_rate: fast\n", "output_rate", "integer"),
        (
            "languages: [en]\nwhisperspeech: {preset: turbo}\n",
            "whisperspeech.preset",
            "unknown preset",
        ),
        (
            "languages: [en]\nwhisperspeech: {speaking_rate: 99}\n",
            "whisperspeech.speaking_rate",
            "between",
        ),
        (
            "languages: [en]\nwhisperspeech: {t2s: missing.model}\n",
            "whisperspeech.t2s",
            "file not found",
        ),
        ("languages: [en]\nrvc: {index_rate: 0.5}\n", "rvc.model", "required"),
        ("languages: [en]\nrvc: {model: nope.pth}\n", "rvc.model", "file not found"),
        ("languages: [en]\nrvc: []\n", "rvc", "mapping"),
        ("- a list\n", "(top level)", "mapping"),
        ("languages: [en\n", "(file)", "invalid YAML"),
    ],
)
def test_invalid_profiles(tmp_path: Path, text: str, field: str, reason: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(VoiceConfigError) as info:
        load_profile(path, frozenset({"fast", "quality"}))
    assert info.value.field == field
    assert reason in info.value.reason
    message = str(info.value)
    assert message.startswith(str(path))
    assert field in message
    assert "\n" not in message


def test_folder_rules(tmp_path: Path) -> None:
    write(tmp_path, "name: same\nlanguages: [en]\n", "a.yaml")
    write(tmp_path, "name: same\nlanguages: [en]\n", "b.yaml")
    write(tmp_path, "languages: 12\n", "c.yml")
    (tmp_path / "notes.txt").write_text("ignored")
    with pytest.raises(VoiceConfigError) as info:
        load_voices(tmp_path)
    assert "already used" in str(info.value)
    voices = load_voices(tmp_path, skip_bad=True)
    assert list(voices) == ["same"]
    with pytest.raises(VoiceConfigError, match="does not exist"):
        load_voices(tmp_path / "missing")
