"""The RVC decoders' speed work keeps their numbers: channels-last convolutions compute what
`nn.Conv1d` computes, and a decoder run on part of its input (`crop`) gives those frames as the
whole run does, for every decoder and geometry the project reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from wyoming_wsrvc.devtools.write_rvc import write_rvc_voice
from wyoming_wsrvc.models.rvc import nwc
from wyoming_wsrvc.models.rvc.checkpoint import load_synthesizer, read_voice
from wyoming_wsrvc.models.rvc.crop import Crop
from wyoming_wsrvc.models.rvc.synthesizer import Synthesizer

CONVS = [  # (in, out, kernel, stride, padding, dilation, groups)
    (8, 16, 3, 1, 1, 1, 1),
    (16, 16, 11, 1, 25, 5, 1),
    (1, 12, 80, 40, 20, 1, 1),
    (12, 6, 7, 1, 3, 1, 3),
    (6, 1, 7, 1, 3, 1, 1),
]


@pytest.mark.parametrize(
    ("c_in", "c_out", "kernel", "stride", "padding", "dilation", "groups"), CONVS
)
def test_channels_last_convolutions_compute_what_conv1d_does(
    c_in: int, c_out: int, kernel: int, stride: int, padding: int, dilation: int, groups: int
) -> None:
    torch.manual_seed(0)
    plain = nn.Conv1d(c_in, c_out, kernel, stride, padding, dilation, groups)
    fast = nwc.Conv1d(c_in, c_out, kernel, stride, padding, dilation, groups)
    fast.load_state_dict(plain.state_dict(), strict=True)
    x = torch.randn(2, c_in, 400)
    want = plain(x)
    for laid_out in (False, True):
        if laid_out:
            nwc.lay_out(fast)
        for given in (x, nwc.channels_last(x)):
            got = fast(given)
            assert got.shape == want.shape
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert fast.state_dict().keys() == plain.state_dict().keys()
    # its output stays channels-last, so the next layer needs no copy (one input channel is
    # both layouts at once: oneDNN then answers in the usual one)
    out = fast(nwc.channels_last(x))
    assert out.stride(1) == 1 or c_in == 1


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "output_padding"), [(16, 10, 3, 0), (4, 2, 1, 0), (5, 3, 2, 1)]
)
def test_channels_last_transposed_convolutions(
    kernel: int, stride: int, padding: int, output_padding: int
) -> None:
    torch.manual_seed(1)
    plain = nn.ConvTranspose1d(12, 6, kernel, stride, padding, output_padding)
    fast = nwc.lay_out(nwc.ConvTranspose1d(12, 6, kernel, stride, padding, output_padding))
    fast.load_state_dict(plain.state_dict(), strict=True)
    nwc.lay_out(fast)
    x = torch.randn(1, 12, 90)
    torch.testing.assert_close(fast(nwc.channels_last(x)), plain(x), rtol=1e-5, atol=1e-5)


DECODERS = [  # (version, rate, vocoder, layout)
    ("v2", 40000, None, "3.3+"),
    ("v1", 48000, None, "3.3+"),
    ("v1", 32000, None, "3.3+"),  # five upsampling stages
    ("v2", 32000, "MRF HiFi-GAN", "3.3+"),
    ("v2", 48000, "MRF HiFi-GAN", "3.3+"),
    ("v2", 32000, "RefineGAN", "3.3+"),
    ("v2", 40000, "RefineGAN", "3.2.9"),
]


def _voice(
    tmp_path: Path, version: str, rate: int, vocoder: str | None, layout: str
) -> Synthesizer:
    path = write_rvc_voice(
        tmp_path / "v.pth", version, rate, vocoder=vocoder, layout=layout, seed=11
    )
    synth = load_synthesizer(read_voice(path))
    # the file's random weights saturate the output; weights that keep the signal's scale
    # through every layer let a difference show
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for layer in synth.dec.modules():
            if isinstance(layer, nn.Conv1d | nn.ConvTranspose1d):
                fan_in = layer.weight[0].numel()
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator))
                layer.weight.mul_(0.7 / fan_in**0.5)
    nwc.lay_out(synth.dec)
    return synth


def _inputs(synth: Synthesizer, frames: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    phone = torch.randn(1, frames, synth.cfg.feature_dim, generator=generator)
    f0 = 110 + 60 * torch.rand(1, frames, generator=generator)
    f0[:, frames // 3 : frames // 3 + 9] = 0  # an unvoiced stretch
    return phone, F.pad(f0, (0, 0)).round().clamp(1, 255).long(), f0


def _context(synth: Synthesizer) -> int:
    return cast(int, synth.dec.context)


@pytest.mark.parametrize(("version", "rate", "vocoder", "layout"), DECODERS)
def test_a_decoder_run_on_part_of_its_input_gives_those_frames_exactly(
    tmp_path: Path, version: str, rate: int, vocoder: str | None, layout: str
) -> None:
    """The frames kept equal the whole run's, at the start, inside and at the end; with less
    context than the decoder computes for itself they do not (so the test can tell)."""
    synth = _voice(tmp_path, version, rate, vocoder, layout)
    hop = synth.cfg.hop
    frames = 3 * _context(synth) + 40
    phone, coarse, f0 = _inputs(synth, frames)
    whole = synth.infer(phone, coarse, f0, noise=False, phase=0.3).audio
    assert whole.abs().max() < 0.999  # not saturated: differences would show
    spans = [
        (0, 20),
        (_context(synth) + 5, frames - _context(synth) - 5),
        (frames - 17, frames),
        (7, 8),
    ]
    for first, end in spans:
        part = synth.infer(phone, coarse, f0, noise=False, phase=0.3, keep=(first, end)).audio
        assert part.shape[-1] == (end - first) * hop
        torch.testing.assert_close(part, whole[..., first * hop : end * hop], rtol=1e-5, atol=1e-5)
    # too little context: the kept frames next to the cut differ (the far end of the reach
    # weighs little: 9 frames of 12-15 already agree to 1e-5 with these weights)
    context = _context(synth)
    cast(Any, synth.dec).context = 4
    first, end = context + 5, frames - context - 5
    short = synth.infer(phone, coarse, f0, noise=False, phase=0.3, keep=(first, end)).audio
    assert (short - whole[..., first * hop : end * hop]).abs().max() > 1e-4


def test_crop_spans() -> None:
    crop = Crop.of(100, (10, 40), 6)
    assert (crop.start, crop.stop, crop.keep_start, crop.keep_stop) == (4, 46, 10, 40)
    assert not crop.whole
    edge = Crop.of(100, (2, 100), 6)  # the input's own ends need no context
    assert (edge.start, edge.stop) == (0, 100)
    assert Crop.of(100, None, 6).whole
    x = torch.arange(200.0).view(1, 1, 200)
    assert crop.take(x, 2).shape[-1] == 84
    assert crop.kept(crop.take(x, 2), 2).tolist() == x[..., 20:80].tolist()
    with pytest.raises(ValueError, match="not within"):
        Crop.of(100, (90, 101), 6)
