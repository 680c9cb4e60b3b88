"""Wyoming `Info` for the voice profiles: one TTS program, one `TtsVoice` per profile."""

from __future__ import annotations

from collections.abc import Iterable

from wyoming.info import Attribution, Info, TtsProgram, TtsVoice

from .. import __version__
from ..config.voices import VoiceProfile

PROGRAM_NAME = "wsrvc"
PROGRAM_ATTRIBUTION = Attribution(
    name="wyoming-wsrvc (WhisperSpeech + RVC)", url="https://github.com/WhisperSpeech/WhisperSpeech"
)


def build_voice(profile: VoiceProfile) -> TtsVoice:
    """Home Assistant offers the voice under exactly these language codes, labelled `description`."""
    return TtsVoice(
        name=profile.name,
        attribution=Attribution(name=profile.attribution.name, url=profile.attribution.url),
        installed=True,
        description=profile.description,
        version=profile.version,
        languages=list(profile.languages),
    )


def build_info(profiles: Iterable[VoiceProfile], streaming: bool) -> Info:
    return Info(
        tts=[
            TtsProgram(
                name=PROGRAM_NAME,
                attribution=PROGRAM_ATTRIBUTION,
                installed=True,
                description="WhisperSpeech text-to-speech with RVC voice conversion",
                version=__version__,
                voices=[build_voice(p) for p in profiles],
                supports_synthesize_streaming=streaming,
            )
        ]
    )
