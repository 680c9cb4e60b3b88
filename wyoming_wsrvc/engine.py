"""Build the `Pipeline` the server runs: the real stages, loaded and warmed up at start-up."""

from __future__ import annotations

import logging

from .pipeline import EngineUnavailableError, Pipeline
from .settings import Settings
from .voices import VoiceProfile

_LOGGER = logging.getLogger(__name__)


def build_pipeline(settings: Settings, voices: dict[str, VoiceProfile]) -> Pipeline:
    """Load the models every profile needs; raise `EngineUnavailableError` if one is missing."""
    raise EngineUnavailableError(
        "the WhisperSpeech speech engine is not available in this build, so no voice can be synthesized"
    )
