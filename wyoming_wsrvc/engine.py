"""Build the `Pipeline` the server runs: resolve, load and warm up the models every profile needs."""

from __future__ import annotations

import logging
import time

from .pipeline import EngineUnavailableError, Pipeline
from .registry import PRESETS, ModelUnavailableError, Registry
from .settings import Settings, resolve_device, resolve_dtype
from .text.normalize import Normalizer
from .vocoder import Vocoder, VocoderError
from .voices import VoiceProfile
from .whisperspeech.checkpoint import CheckpointError
from .whisperspeech.speaker import SpeakerError
from .whisperspeech.stage import WhisperSpeechStage

_LOGGER = logging.getLogger(__name__)

WARMUP_TEXT = "Hello."
_LOAD_ERRORS = (ModelUnavailableError, CheckpointError, SpeakerError, ValueError)


def _bind(stage: WhisperSpeechStage, registry: Registry, profile: VoiceProfile) -> None:
    params = profile.whisperspeech
    preset = PRESETS[params.preset]
    if params.t2s is None and params.s2a is None and profile.language not in preset.languages:
        raise ValueError(
            f"language: {profile.language!r} is not spoken by preset {preset.name!r} "
            f"({', '.join(preset.languages)})"
        )
    if profile.rvc is not None:
        raise EngineUnavailableError("rvc: RVC voice conversion is not available in this build")
    t2s = registry.resolve(params.t2s or preset.t2s)
    s2a = registry.resolve(params.s2a or preset.s2a)
    stage.bind(params, t2s, s2a)


def build_pipeline(
    settings: Settings, voices: dict[str, VoiceProfile]
) -> tuple[Pipeline, dict[str, VoiceProfile]]:
    """Load what every profile needs and warm it up; returns the pipeline and the usable voices.

    A profile whose models cannot be loaded stops start-up (`EngineUnavailableError` naming the
    profile and the reason), or with `skip_bad_voices` is left out.
    """
    start = time.perf_counter()
    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    registry = Registry(settings.data_dir, settings.offline)
    try:
        vocoder = Vocoder(*registry.vocoder_files(), device=device)
    except (ModelUnavailableError, VocoderError, OSError) as err:
        raise EngineUnavailableError(f"vocoder: {err}") from err
    stage = WhisperSpeechStage(vocoder, device, dtype)
    usable: dict[str, VoiceProfile] = {}
    for name, profile in voices.items():
        try:
            _bind(stage, registry, profile)
        except (*_LOAD_ERRORS, EngineUnavailableError) as err:
            message = f"{profile.path}: {err}"
            if not settings.skip_bad_voices:
                raise EngineUnavailableError(message) from err
            _LOGGER.error("Skipping voice %s: %s", name, message)
            continue
        usable[name] = profile
    if not usable:
        raise EngineUnavailableError("no voice profile could be loaded")
    pipeline = Pipeline(stage, converter=None, normalize=Normalizer())
    warmed: set[object] = set()
    for profile in usable.values():
        if profile.whisperspeech in warmed:
            continue
        warmed.add(profile.whisperspeech)
        pipeline.synthesize_sentence(WARMUP_TEXT, profile)
    _LOGGER.info(
        "Models ready on %s (%s) in %.1f s",
        device,
        str(dtype).replace("torch.", ""),
        time.perf_counter() - start,
    )
    return pipeline, usable
