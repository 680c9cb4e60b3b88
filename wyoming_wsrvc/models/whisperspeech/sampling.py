"""Token sampling shared by T2S and S2A (upstream's temperature + top-k + exponential race)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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


@dataclass(frozen=True, eq=False)
class Sampling:
    """One request's sampling settings and its own random generator (None: torch's global one).
    Rows of a shared batch are sampled per `Sampling` object, so what a request draws does not
    depend on which other requests share its decode steps."""

    temperature: float = 0.7
    top_k: int | None = None
    generator: torch.Generator | None = None
    # picks the ids itself instead (teacher forcing and logit capture, for parity checks)
    pick: Callable[[Tensor], Tensor] | None = None

    def draw(self, logits: Tensor) -> Tensor:
        if self.pick is not None:
            return self.pick(logits)
        return sample(logits, self.temperature, self.top_k, self.generator)


def sample_rows(logits: Tensor, samplings: list[Sampling]) -> Tensor:
    """One id per row of `logits` (rows, ..., vocab), row i drawn with `samplings[i]`; the rows
    of one `Sampling` are drawn together, in row order."""
    groups: dict[int, list[int]] = {}
    for row, sampling in enumerate(samplings):
        groups.setdefault(id(sampling), []).append(row)
    if len(groups) == 1:
        return samplings[0].draw(logits)
    picked = torch.empty(logits.shape[:-1], dtype=torch.long, device=logits.device)
    for rows in groups.values():
        index = torch.tensor(rows, device=logits.device)
        picked[index] = samplings[rows[0]].draw(logits[index])
    return picked
