"""The engine as the server builds it, in-process: reduced precision, phrase cache, languages."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from wyoming_wsrvc.audio import Audio
from wyoming_wsrvc.config.settings import Settings
from wyoming_wsrvc.config.voices import load_voices
from wyoming_wsrvc.devtools.random_models import random_models
from wyoming_wsrvc.engine.build import WARMUP_DRAWS, Engine, build_pipeline, measure_speed
from wyoming_wsrvc.engine.pipeline import EngineUnavailableError
from wyoming_wsrvc.engine.threads import ThreadPlan

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


def _mute_t2s(source: Path, target: Path) -> Path:
    """`source` (a T2S `.model`) changed so that every draw ends its speech at once: the
    decoder's output is one vector, and the end-of-speech id's embedding points along it, far
    longer than the codes' (a model as broken as that, in the real file format)."""
    checkpoint = torch.load(source, weights_only=True)
    state = checkpoint["state_dict"]
    direction = torch.nn.functional.normalize(
        torch.randn(
            state["decoder.ln_post.bias"].shape, generator=torch.Generator().manual_seed(0)
        ),
        dim=0,
    )
    state["decoder.ln_post.weight"].zero_()
    state["decoder.ln_post.bias"].copy_(direction)
    state["embeddings.embedding.special.weight"].copy_(200 * direction)
    torch.save(checkpoint, target)
    return target


def test_a_warm_up_that_speaks_nothing_draws_again_then_refuses(
    data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A draw that ends its speech at once is sampling, not a broken voice (the tiny random
    models do it about once in 300 draws, which failed an image's start-up in CI): the warm-up
    draws again with the next seed. Models that end every draw at once refuse to start, saying
    so."""
    mute = _mute_t2s(data / "models" / "t2s-tiny.model", tmp_path / "t2s-mute.model")
    voices = tmp_path / "voices"
    voices.mkdir()
    profile = (data / "voices" / "random.yaml").read_text()
    profile = profile.replace("../models/t2s-tiny.model", str(mute))
    (voices / "mute.yaml").write_text(profile.replace("../models/", f"{data}/models/"))
    config = settings(data, voices_dir=voices)
    with (
        caplog.at_level(logging.INFO, "wyoming_wsrvc.engine.build"),
        pytest.raises(
            EngineUnavailableError, match=f"spoke nothing in {WARMUP_DRAWS} draws"
        ) as caught,
    ):
        build_pipeline(config, load_voices(voices))
    assert "mute.yaml" in str(caught.value)
    draws = [
        r.getMessage() for r in caplog.records if "spoke nothing; drawing again" in r.getMessage()
    ]
    assert len(draws) == WARMUP_DRAWS, draws


def test_the_warm_up_is_the_same_draw_at_every_start(data: Path) -> None:
    """The warm-up samples from its own seeded generator: the same speech each time, whatever
    torch's global generator holds."""
    config = settings(data)
    voices = {n: p for n, p in load_voices(config.voices_dir).items() if n == "random"}
    pipeline, voices = build_pipeline(config, voices)
    plan = ThreadPlan.for_threads(1)
    spoken = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        pcm, _ = measure_speed(pipeline, voices["random"], plan, torch.Generator().manual_seed(0))
        spoken.append(pcm.data)
    assert spoken[0], "the warm-up spoke nothing"
    assert spoken[0] == spoken[1]


def test_a_voice_reloaded_with_the_phrase_cache_on_is_spoken_by_its_models(data: Path) -> None:
    """The warm-up neither asks nor fills the phrase cache: a voice reloaded with new files under
    the same settings (the studio's replaced `.pth`) is measured on its models, not answered from
    the cache (an empty answer, which was refused as silence)."""
    config = settings(data, phrase_cache=16)
    voices = {n: p for n, p in load_voices(config.voices_dir).items() if n == "rvc-v2"}
    engine = Engine(config)
    engine.start(voices)
    cache = engine.pipeline.cache
    assert cache is not None
    assert len(cache) == 0
    plan = ThreadPlan.for_threads(1)
    first = engine.add(voices["rvc-v2"], plan)
    again = engine.add(voices["rvc-v2"], plan)
    assert len(cache) == 0
    assert first.rtf > 0
    assert again.rtf > 0
    assert next(engine.pipeline.synthesize("Hello there.", voices["rvc-v2"])).data
    assert len(cache) == 1
