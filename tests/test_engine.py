"""The engine as the server builds it, in-process: reduced precision, phrase cache, languages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wyoming_wsrvc.engine import build_pipeline
from wyoming_wsrvc.pipeline import EngineUnavailableError
from wyoming_wsrvc.random_models import random_models
from wyoming_wsrvc.settings import Settings
from wyoming_wsrvc.voices import load_voices

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("engine")
    random_models(folder, "tiny")
    return folder


def settings(data: Path, **changes: object) -> Settings:
    return Settings.local(data, **{"dtype": "float32", **changes})  # type: ignore[arg-type]


def test_reduced_precision_path_runs(data: Path) -> None:
    """bfloat16 on the CPU exercises the same casts the float16 CUDA path needs."""
    config = settings(data, dtype="bfloat16")
    pipeline, voices = build_pipeline(config, load_voices(config.voices_dir))
    for name in ("random", "random-cond", "rvc-v1", "rvc-v2"):
        pcm = pipeline.synthesize_sentence("Hello there.", voices[name])
        samples = np.frombuffer(pcm.data, "<i2")
        assert len(samples) > 0 and np.abs(samples).max() > 0, name


def test_unknown_model_language_is_refused(data: Path, tmp_path: Path) -> None:
    voices = tmp_path / "voices"
    voices.mkdir()
    text = (data / "voices" / "random.yaml").read_text().replace("- en\n- en_US", "- xx")
    text = text.replace("../models/", f"{data}/models/")
    (voices / "x.yaml").write_text(text)
    config = settings(data, voices_dir=voices)
    with pytest.raises(EngineUnavailableError, match="unknown language 'xx'"):
        build_pipeline(config, load_voices(voices))
