"""Random weights for the model files the tests and the benchmark write (in the real formats,
by the writers next to each format's reader): one rule for every network."""

from __future__ import annotations

import math

import torch


def randomize(module: torch.nn.Module, seed: int) -> None:
    """Biases ~N(0, 0.02), matrices ~N(0, 1/fan-in), other vectors ~N(1, 0.05)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if name.endswith("bias"):
                param.normal_(0, 0.02, generator=generator)
            elif param.dim() >= 2:
                param.normal_(0, 1 / math.sqrt(param.shape[-1]), generator=generator)
            else:
                param.normal_(1.0, 0.05, generator=generator)
