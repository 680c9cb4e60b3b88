"""RVC engine: voice-file formats and refusals, content and pitch models, index, conversion."""

from __future__ import annotations

import pickle
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from wyoming_wsrvc.audio import Audio
from wyoming_wsrvc.config.voices import RvcParams
from wyoming_wsrvc.devtools.write_rvc import write_hubert, write_index, write_rmvpe, write_rvc_voice
from wyoming_wsrvc.engine.conversion import RvcConverter, VoiceLoadError
from wyoming_wsrvc.models.rvc.checkpoint import RvcCheckpointError, load_synthesizer, read_voice
from wyoming_wsrvc.models.rvc.content import (
    ContentEncoder,
    ContentModelError,
    ContentModels,
    frames_for,
    load_hubert,
)
from wyoming_wsrvc.models.rvc.index import FeatureIndex, IndexFileError
from wyoming_wsrvc.models.rvc.pitch import PitchExtractor, RmvpePitch, YinPitch, coarse, shift
from wyoming_wsrvc.models.rvc.rmvpe import Rmvpe, RmvpeError


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rvc")
    return {
        "v2": write_rvc_voice(root / "v2.pth", "v2", 40000),
        "v1": write_rvc_voice(root / "v1.pth", "v1", 48000, seed=3),
        "v2_32k_nof0": write_rvc_voice(root / "nof0.pth", "v2", 32000, f0=False, seed=4),
        "index": write_index(root / "added_v2.index", 768),
        "index_v1": write_index(root / "added_v1.index", 256),
        "hubert": write_hubert(root / "hubert_base"),
        "rmvpe": write_rmvpe(root / "rmvpe.pt"),
    }


@pytest.fixture(scope="module")
def converter(files: dict[str, Path]) -> RvcConverter:
    content = ContentModels(loaded={"contentvec": ContentEncoder(load_hubert(files["hubert"]))})
    pitch: dict[str, PitchExtractor] = {
        "rmvpe": RmvpePitch(Rmvpe(files["rmvpe"])),
        "yin": YinPitch(),
    }
    return RvcConverter(content, pitch, torch.device("cpu"), max_loaded=2)


def speech(seconds: float, rate: int = 24000) -> Audio:
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * 180 * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t))
    return Audio(tone.astype(np.float32), rate)


def test_voice_variants_load(files: dict[str, Path]) -> None:
    v2, v1, nof0 = (
        read_voice(files["v2"]),
        read_voice(files["v1"]),
        read_voice(files["v2_32k_nof0"]),
    )
    assert (v2.version, v2.config.rate, v2.config.f0, v2.config.feature_dim) == (
        "v2",
        40000,
        True,
        768,
    )
    assert (v1.version, v1.config.rate, v1.config.hop) == ("v1", 48000, 480)
    assert (nof0.config.f0, nof0.config.rate) == (False, 32000)
    assert v2.config.n_speakers == 3  # from emb_g.weight, not the config list
    for voice in (v2, v1, nof0):
        model = load_synthesizer(voice)
        assert next(model.parameters()).dtype == torch.float32


def _rewrite(src: Path, dst: Path, **changes: object) -> Path:
    data = torch.load(src, weights_only=True)
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    torch.save(data, dst)
    return dst


class Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("this would run",))


def test_old_and_applio_files(files: dict[str, Path], tmp_path: Path) -> None:
    old = _rewrite(files["v1"], tmp_path / "old.pth", version=None, f0=None)
    assert read_voice(old).version == "v1"
    data = torch.load(files["v2"], weights_only=True)
    renamed = {}
    for key, value in data["weight"].items():
        key = key.replace(".weight_g", ".parametrizations.weight.original0")
        renamed[key.replace(".weight_v", ".parametrizations.weight.original1")] = value
    applio = _rewrite(
        files["v2"],
        tmp_path / "applio.pth",
        weight=renamed,
        vocoder="HiFi-GAN",
        embedder_model="contentvec",
        author="me",
        speakers_id=3,
    )
    a, b = load_synthesizer(read_voice(applio)), load_synthesizer(read_voice(files["v2"]))
    phone = torch.randn(1, 20, 768)
    f0 = torch.full((1, 20), 150.0)
    out_a = a.infer(phone, torch.from_numpy(coarse(f0.numpy().astype(np.float64))), f0, noise=False)
    out_b = b.infer(phone, torch.from_numpy(coarse(f0.numpy().astype(np.float64))), f0, noise=False)
    assert torch.allclose(out_a.audio, out_b.audio, atol=1e-6)
    with_enc_q = dict(data["weight"], **{"enc_q.pre.weight": torch.zeros(2)})
    assert read_voice(_rewrite(files["v2"], tmp_path / "encq.pth", weight=with_enc_q))


def test_bad_voice_files(files: dict[str, Path], tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(files["v2"].read_bytes()[:3000])
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"weight": Payload(), "config": []}))
    foreign = tmp_path / "foreign.pth"
    torch.save({"state": torch.zeros(3)}, foreign)
    training = tmp_path / "G_100.pth"
    torch.save({"model": {"x": torch.zeros(1)}, "iteration": 1}, training)
    data = torch.load(files["v2"], weights_only=True)
    extra = dict(data["weight"], **{"dec.mrfs.0.weight": torch.zeros(1)})
    cases = {
        truncated: "truncated",
        evil: "refused",
        foreign: "not an RVC voice",
        training: "training checkpoint",
        tmp_path / "missing.pth": "not found",
        _rewrite(files["v2"], tmp_path / "refine.pth", vocoder="RefineGAN"): "vocoder",
        _rewrite(files["v2"], tmp_path / "mrf.pth", weight=extra, vocoder="HiFi-GAN"): "vocoder",
        _rewrite(files["v2"], tmp_path / "cfg.pth", config=[1, 2, 3]): "config",
    }
    for path, reason in cases.items():
        with pytest.raises(RvcCheckpointError, match=reason):
            read_voice(path)
    unknown = dict(data["weight"], **{"dec.extra.weight": torch.zeros(1)})
    with pytest.raises(RvcCheckpointError, match="unexpected"):
        load_synthesizer(
            read_voice(_rewrite(files["v2"], tmp_path / "unknown.pth", weight=unknown))
        )


@pytest.fixture
def fake_fairseq() -> Iterator[type]:
    """A stand-in `fairseq.data.dictionary.Dictionary`, only to *write* a fairseq-style file."""
    names = ["fairseq", "fairseq.data", "fairseq.data.dictionary"]
    modules = {name: types.ModuleType(name) for name in names}

    class Dictionary:
        def __init__(self) -> None:
            self.symbols = ["<s>", "<pad>"]

    Dictionary.__module__ = "fairseq.data.dictionary"
    Dictionary.__qualname__ = "Dictionary"
    modules["fairseq.data.dictionary"].Dictionary = Dictionary  # type: ignore[attr-defined]
    sys.modules.update(modules)
    try:
        yield Dictionary
    finally:
        for name in names:
            sys.modules.pop(name, None)


def _to_fairseq(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in hf.items():
        key = (
            key.replace(
                "feature_extractor.conv_layers.0.layer_norm.", "feature_extractor.conv_layers.0.2."
            ).replace(".conv.weight", ".0.weight")
            if key.startswith("feature_extractor")
            else key
        )
        key = key.replace("feature_projection.projection.", "post_extract_proj.")
        key = key.replace("feature_projection.layer_norm.", "layer_norm.")
        key = key.replace("encoder.pos_conv_embed.conv.", "encoder.pos_conv.0.")
        key = (
            key.replace(".attention.", ".self_attn.")
            .replace(".feed_forward.intermediate_dense.", ".fc1.")
            .replace(".feed_forward.output_dense.", ".fc2.")
        )
        if key.startswith("encoder.layers.") and ".layer_norm." in key and "final" not in key:
            key = key.replace(".layer_norm.", ".self_attn_layer_norm.")
        out[key] = value
    out["label_embs_concat"] = torch.zeros(2, 256)
    out["mask_emb"] = torch.zeros(768)
    return out


def test_content_model_formats(files: dict[str, Path], fake_fairseq: type, tmp_path: Path) -> None:
    hf = load_hubert(files["hubert"])
    state = torch.load(files["hubert"] / "pytorch_model.bin", weights_only=True)
    fairseq_file = tmp_path / "hubert_base.pt"
    torch.save(
        {
            "cfg": {"model": {"_name": "hubert"}},
            "model": _to_fairseq(state),
            "task_state": {"dictionaries": [fake_fairseq()]},
        },
        fairseq_file,
    )
    (tmp_path / "config.json").write_text((files["hubert"] / "config.json").read_text())
    sys.modules.pop("fairseq.data.dictionary")  # loading must not need fairseq
    fs = load_hubert(fairseq_file)
    audio = torch.from_numpy(speech(1.0, 16000).samples)
    for version in ("v1", "v2"):
        a, b = (
            ContentEncoder(hf).features(audio, version),
            ContentEncoder(fs).features(audio, version),
        )
        assert a.shape == (1, frames_for(16000), 256 if version == "v1" else 768)
        assert torch.allclose(a, b, atol=1e-5)
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"model": Payload()}))
    with pytest.raises(ContentModelError, match="not a loadable"):
        load_hubert(evil)


def test_pitch_post_processing() -> None:
    f0 = np.array([0.0, 100.0, 440.0, 1000.0])
    assert shift(f0, 12).tolist() == [0.0, 200.0, 880.0, 1100.0]
    assert shift(f0, -24)[1] == 50.0
    assert coarse(np.array([0.0, 50.0, 1100.0, 5000.0])).tolist() == [1, 1, 255, 255]
    t = np.arange(16000) / 16000
    f = YinPitch().f0(torch.from_numpy((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)))
    assert len(f) == 101
    assert abs(np.median(f[5:-5]) - 220) < 1
    assert YinPitch().f0(torch.zeros(8000)).max() == 0


def test_rmvpe_refuses_foreign_files(tmp_path: Path) -> None:
    torch.save({"x": torch.zeros(1)}, tmp_path / "r.pt")
    with pytest.raises(RmvpeError, match="not an RMVPE"):
        Rmvpe(tmp_path / "r.pt")


def test_index(files: dict[str, Path], tmp_path: Path) -> None:
    index = FeatureIndex.load(files["index"])
    feats = torch.randn(1, 30, 768)
    assert torch.equal(index.blend(feats, 0.0), feats)
    full = index.blend(feats, 1.0)
    # Fully retrieved frames are convex combinations of stored vectors.
    assert full.shape == feats.shape
    assert not torch.allclose(full, feats)
    assert float(full.abs().max()) <= float(np.abs(index.vectors).max()) + 1e-4
    half = index.blend(feats, 0.5)
    assert torch.allclose(half, 0.5 * full + 0.5 * feats, atol=1e-5)
    (tmp_path / "bad.index").write_bytes(b"garbage" * 10)
    with pytest.raises(IndexFileError, match="not a faiss index"):
        FeatureIndex.load(tmp_path / "bad.index")


def test_conversion_lengths_and_rates(converter: RvcConverter, files: dict[str, Path]) -> None:
    v2 = RvcParams(model=files["v2"], index=files["index"], pitch_shift=2.0)
    for seconds in (0.0, 0.005, 0.3, 2.0):
        out = converter.convert(speech(seconds), v2)
        assert out.rate == 40000
        assert abs(out.seconds - seconds) <= 0.011, (seconds, out.seconds)
        assert np.isfinite(out.samples).all()
        assert not len(out) or np.abs(out.samples).max() <= 0.99 + 1e-6
    silence = converter.convert(Audio(np.zeros(24000, dtype=np.float32), 24000), v2)
    assert abs(silence.seconds - 1.0) < 0.011
    v1 = RvcParams(model=files["v1"], f0_method="yin", rms_mix_rate=1.0)
    assert converter.convert(speech(0.5), v1).rate == 48000
    nof0 = RvcParams(model=files["v2_32k_nof0"], f0_method="yin")
    assert converter.convert(speech(0.5), nof0).rate == 32000


@pytest.mark.slow
def test_long_audio_is_converted_in_pieces(converter: RvcConverter, files: dict[str, Path]) -> None:
    out = converter.convert(speech(61.0, 16000), RvcParams(model=files["v1"], f0_method="yin"))
    assert abs(out.seconds - 61.0) < 0.05


def test_lru_and_bad_index(converter: RvcConverter, files: dict[str, Path]) -> None:
    for name in ("v2", "v1", "v2_32k_nof0"):
        converter.voice(RvcParams(model=files[name], f0_method="yin"))
    assert len(converter.loaded) == 2
    assert files["v2"] not in converter.loaded
    with pytest.raises(VoiceLoadError, match="256-dim index for a v2 voice"):
        converter.voice(RvcParams(model=files["v2"], index=files["index_v1"]))
    with pytest.raises(VoiceLoadError, match="speaker_id"):
        converter.voice(RvcParams(model=files["v1"], speaker_id=7))
