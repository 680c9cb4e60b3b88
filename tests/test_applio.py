"""Applio voices: MRF HiFi-GAN and RefineGAN (both layouts) read, refused, converted, and noisy
the way Applio is. Numbers against Applio's own code are in the parity suite."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from wyoming_wsrvc.config.voices import RvcParams
from wyoming_wsrvc.devtools.write_rvc import write_hubert, write_rvc_voice
from wyoming_wsrvc.engine.conversion import RvcConverter
from wyoming_wsrvc.models.rvc.checkpoint import RvcCheckpointError, load_synthesizer, read_voice
from wyoming_wsrvc.models.rvc.content import ContentEncoder, ContentModels, load_hubert
from wyoming_wsrvc.models.rvc.pitch import YinPitch, coarse
from wyoming_wsrvc.models.rvc.refinegan import AdaIN, Layout
from wyoming_wsrvc.models.rvc.sines import NOISE_STD, SINE_AMP, harmonic_sines
from wyoming_wsrvc.models.rvc.synthesizer import Synthesizer

from .test_rvc import _rewrite, speech

VOICES = {
    "mrf_24k": ("MRF HiFi-GAN", "3.3+", 24000),
    "mrf_32k": ("MRF HiFi-GAN", "3.3+", 32000),
    "refinegan_24k": ("RefineGAN", "3.3+", 24000),
    "refinegan_32k": ("RefineGAN", "3.3+", 32000),
    "refinegan_3_2_9_32k": ("RefineGAN", "3.2.9", 32000),
}


@pytest.fixture(scope="module")
def applio(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("applio")
    files = {
        name: write_rvc_voice(
            root / f"{name}.pth", "v2", rate, seed=20 + i, vocoder=vocoder, layout=layout
        )
        for i, (name, (vocoder, layout, rate)) in enumerate(VOICES.items())
    }
    files["hubert"] = write_hubert(root / "hubert_base")
    return files


def _infer(model: Synthesizer, frames: int = 40, **kwargs: object) -> torch.Tensor:
    phone = torch.randn(1, frames, 768, generator=torch.Generator().manual_seed(0))
    f0 = torch.linspace(110.0, 220.0, frames)[None]
    f0[:, :5] = 0  # some unvoiced frames
    bins = torch.from_numpy(coarse(f0.numpy().astype(np.float64)))
    return model.infer(phone, bins, f0, **kwargs).audio  # type: ignore[arg-type]


def test_applio_voices_are_read_with_their_decoder(applio: dict[str, Path]) -> None:
    for name, (vocoder, layout, rate) in VOICES.items():
        voice = read_voice(applio[name])
        cfg = voice.config
        assert (cfg.vocoder, cfg.rate, cfg.hop) == (vocoder, rate, rate // 100)
        if vocoder == "RefineGAN":
            assert cfg.refinegan_layout is Layout(layout)
            assert f"Applio {layout} layout" in cfg.decoder_name
        else:
            assert cfg.harmonics == 8  # from the width of m_source.l_linear
        audio = _infer(load_synthesizer(voice), noise=False)
        assert audio.shape == (1, 1, 40 * cfg.hop)
        assert torch.isfinite(audio).all()


def test_applio_refusals_name_the_vocoder(applio: dict[str, Path], tmp_path: Path) -> None:
    no_pitch = write_rvc_voice(tmp_path / "nof0.pth", "v2", 32000, f0=False, vocoder="MRF HiFi-GAN")
    refine = torch.load(applio["refinegan_32k"], weights_only=True)
    odd = dict(refine["weight"])
    odd["dec.pre_conv.weight_g"] = torch.ones(64, 1, 1).half()
    odd["dec.pre_conv.weight_v"] = torch.ones(64, 1, 7).half()
    cases = {
        no_pitch: "vocoder MRF HiFi-GAN without pitch",
        _rewrite(applio["mrf_24k"], tmp_path / "big.pth", vocoder="BigVGAN"): (
            "unknown vocoder 'BigVGAN'"
        ),
        _rewrite(applio["mrf_24k"], tmp_path / "liar.pth", vocoder="RefineGAN"): (
            "vocoder RefineGAN stated, but the decoder weights are MRF HiFi-GAN's"
        ),
        _rewrite(applio["refinegan_32k"], tmp_path / "odd.pth", weight=odd): (
            "vocoder RefineGAN: shapes match neither released layout"
        ),
        _rewrite(
            applio["refinegan_32k"],
            tmp_path / "gin.pth",
            config=[*refine["config"][:16], 128, 32000],
        ): ("256-wide speaker conditioning"),
    }
    for path, reason in cases.items():
        with pytest.raises(RvcCheckpointError, match=reason) as caught:
            read_voice(path)
        assert "\n" not in str(caught.value)
        assert str(path) in str(caught.value)


def test_vocoder_read_from_the_weights_when_the_file_does_not_say(
    applio: dict[str, Path], tmp_path: Path
) -> None:
    for name in ("mrf_24k", "refinegan_3_2_9_32k"):
        unnamed = _rewrite(applio[name], tmp_path / f"{name}.pth", vocoder=None)
        assert read_voice(unnamed).config == read_voice(applio[name]).config


def test_applio_voices_convert_at_their_rates(applio: dict[str, Path]) -> None:
    content = ContentModels(loaded={"contentvec": ContentEncoder(load_hubert(applio["hubert"]))})
    converter = RvcConverter(content, {"yin": YinPitch()}, torch.device("cpu"), max_loaded=2)
    for name, (_, _, rate) in VOICES.items():
        params = RvcParams(model=applio[name], f0_method="yin", pitch_shift=3.0)
        assert converter.output_rate(params) == rate
        for seconds in (0.3, 1.5):
            out = converter.convert(speech(seconds), params)
            assert out.rate == rate
            assert abs(out.seconds - seconds) <= 0.011, (name, seconds, out.seconds)
            assert np.isfinite(out.samples).all()
            assert np.abs(out.samples).max() > 0


def test_harmonic_sines_noise_follows_applio() -> None:
    rate, n = 32000, 32000
    f0 = torch.full((1, n), 200.0)
    f0[:, n // 2 :] = 0  # second half unvoiced
    clean = harmonic_sines(f0, rate, 8, noise=False)
    assert clean.shape == (1, n, 9)
    voiced = slice(0, n // 2)
    # noise-free: harmonic k is sin(2π·k·f0·t) from phase 0, nothing where unvoiced
    t = torch.arange(1, n // 2 + 1) / rate
    for k in (1, 3):
        expected = SINE_AMP * torch.sin(2 * torch.pi * k * 200.0 * t)
        assert torch.allclose(clean[0, voiced, k - 1], expected, atol=2e-4)
    assert torch.count_nonzero(clean[0, n // 2 :]) == 0

    def noisy(seed: int) -> torch.Tensor:
        return harmonic_sines(
            f0, rate, 8, noise=True, generator=torch.Generator().manual_seed(seed)
        )

    first, again, other = noisy(1), noisy(1), noisy(2)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    residual = first - clean
    # the fundamental keeps phase 0: only the additive noise differs, std 0.003 voiced
    assert abs(residual[0, voiced, 0].std().item() - NOISE_STD) < 0.0003
    unvoiced_std = residual[0, n // 2 :].std().item()
    assert abs(unvoiced_std - SINE_AMP / 3) < 0.002
    # the overtones start at random phases: far more than the noise apart, and seed-dependent
    shifted = (residual[0, voiced, 1:].std(dim=0) > 10 * NOISE_STD).sum().item()
    assert shifted >= 6
    assert not torch.allclose(first[0, voiced, 1:], other[0, voiced, 1:], atol=0.05)


def test_adain_noise_is_randn_times_weight() -> None:
    x = torch.randn(2, 4, 5000)
    layer = AdaIN(4)
    with torch.no_grad():
        layer.weight.zero_()
    generator = torch.Generator().manual_seed(0)
    assert torch.equal(layer(x, True, generator), layer(x, False, None))
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([0.0, 0.01, 0.1, 1.0]))
    identity = AdaIN(4)  # slope-0.2 leaky ReLU is invertible: undo it to see the noise
    out = layer(x, True, torch.Generator().manual_seed(0))
    before = torch.where(out >= 0, out, out / 0.2)
    spread = (before - x).std(dim=(0, 2))
    assert torch.allclose(spread, torch.tensor([0.0, 0.01, 0.1, 1.0]), rtol=0.05, atol=1e-6)
    assert torch.equal(identity(x, False, None), torch.nn.functional.leaky_relu(x, 0.2))


@pytest.mark.parametrize("name", ["mrf_24k", "refinegan_32k", "refinegan_3_2_9_32k"])
def test_noise_mode_is_reproducible_with_a_generator(applio: dict[str, Path], name: str) -> None:
    model = load_synthesizer(read_voice(applio[name]))

    def run(seed: int) -> torch.Tensor:
        return _infer(model, noise=True, generator=torch.Generator().manual_seed(seed))

    first, again, other = run(3), run(3), run(4)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert torch.isfinite(first).all()
    assert not torch.equal(first, _infer(model, noise=False))


@pytest.mark.parametrize("name", ["mrf_24k", "refinegan_32k", "refinegan_3_2_9_32k"])
def test_zeroing_every_noise_weight_makes_noise_mode_noise_free(
    applio: dict[str, Path], name: str
) -> None:
    """The decoder's noise enters through the excitation (merged by one linear layer) and, in
    RefineGAN, the AdaIN layers: with those weights zeroed, noise mode equals noise-free."""
    model = load_synthesizer(read_voice(applio[name]))
    z = torch.randn(1, model.cfg.inter_channels, 30, generator=torch.Generator().manual_seed(5))
    g = model.emb_g(torch.tensor([0])).unsqueeze(-1)
    f0 = torch.linspace(0.0, 300.0, 30)[None]

    def decode(noise: bool) -> torch.Tensor:
        result: torch.Tensor = model.dec(z, g, f0, noise, torch.Generator().manual_seed(6))
        return result

    assert not torch.equal(decode(True), decode(False))
    with torch.no_grad():
        for module_name, param in model.dec.named_parameters():
            if "m_source" in module_name and module_name.endswith("weight"):
                param.zero_()
        for module in model.dec.modules():
            if isinstance(module, AdaIN):
                module.weight.zero_()
    assert torch.equal(decode(True), decode(False))
