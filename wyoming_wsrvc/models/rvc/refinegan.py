"""Applio's RefineGAN decoder (`vocoder: "RefineGAN"`), both released layouts, inference only.

RefineGAN ignores most of the voice's decoder config: its widths are fixed (512 channels after
the latent and speaker are merged, halved at every stage; speaker conditioning 256 wide), and
only the upsampling rates, the latent width and the output rate come from the voice. Each stage
upsamples linearly by its rate, appends a copy of the pitch excitation at that stage's rate, and
runs a `ParallelResBlock` (three residual blocks of kernels 3/7/11, dilations 1/3/5, each
between two `AdaIN` noise layers, averaged).

The two layouts share key names but not shapes or arithmetic:

* **3.3 and later** (`pre_conv` has 16 output channels): the excitation goes through `pre_conv`,
  then down a chain of `downsample_blocks` (16 → 32 → … channels), each stage's input kept for
  the matching upsampling stage and resampled (Kaiser-windowed sinc) to the next rate down.
* **3.2.9** (`pre_conv` has 256 output channels): `pre_conv`'s output is linearly interpolated
  to the frame rate and joined to the latent; each `downsample_blocks[i]` is a strided conv that
  takes the excitation straight to stage i's rate and width (512 / 2^(i+2) channels).

Noise mode adds `randn · weight` in every `AdaIN` before its leaky ReLU (slope 0.2).
"""

from __future__ import annotations

import math
from enum import Enum
from typing import cast

import torch
import torch.nn.functional as F
import torchaudio.functional
from torch import Tensor, nn

from . import nwc
from .crop import Crop, chain, frames, reach
from .sines import harmonic_sines

SLOPE = 0.2
WIDTH = 512
SPEAKER_WIDTH = 256
START_CHANNELS = 16
KERNELS = (3, 7, 11)
DILATIONS = (1, 3, 5)
# Applio 3.3+'s resampler of the excitation between stages.
RESAMPLE = {
    "lowpass_filter_width": 64,
    "rolloff": 0.9475937167399596,
    "resampling_method": "sinc_interp_kaiser",
    "beta": 14.769656459379492,
}


class Layout(Enum):
    """The two RefineGAN layouts Applio has released, told apart by `dec.pre_conv`'s width."""

    V3_3 = "3.3+"
    V3_2_9 = "3.2.9"

    @classmethod
    def from_pre_conv_width(cls, width: int) -> Layout | None:
        return {START_CHANNELS: cls.V3_3, WIDTH // 2: cls.V3_2_9}.get(width)


class AdaIN(nn.Module):
    """x + N(0, 1) · weight per channel (noise mode only), then leaky ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor, noise: bool, generator: torch.Generator | None) -> Tensor:
        if noise:
            gaussian = torch.randn(x.shape, generator=generator, device=x.device).to(x.dtype)
            x = x + gaussian * self.weight[None, :, None]
        return F.leaky_relu(x, SLOPE)


class ResBlock(nn.Module):
    def __init__(self, channels: int, kernel: int) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(
            [
                nwc.Conv1d(channels, channels, kernel, dilation=d, padding=(kernel * d - d) // 2)
                for d in DILATIONS
            ]
        )
        self.convs2 = nn.ModuleList(
            [nwc.Conv1d(channels, channels, kernel, padding=(kernel - 1) // 2) for _ in DILATIONS]
        )

    def forward(self, x: Tensor) -> Tensor:
        for c1, c2 in zip(self.convs1, self.convs2, strict=True):
            x = c2(F.leaky_relu(c1(F.leaky_relu(x, SLOPE)), SLOPE)) + x
        return x

    def reach(self, per_frame: float) -> float:
        """Frames one output reaches into the input (`crop.reach`)."""
        return chain([*self.convs1, *self.convs2], per_frame)


class NoisyResBlock(nn.ModuleList):
    """AdaIN → ResBlock → AdaIN; a list so that the keys are Applio's `Sequential` ones (0, 1, 2)."""

    def __init__(self, channels: int, kernel: int) -> None:
        super().__init__([AdaIN(channels), ResBlock(channels, kernel), AdaIN(channels)])

    def forward(self, x: Tensor, noise: bool, generator: torch.Generator | None) -> Tensor:
        x = self[0](x, noise, generator)
        result: Tensor = self[2](self[1](x), noise, generator)
        return result

    def reach(self, per_frame: float) -> float:
        """Frames one output reaches into the input (`crop.reach`; AdaIN is per sample)."""
        return cast(ResBlock, self[1]).reach(per_frame)


class ParallelResBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.input_conv = nwc.Conv1d(in_channels, out_channels, 7, padding=3)
        self.blocks = nn.ModuleList([NoisyResBlock(out_channels, k) for k in KERNELS])

    def forward(self, x: Tensor, noise: bool, generator: torch.Generator | None) -> Tensor:
        x = self.input_conv(x)
        outs = [block(x, noise, generator) for block in self.blocks]
        return torch.stack(outs, dim=0).mean(dim=0)

    def reach(self, per_frame: float) -> float:
        """Frames one output reaches into the input (`crop.reach`; the noise layers are
        per sample)."""
        residual = max(cast(NoisyResBlock, b).reach(per_frame) for b in self.blocks)
        return reach(self.input_conv, per_frame) + residual


class SineSource(nn.Module):
    """(b, n) Hz → (b, 1, n): the fundamental through `merge.0` (no bias) and tanh."""

    def __init__(self, rate: int) -> None:
        super().__init__()
        self.rate = rate
        self.merge = nn.Sequential(nn.Linear(1, 1, bias=False))

    def forward(
        self, f0: Tensor, noise: bool, generator: torch.Generator | None, phase: float = 0.0
    ) -> Tensor:
        sines = harmonic_sines(f0, self.rate, 0, noise, generator, phase)
        dtype = cast(nn.Linear, self.merge[0]).weight.dtype
        return torch.tanh(self.merge(sines.to(dtype))).transpose(1, 2)


class RefineGanDecoder(nn.Module):
    """latent (b, inter, t) + f0 (b, t) Hz per frame → audio (b, 1, t · hop) in [-1, 1]."""

    def __init__(
        self, inter_channels: int, upsample_rates: tuple[int, ...], rate: int, layout: Layout
    ) -> None:
        super().__init__()
        self.layout = layout
        self.upsample_rates = upsample_rates
        self.hop = math.prod(upsample_rates)
        self.m_source = SineSource(rate)
        self.downsample_blocks = nn.ModuleList()
        self.sizes: list[tuple[int, int]] = []  # (from, to) samples per frame, per stage (3.3+)
        if layout is Layout.V3_3:
            self.pre_conv = nwc.Conv1d(1, START_CHANNELS, 7, padding=3)
            channels, size = START_CHANNELS, self.hop
            for i in range(len(upsample_rates)):
                new_size = int(size / upsample_rates[-i - 1])
                self.sizes.append((size, new_size))
                size = new_size
                self.downsample_blocks.append(nwc.Conv1d(channels, channels * 2, 7, padding=3))
                channels *= 2
        else:
            self.pre_conv = nwc.Conv1d(1, WIDTH // 2, 7, padding=3)
            for i in range(len(upsample_rates)):
                stride = math.prod(upsample_rates[i + 1 :])
                kernel = 1 if stride == 1 else stride * 2 - stride % 2
                self.downsample_blocks.append(
                    nwc.Conv1d(
                        1,
                        WIDTH // 2 ** (i + 2),
                        kernel,
                        stride=stride,
                        padding=0 if stride == 1 else (kernel - stride) // 2,
                    )
                )
        self.mel_conv = nwc.Conv1d(inter_channels, WIDTH // 2, 7, padding=3)
        self.cond = nwc.Conv1d(SPEAKER_WIDTH, WIDTH // 2, 1)
        self.upsample_conv_blocks = nn.ModuleList()
        channels = WIDTH
        for _ in upsample_rates:
            self.upsample_conv_blocks.append(
                ParallelResBlock(channels + channels // 4, channels // 2)
            )
            channels //= 2
        self.conv_post = nwc.Conv1d(channels, 1, 7, padding=3, bias=False)
        self.context = self._context()

    def _context(self) -> int:
        """Latent frames an output frame depends on, each way (`crop`): the latent's and
        the upsampling path's; the excitation's stage inputs are made for the whole window."""
        total, per_frame = reach(self.mel_conv, 1), 1
        for rate, block in zip(self.upsample_rates, self.upsample_conv_blocks, strict=True):
            total += 1 / per_frame  # linear interpolation: one input sample each way
            per_frame *= rate
            total += cast(ParallelResBlock, block).reach(per_frame)
        return frames(total + reach(self.conv_post, per_frame))

    def _stage_sources(self, source: Tensor, frames: int) -> tuple[Tensor, list[Tensor]]:
        """The excitation (b, 1, frames · hop) → what joins the latent, and one input per stage."""
        x = self.pre_conv(source)
        if self.layout is Layout.V3_2_9:
            joined = F.interpolate(x, size=frames, mode="linear")
            return joined, [block(source) for block in self.downsample_blocks]
        downs = []
        for block, (old, new) in zip(self.downsample_blocks, self.sizes, strict=True):
            x = F.leaky_relu(x, SLOPE)
            downs.append(x)
            x = torchaudio.functional.resample(
                x.contiguous(), orig_freq=frames * old, new_freq=frames * new, **RESAMPLE
            )
            x = block(x)
        return x, downs[::-1]

    def forward(
        self,
        x: Tensor,
        g: Tensor,
        f0: Tensor | None,
        noise: bool,
        generator: torch.Generator | None,
        phase: float = 0.0,
        keep: tuple[int, int] | None = None,
    ) -> Tensor:
        """`keep`: only these frames of the output, computed exactly (`crop.Crop`)."""
        if f0 is None:
            raise ValueError("RefineGAN needs pitch")
        total = x.shape[-1]
        f0_samples = F.interpolate(f0.float()[:, None], size=total * self.hop, mode="linear")
        source = self.m_source(f0_samples[:, 0], noise, generator, phase).to(x.dtype)
        # the excitation and its stage inputs of the whole window, cut to the frames run
        joined, stage_inputs = self._stage_sources(source, total)
        crop = Crop.of(total, keep, self.context)
        joined = crop.take(joined)
        stage_inputs = [crop.take(s, s.shape[-1] // total) for s in stage_inputs]
        x = torch.cat([self.mel_conv(crop.take(x)) + self.cond(g), joined], dim=1)
        for rate, block, stage in zip(
            self.upsample_rates, self.upsample_conv_blocks, stage_inputs, strict=True
        ):
            x = F.interpolate(F.leaky_relu(x, SLOPE), scale_factor=rate, mode="linear")
            x = block(torch.cat([x, stage], dim=1), noise, generator)
        return crop.kept(torch.tanh(self.conv_post(F.leaky_relu(x, SLOPE))), self.hop)
