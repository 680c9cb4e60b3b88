"""Applio's MRF HiFi-GAN decoder (`vocoder: "MRF HiFi-GAN"`), inference only.

Like the NSF HiFi-GAN it upsamples the latent (b, inter, t) at 100 frames/s by transposed convs
to `rate` and adds a filtered sine excitation at every stage; it differs in the excitation (f0
repeated per sample, the fundamental and `harmonics` overtones merged by `m_source.l_linear`,
see `sines.py`), in the padding rules for odd upsampling rates, in the noise convs' kernels, in
its multi-receptive-field blocks (`mrfs.{stage}.{block}.layers.{i}.conv1/conv2`) and in a
`conv_post` with a bias. Every width and kernel comes from the voice's config; the harmonic
count from the width of `m_source.l_linear` (Applio uses 8).
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import nwc
from .crop import Crop, chain, frames, reach
from .layers import LRELU_SLOPE
from .sines import harmonic_sines


class MrfLayer(nn.Module):
    def __init__(self, channels: int, kernel: int, dilation: int) -> None:
        super().__init__()
        padding = (kernel * dilation - dilation) // 2
        self.conv1 = nwc.Conv1d(channels, channels, kernel, padding=padding, dilation=dilation)
        self.conv2 = nwc.Conv1d(channels, channels, kernel, padding=kernel // 2)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv1(F.leaky_relu(x, LRELU_SLOPE))
        result: Tensor = x + self.conv2(F.leaky_relu(y, LRELU_SLOPE))
        return result


class MrfBlock(nn.Module):
    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.layers = nn.ModuleList([MrfLayer(channels, kernel, d) for d in dilations])

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def reach(self, per_frame: float) -> float:
        """Frames one output reaches into the input (`crop.reach`)."""
        layers = [cast(MrfLayer, layer) for layer in self.layers]
        return chain([c for layer in layers for c in (layer.conv1, layer.conv2)], per_frame)


class MrfStage(nn.ModuleList):
    """One upsampling stage's MRF blocks, run side by side and averaged."""

    def __init__(
        self,
        channels: int,
        kernel_sizes: tuple[int, ...],
        dilation_sizes: tuple[tuple[int, ...], ...],
    ) -> None:
        super().__init__(
            MrfBlock(channels, k, d) for k, d in zip(kernel_sizes, dilation_sizes, strict=True)
        )

    def forward(self, x: Tensor) -> Tensor:
        blocks = iter(self)
        total = next(blocks)(x)
        for block in blocks:
            total = total + block(x)
        result: Tensor = total / len(self)
        return result


class HarmonicSource(nn.Module):
    """(b, n) Hz → (b, 1, n): the harmonics merged by a linear layer and tanh."""

    def __init__(self, rate: int, harmonics: int) -> None:
        super().__init__()
        self.rate = rate
        self.harmonics = harmonics
        self.l_linear = nn.Linear(harmonics + 1, 1)

    def forward(
        self, f0: Tensor, noise: bool, generator: torch.Generator | None, phase: float = 0.0
    ) -> Tensor:
        sines = harmonic_sines(f0, self.rate, self.harmonics, noise, generator, phase)
        merged = torch.tanh(self.l_linear(sines.to(self.l_linear.weight.dtype)))
        return merged.transpose(1, 2)


class MrfHifiganDecoder(nn.Module):
    """latent (b, inter, t) + f0 (b, t) Hz per frame → audio (b, 1, t · hop) in [-1, 1]."""

    def __init__(
        self,
        inter_channels: int,
        initial_channels: int,
        upsample_rates: tuple[int, ...],
        upsample_kernel_sizes: tuple[int, ...],
        resblock_kernel_sizes: tuple[int, ...],
        resblock_dilation_sizes: tuple[tuple[int, ...], ...],
        gin_channels: int,
        rate: int,
        harmonics: int = 8,
    ) -> None:
        super().__init__()
        self.hop = math.prod(upsample_rates)
        self.m_source = HarmonicSource(rate, harmonics)
        self.conv_pre = nwc.Conv1d(inter_channels, initial_channels, 7, padding=3)
        self.upsamples = nn.ModuleList()
        self.noise_convs = nn.ModuleList()
        self.mrfs = nn.ModuleList()
        channels = initial_channels
        for i, (u, k) in enumerate(zip(upsample_rates, upsample_kernel_sizes, strict=True)):
            channels = initial_channels // 2 ** (i + 1)
            padding = (k - u) // 2 if u % 2 == 0 else u // 2 + u % 2
            self.upsamples.append(
                nwc.ConvTranspose1d(
                    initial_channels // 2**i,
                    channels,
                    k,
                    stride=u,
                    padding=padding,
                    output_padding=u % 2,
                )
            )
            stride = math.prod(upsample_rates[i + 1 :])
            kernel = 1 if stride == 1 else stride * 2 - stride % 2
            self.noise_convs.append(
                nwc.Conv1d(1, channels, kernel, stride=stride, padding=(kernel - stride) // 2)
            )
            self.mrfs.append(MrfStage(channels, resblock_kernel_sizes, resblock_dilation_sizes))
        self.conv_post = nwc.Conv1d(channels, 1, 7, padding=3)
        self.cond = nwc.Conv1d(gin_channels, initial_channels, 1) if gin_channels else None
        self.context = self._context(upsample_rates)

    def _context(self, upsample_rates: tuple[int, ...]) -> int:
        """Latent frames an output frame depends on, each way (`crop`)."""
        total, per_frame = reach(self.conv_pre, 1), 1
        for up, noise_conv, stage, rate in zip(
            self.upsamples, self.noise_convs, self.mrfs, upsample_rates, strict=True
        ):
            total += reach(up, per_frame)
            per_frame *= rate
            total += reach(noise_conv, self.hop)  # the excitation, at the output rate
            total += max(cast(MrfBlock, block).reach(per_frame) for block in cast(MrfStage, stage))
        return frames(total + reach(self.conv_post, per_frame))

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
            raise ValueError("MRF HiFi-GAN needs pitch")
        crop = Crop.of(x.shape[-1], keep, self.context)
        f0_samples = f0.float().repeat_interleave(self.hop, dim=1)
        # the whole window's excitation (its phase and noise), cut to the frames run
        source = crop.take(self.m_source(f0_samples, noise, generator, phase), self.hop)
        x = self.conv_pre(crop.take(x))
        if self.cond is not None:
            x = x + self.cond(g)
        for up, noise_conv, stage in zip(self.upsamples, self.noise_convs, self.mrfs, strict=True):
            x = stage(up(F.leaky_relu(x, LRELU_SLOPE)) + noise_conv(source.to(x.dtype)))
        return crop.kept(torch.tanh(self.conv_post(F.leaky_relu(x))), self.hop)
