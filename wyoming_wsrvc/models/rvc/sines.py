"""Applio's harmonic sine source (MRF HiFi-GAN and RefineGAN), per output sample.

The classic NSF source (`layers.sine_source`) holds f0 over each 10 ms frame and accumulates the
phase frame by frame; Applio's newer vocoders take f0 already stretched to the output rate
(nearest for MRF HiFi-GAN, linear for RefineGAN) and accumulate it sample by sample, with the
wrap-around trick below. Parity with Applio needs the same arithmetic, so it is its own function.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

SINE_AMP = 0.1
NOISE_STD = 0.003


def harmonic_sines(
    f0: Tensor,
    rate: int,
    harmonics: int,
    noise: bool,
    generator: torch.Generator | None = None,
    phase: float = 0.0,
) -> Tensor:
    """f0 (b, n) in Hz at `rate` (0 = unvoiced) → (b, n, harmonics + 1) excitation.

    Column k is the sine of (k + 1)·f0, amplitude 0.1, on voiced samples. With `noise`, every
    harmonic but the fundamental starts at a random phase, and Gaussian noise is added (std 0.003
    on voiced samples, 0.1/3 on unvoiced ones), as Applio does; without it, neither. `phase`
    (turns of the fundamental) continues a signal that started earlier.
    """
    f0 = f0.float()
    b = f0.shape[0]
    multiples = torch.arange(1, harmonics + 2, dtype=f0.dtype, device=f0.device)
    rad = (f0[:, :, None] * multiples / rate) % 1  # turns per sample, (b, n, h+1)
    if phase:
        rad[:, 0, :] = rad[:, 0, :] + (phase * multiples) % 1
    if noise:
        initial = torch.rand(b, harmonics + 1, generator=generator, device=f0.device)
        initial[:, 0] = 0
        rad[:, 0, :] = rad[:, 0, :] + initial
    # Drop a whole turn wherever the running phase wraps, so the second cumsum stays small.
    wrapped = torch.cumsum(rad, dim=1) % 1
    shift = torch.zeros_like(rad)
    shift[:, 1:, :] = ((wrapped[:, 1:, :] - wrapped[:, :-1, :]) < 0) * -1.0
    sines = torch.sin(torch.cumsum(rad + shift, dim=1) * 2 * math.pi) * SINE_AMP
    voiced = (f0 > 0).to(sines.dtype)[:, :, None]
    out = sines * voiced
    if noise:
        amp = voiced * NOISE_STD + (1 - voiced) * SINE_AMP / 3
        out = out + amp * torch.randn(out.shape, generator=generator, device=out.device)
    return out
