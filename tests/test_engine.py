"""The engine as the server builds it, in-process: reduced precision, phrase cache, languages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wyoming_wsrvc.audio import Audio
from wyoming_wsrvc.config.settings import Settings
from wyoming_wsrvc.config.voices import load_voices
from wyoming_wsrvc.devtools.random_models import random_models
from wyoming_wsrvc.engine.build import build_pipeline
from wyoming_wsrvc.engine.pipeline import EngineUnavailableError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("engine")
    random_models(folder, "tiny")
    return folder


def settings(data: Path, **changes: object) -> Settings:
    return Settings.local(data, **{"dtype": "float32", **changes})


def test_reduced_precision_pipeline_against_float32(data: Path) -> None:
    """bfloat16 everywhere on the CPU exercises the casts the float16 CUDA path needs. The same
    speech, converted by each pipeline's RVC stage, stays close to float32's; every voice
    speaks. (Per-stage deviations on the parity fixtures: tests/test_precision.py.)"""
    exact_config, half_config = settings(data), settings(data, dtype="bfloat16")
    names = ("random", "random-cond", "rvc-v1", "rvc-v2")
    profiles = {n: p for n, p in load_voices(exact_config.voices_dir).items() if n in names}
    exact, voices = build_pipeline(exact_config, profiles)
    half, _ = build_pipeline(half_config, profiles)
    for name in names:
        samples = np.frombuffer(half.synthesize_sentence("Hello there.", voices[name]).data, "<i2")
        assert len(samples) > 0, name
        assert np.abs(samples).max() > 0, name
    rvc = voices["rvc-v1"].rvc
    assert rvc is not None
    assert exact.converter is not None
    assert half.converter is not None
    exact.converter.noise = half.converter.noise = False
    t = np.arange(24000) / 24000
    speech = Audio((0.3 * np.sin(2 * np.pi * 150 * t)).astype(np.float32), 24000)
    reference = exact.converter.convert(speech, rvc).samples
    reduced = half.converter.convert(speech, rvc).samples
    assert len(reduced) == len(reference)
    error = reduced - reference
    snr = 10 * np.log10(np.mean(reference**2) / max(np.mean(error**2), 1e-20))
    # 4 dB measured: a tiny random voice is chaotic; on the parity voices: tests/test_precision.py
    assert snr > 2, snr


def test_unknown_model_language_is_refused(data: Path, tmp_path: Path) -> None:
    voices = tmp_path / "voices"
    voices.mkdir()
    text = (data / "voices" / "random.yaml").read_text().replace("- en\n- en_US", "- xx")
    text = text.replace("../models/", f"{data}/models/")
    (voices / "x.yaml").write_text(text)
    config = settings(data, voices_dir=voices)
    with pytest.raises(EngineUnavailableError, match="unknown language 'xx'"):
        build_pipeline(config, load_voices(voices))


def test_non_finite_voice_refuses_to_start(data: Path, tmp_path: Path) -> None:
    """A voice whose conversion gives NaN (a broken file, or a dtype the device cannot run)
    stops start-up at the warm-up instead of serving silence."""
    import torch

    broken = torch.load(data / "models" / "rvc-v1-48k.pth", weights_only=True)
    name = next(k for k in broken["weight"] if k.startswith("dec.conv_post"))
    broken["weight"][name] = torch.full_like(broken["weight"][name], float("nan"))
    torch.save(broken, tmp_path / "nan.pth")
    voices = tmp_path / "voices"
    voices.mkdir()
    profile = (data / "voices" / "rvc-v1.yaml").read_text()
    profile = profile.replace("../models/rvc-v1-48k.pth", str(tmp_path / "nan.pth"))
    profile = profile.replace("../models/", str(data / "models") + "/")
    (voices / "nan.yaml").write_text(profile)
    config = settings(data, voices_dir=voices)
    with pytest.raises(EngineUnavailableError, match="silent or non-finite audio") as caught:
        build_pipeline(config, load_voices(voices))
    assert "nan.yaml" in str(caught.value)
