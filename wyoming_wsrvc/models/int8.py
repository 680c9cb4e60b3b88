"""int8 weight-only linear layers, for the stages that are bound by reading weights.

Batch-1 decoding reads every decoder weight once per step; on a CPU that is memory-bandwidth
bound, so time follows bytes. `Int8Linear` keeps a linear layer's weights as int8 with one float
scale per output row (symmetric, weight-only: activations stay float32) and multiplies with
`torch._weight_int8pack_mm`, a quarter of the bytes of float32. The activations enter that
kernel as bfloat16 (its fast path on x86: ~7x float32 for a decode step's matrices here, while
float32 activations take a slow path) and leave it as float32. The float32 path is untouched:
quantization is applied to a loaded model only when the precision plan asks for it.
"""

from __future__ import annotations

import functools
import logging

import torch
from torch import Tensor, nn

_LOGGER = logging.getLogger(__name__)


def quantize_rows(weight: Tensor) -> tuple[Tensor, Tensor]:
    """(out, in) float → int8 (out, in) and float32 scales (out,): w ≈ q · scale per row."""
    w = weight.detach().float()
    scales = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0
    q = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
    return q.contiguous(), scales.contiguous()


class Int8Linear(nn.Module):
    """y = x @ (q · scale)ᵀ + b with int8 weights; x and y float32, any leading shape."""

    weight_int8: Tensor
    scales: Tensor
    bias: Tensor | None

    def __init__(self, weight: Tensor, bias: Tensor | None) -> None:
        super().__init__()
        q, scales = quantize_rows(weight)
        self.in_features = weight.shape[1]
        self.out_features = weight.shape[0]
        self.register_buffer("weight_int8", q)
        self.register_buffer("scales", scales.to(torch.bfloat16))
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        return cls(linear.weight, linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16)
        out = torch._weight_int8pack_mm(flat, self.weight_int8, self.scales).float()
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*shape[:-1], self.out_features)


@functools.cache
def int8_supported() -> bool:
    """Whether this torch build multiplies int8 weights on the CPU (checked once, numerically)."""
    try:
        generator = torch.Generator().manual_seed(0)
        weight = torch.randn(64, 32, generator=generator)
        x = torch.randn(3, 32, generator=generator)
        layer = Int8Linear(weight, None)
        reference = x @ weight.T
        error = (layer(x) - reference).abs().max().item() / reference.abs().max().item()
    except (RuntimeError, NotImplementedError) as err:
        _LOGGER.info("int8 weights unavailable on this CPU (%s); decoders stay float32", err)
        return False
    result: bool = error < 0.05
    return result
