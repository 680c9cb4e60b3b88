"""Running a decoder on part of its input, exactly: the frames wanted plus its receptive field.

A converted window is cut after synthesis: the reflect padding at a sentence's ends, the context
around a streamed segment. The decoder (80 % of the work) is convolutional, so an output frame
depends only on latent frames within its *reach* (`context`, frames each way: conv_pre's, every
upsampling's and every resblock's, added up stage by stage at each stage's samples per frame).
Running it on the wanted frames plus `context` on each side gives those frames as the whole run
would (up to float rounding); the pitch excitation is still made for the whole window, so its
phase and noise are those of the whole run. Measured on every decoder in tests/test_decoders.py.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from torch import Tensor, nn


def reach(layer: nn.Module, per_frame: float) -> float:
    """Frames (the larger side) that one output of a conv reaches into its input, which has
    `per_frame` samples per 10 ms frame."""
    if not isinstance(layer, nn.Conv1d | nn.ConvTranspose1d):
        raise TypeError(f"not a convolution over time: {type(layer).__name__}")
    kernel, dilation, padding = layer.kernel_size[0], layer.dilation[0], layer.padding[0]
    span = dilation * (kernel - 1)
    if not isinstance(padding, int):  # "same" / "valid" padding: take the whole kernel
        padding = span
    if isinstance(layer, nn.ConvTranspose1d):  # inputs that reach one output, plus a rounding
        return (max(padding, span - padding) / layer.stride[0] + 1) / per_frame
    return max(padding, span - padding) / per_frame


def chain(layers: Iterable[nn.Module], per_frame: float) -> float:
    """The reach of convs applied one after another, all at `per_frame`."""
    return sum(reach(layer, per_frame) for layer in layers)


def frames(reach_frames: float) -> int:
    """A reach in frames → the whole frames of context to run on each side."""
    return math.ceil(reach_frames)


@dataclass(frozen=True)
class Crop:
    """Of `total` frames: the decoder runs on [start, stop) to produce the kept [keep_start,
    keep_stop) exactly (`keep_start - start` and `stop - keep_stop` at least its context, but
    where the input ends anyway)."""

    total: int
    start: int
    stop: int
    keep_start: int
    keep_stop: int

    @classmethod
    def of(cls, total: int, keep: tuple[int, int] | None, context: int) -> Crop:
        """`keep` (frames, None: all) of `total`, with `context` frames each side."""
        first, last = (0, total) if keep is None else keep
        if not 0 <= first <= last <= total:
            raise ValueError(f"frames {first}..{last} are not within 0..{total}")
        return cls(total, max(0, first - context), min(total, last + context), first, last)

    @property
    def whole(self) -> bool:
        return self.start == 0 and self.stop == self.total

    def take(self, x: Tensor, per_frame: int = 1) -> Tensor:
        """The frames run, of a (…, total · per_frame) tensor (a view)."""
        return x if self.whole else x[..., self.start * per_frame : self.stop * per_frame]

    def kept(self, out: Tensor, per_frame: int) -> Tensor:
        """The kept frames of an output over the frames run (…, (stop - start) · per_frame)."""
        first, last = self.keep_start - self.start, self.keep_stop - self.start
        if first == 0 and last == self.stop - self.start:
            return out
        return out[..., first * per_frame : last * per_frame]
