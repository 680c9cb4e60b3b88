"""Content embedders: the voice file's or the profile's choice, one shared model per embedder,
loaded only when a voice needs it, refusals that say what to do."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from wyoming_wsrvc.config.registry import ModelUnavailableError, Registry
from wyoming_wsrvc.config.voices import RvcParams, VoiceConfigError, load_voices
from wyoming_wsrvc.devtools.write_rvc import write_hubert, write_rvc_voice
from wyoming_wsrvc.engine.conversion import RvcConverter, VoiceLoadError
from wyoming_wsrvc.models.rvc.content import (
    ContentEncoder,
    ContentModelError,
    ContentModels,
    load_hubert,
)
from wyoming_wsrvc.models.rvc.embedders import EmbedderError, embedder_for
from wyoming_wsrvc.models.rvc.pitch import YinPitch

from .test_rvc import speech

VOICE = Path("/voices/alice.pth")


def test_embedder_choice() -> None:
    assert embedder_for(None, None, VOICE) == "contentvec"  # classic WebUI files say nothing
    for alias in ("contentvec", "hubert_base", "hubert", ""):
        assert embedder_for(None, alias, VOICE) == "contentvec"
    assert embedder_for(None, "korean-hubert-base", VOICE) == "korean-hubert-base"
    assert embedder_for("spin", "contentvec", VOICE) == "spin"  # the profile wins
    assert embedder_for("/models/mine", "custom", VOICE) == "/models/mine"
    with pytest.raises(EmbedderError, match=r"alice\.pth: trained with a custom embedder; set rvc"):
        embedder_for(None, "custom", VOICE)
    with pytest.raises(EmbedderError, match=r"unknown embedder 'wavlm'.*set rvc\.embedder"):
        embedder_for(None, "wavlm", VOICE)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("embedders")
    write_hubert(root / "hubert_base", seed=1)
    write_hubert(root / "embedders" / "japanese-hubert-base", seed=2, final_proj=False)
    write_rvc_voice(
        root / "jp.pth", "v2", 32000, vocoder="HiFi-GAN", embedder="japanese-hubert-base"
    )
    write_rvc_voice(
        root / "jp2.pth", "v2", 24000, seed=3, vocoder="HiFi-GAN", embedder="japanese-hubert-base"
    )
    write_rvc_voice(root / "cv.pth", "v2", 40000, seed=4, vocoder="HiFi-GAN")
    write_rvc_voice(root / "v1.pth", "v1", 48000, seed=5)
    write_rvc_voice(root / "custom.pth", "v2", 32000, seed=6, vocoder="HiFi-GAN", embedder="custom")
    return root


def _converter(root: Path) -> tuple[RvcConverter, list[str]]:
    registry = Registry(root, offline=True)
    loads: list[str] = []

    def load(name: str) -> ContentEncoder:
        loads.append(name)
        return ContentEncoder(load_hubert(registry.embedder(name)))

    converter = RvcConverter(ContentModels(load), {"yin": YinPitch()}, torch.device("cpu"))
    return converter, loads


def test_one_shared_model_per_embedder_loaded_when_needed(folder: Path) -> None:
    converter, loads = _converter(folder)
    assert loads == []
    jp = converter.voice(RvcParams(model=folder / "jp.pth", f0_method="yin"))
    jp2 = converter.voice(RvcParams(model=folder / "jp2.pth", f0_method="yin"))
    assert loads == ["japanese-hubert-base"]  # contentvec is never loaded: no voice needs it
    assert jp.content is jp2.content
    assert jp.embedder == "japanese-hubert-base"
    cv = converter.voice(RvcParams(model=folder / "cv.pth", f0_method="yin"))
    assert loads == ["japanese-hubert-base", "contentvec"]
    assert cv.content is not jp.content
    out = converter.convert(speech(0.4), RvcParams(model=folder / "jp.pth", f0_method="yin"))
    assert out.rate == 32000
    assert abs(out.seconds - 0.4) <= 0.011
    # the same voice through another content model gives other audio
    other = converter.convert(
        speech(0.4), RvcParams(model=folder / "jp.pth", f0_method="yin", embedder="contentvec")
    )
    assert len(other) == len(out)
    assert not (other.samples == out.samples).all()


def test_embedder_refusals(folder: Path) -> None:
    converter, _ = _converter(folder)
    with pytest.raises(VoiceLoadError, match=r"custom embedder; set rvc\.embedder"):
        converter.voice(RvcParams(model=folder / "custom.pth", f0_method="yin"))
    custom = folder / "embedders" / "japanese-hubert-base"
    voice = converter.voice(
        RvcParams(model=folder / "custom.pth", f0_method="yin", embedder=str(custom))
    )
    assert voice.embedder == str(custom)
    with pytest.raises(VoiceLoadError, match=r"v1 voice needs 256-dim features.*no final_proj"):
        converter.voice(
            RvcParams(model=folder / "v1.pth", f0_method="yin", embedder="japanese-hubert-base")
        )


def test_published_embedders_are_named_exactly_when_offline(tmp_path: Path) -> None:
    with pytest.raises(
        ModelUnavailableError,
        match=r"IAHispano/Applio:Resources/embedders/korean_hubert_base/config\.json",
    ):
        Registry(tmp_path, offline=True).embedder("korean-hubert-base")
    with pytest.raises(ModelUnavailableError, match="content model not found"):
        Registry(tmp_path, offline=True).embedder(str(tmp_path / "nowhere"))


def test_only_hubert_base_layouts_load(tmp_path: Path) -> None:
    model = write_hubert(tmp_path / "large")
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "do_stable_layer_norm": True}))
    with pytest.raises(ContentModelError, match="not HuBERT base's layout"):
        load_hubert(model)


def test_profile_names_the_embedder(folder: Path, tmp_path: Path) -> None:
    voices = tmp_path / "voices"
    voices.mkdir()
    base: dict[str, Any] = {"languages": ["en"], "rvc": {"model": str(folder / "custom.pth")}}
    choices = {
        "named": "hubert_base",
        "path": str(folder / "embedders" / "japanese-hubert-base"),
        "default": None,
    }
    for name, embedder in choices.items():
        rvc = {**base["rvc"], **({"embedder": embedder} if embedder else {})}
        (voices / f"{name}.yaml").write_text(yaml.safe_dump({**base, "rvc": rvc}))
    loaded = load_voices(voices)
    assert loaded["named"].rvc is not None
    assert loaded["named"].rvc.embedder == "contentvec"
    assert loaded["path"].rvc is not None
    assert loaded["path"].rvc.embedder == choices["path"]
    assert loaded["default"].rvc is not None
    assert loaded["default"].rvc.embedder is None
    (voices / "bad.yaml").write_text(
        yaml.safe_dump({**base, "rvc": {**base["rvc"], "embedder": "wavlm"}})
    )
    with pytest.raises(
        VoiceConfigError, match=r"bad\.yaml: rvc\.embedder: neither a known embedder"
    ):
        load_voices(voices)
