"""Convolutions over time on channels-last data: what the RVC decoders run.

A decoder's convolutions (HiFi-GAN's resblocks at 1-48 kHz, 32-512 channels) are bound by
arithmetic. oneDNN reaches far more of it on channels-last data (a (b, c, t) tensor laid out as
(b, t, c) in memory, run as a 2-D convolution over (b, c, 1, t)) than on the usual layout:
measured 1.7-2.0x for the whole RVC v2 40 kHz decoder on one thread, AVX2 and AVX-512 alike
(README, Performance). The sums are the same up to float rounding (relative 1e-5).

`Conv1d` and `ConvTranspose1d` are `nn.Conv1d` / `nn.ConvTranspose1d` with the same parameters
and state-dict keys; their output is channels-last, and the element-wise operations between them
keep that layout, so data is never laid out again between layers. `lay_out(module)` stores their
weights channels-last once (after loading), so no call converts a weight either. Any layout in
is correct; channels-last in is fast.
"""

from __future__ import annotations

from typing import TypeVar, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

M = TypeVar("M", bound=nn.Module)


def _as_2d(x: Tensor) -> Tensor:
    """(b, c, t) → (b, c, 1, t), channels-last when `x` is (a view, not a copy, if it was)."""
    return x.unsqueeze(2)


class Conv1d(nn.Conv1d):
    """`nn.Conv1d` computed as a 2-D convolution on channels-last data (b, c, t) → (b, c', t')."""

    def forward(self, x: Tensor) -> Tensor:
        if self.padding_mode != "zeros" or isinstance(self.padding, str):
            return super().forward(x)
        y = F.conv2d(
            _as_2d(x),
            _as_2d(self.weight),
            self.bias,
            (1, self.stride[0]),
            (0, self.padding[0]),
            (1, self.dilation[0]),
            self.groups,
        )
        return y.squeeze(2)


class ConvTranspose1d(nn.ConvTranspose1d):
    """`nn.ConvTranspose1d` computed as a 2-D one on channels-last data."""

    def forward(self, x: Tensor, output_size: list[int] | None = None) -> Tensor:
        if output_size is not None:
            return super().forward(x, output_size)
        y = F.conv_transpose2d(
            _as_2d(x),
            _as_2d(self.weight),
            self.bias,
            (1, self.stride[0]),
            (0, cast(int, self.padding[0])),
            (0, self.output_padding[0]),
            self.groups,
            (1, self.dilation[0]),
        )
        return y.squeeze(2)


def channels_last(x: Tensor) -> Tensor:
    """(b, c, t) laid out as (b, t, c) in memory (the shape and values unchanged)."""
    return x.transpose(1, 2).contiguous().transpose(1, 2)


def lay_out(module: M) -> M:
    """Store the weights of every `Conv1d` / `ConvTranspose1d` in `module` channels-last (in
    place; call after loading and after any change of dtype or device). Returns `module`."""
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, Conv1d | ConvTranspose1d):
                layer.weight.data = channels_last(layer.weight.data)
    return module
