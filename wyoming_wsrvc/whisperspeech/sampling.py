"""Token sampling shared by T2S and S2A (upstream's temperature + top-k + exponential race)."""

from __future__ import annotations

import torch
from torch import Tensor


def sample(
    logits: Tensor, temperature: float, top_k: int | None, generator: torch.Generator | None = None
) -> Tensor:
    """Pick one id per row of `logits` (..., vocab); greedy when temperature is 0 or top_k is 1."""
    if top_k is not None and top_k < logits.shape[-1]:
        threshold = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < threshold, -torch.inf)
    if temperature <= 0 or top_k == 1:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    noise = torch.empty_like(probs).exponential_(1, generator=generator)
    return (probs / noise).argmax(dim=-1)
