"""The one WhisperSpeech decode loop: every loaded T2S and S2A model has one batch of rows, each
row at its own position with its own sampling; `DecodeBatches.step` advances every row of every
batch by one token (T2S, 25 Hz) or frame (S2A, 75 Hz), reading the weights once for all rows.

A row's result does not depend on the others in its batch: attention sees only the row's own
positions, and rows are sampled per `Sampling` object (their own generator). The server steps
one `DecodeBatches` shared by every request; generating alone (`generate_semantic`,
`generate_acoustic`, `stream_acoustic`: the parity checks, the precision tests, the benchmark's
per-model rows) is the same step with a batch of one request. Used from one thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

import torch
from torch import Tensor

from .s2a import S2A, S2ABatch, S2ARow
from .sampling import Sampling, sample_rows
from .t2s import T2S, T2SBatch, T2SRow


class RowOwner(Protocol):
    """Whoever added rows to the batches (a request), told what the shared steps did."""

    def charge(self, stages: tuple[str, ...], seconds: float) -> None:
        """A step that advanced one of its rows took `seconds` (it waited for all of it)."""

    def semantic(self, row: T2SRow) -> None:
        """Its T2S row is done (it may add an S2A row now)."""


class DecodeBatches:
    """One `T2SBatch` and one `S2ABatch` per model in use, and which owner each row has (rows
    without one are generated alone and read by their caller)."""

    def __init__(self) -> None:
        self._t2s: dict[int, T2SBatch] = {}
        self._s2a: dict[int, S2ABatch] = {}
        self._owners: dict[T2SRow | S2ARow, RowOwner] = {}

    def t2s(self, model: T2S) -> T2SBatch:
        return self._t2s.setdefault(id(model), T2SBatch(model))

    def s2a(self, model: S2A) -> S2ABatch:
        return self._s2a.setdefault(id(model), S2ABatch(model))

    def own(self, rows: Sequence[T2SRow | S2ARow], owner: RowOwner) -> None:
        for row in rows:
            if not row.done:
                self._owners[row] = owner

    def rows(self) -> int:
        """Rows being decoded now, in all batches."""
        return sum(len(b.rows) for b in self._t2s.values()) + sum(
            len(b.rows) for b in self._s2a.values()
        )

    @torch.inference_mode()
    def step(self) -> None:
        """One token or frame for every row of every batch; a finished T2S row is handed to its
        owner (which starts its S2A row)."""
        for t2s in list(self._t2s.values()):
            if t2s.rows:
                start = time.perf_counter()
                owners = self._stepping(t2s.rows)
                logits = t2s.forward()
                done = t2s.accept(sample_rows(logits, [row.sampling for row in t2s.rows]))
                _charge(owners, ("t2s", "speech"), time.perf_counter() - start)
                for row in done:
                    owner = self._owners.pop(row, None)
                    if owner is not None:
                        owner.semantic(row)
        for s2a in list(self._s2a.values()):
            if s2a.rows:
                start = time.perf_counter()
                owners = self._stepping(s2a.rows)
                logits = s2a.forward()
                for finished in s2a.accept(sample_rows(logits, [r.sampling for r in s2a.rows])):
                    self._owners.pop(finished, None)
                _charge(owners, ("speech",), time.perf_counter() - start)

    def leave(self, owner: RowOwner) -> None:
        """Take every row of `owner` out of its batch (its request is gone)."""
        batches: list[T2SBatch | S2ABatch] = [*self._t2s.values(), *self._s2a.values()]
        for batch in batches:
            rows: Sequence[T2SRow | S2ARow] = batch.rows
            slots = [i for i, row in enumerate(rows) if self._owners.get(row) is owner]
            for row in batch.drop(slots):
                self._owners.pop(row, None)

    def _stepping(self, rows: Sequence[T2SRow | S2ARow]) -> list[RowOwner]:
        owners: dict[int, RowOwner] = {}
        for row in rows:
            owner = self._owners.get(row)
            if owner is not None:
                owners[id(owner)] = owner
        return list(owners.values())


def _charge(owners: list[RowOwner], stages: tuple[str, ...], seconds: float) -> None:
    for owner in owners:
        owner.charge(stages, seconds)


LogitsHook = Callable[[Tensor], None]


def _sampling(
    temperature: float,
    top_k: int | None,
    generator: torch.Generator | None,
    forced: Callable[[int, Tensor], Tensor] | None,
    on_logits: LogitsHook | None,
) -> Sampling:
    """The rows' sampling; with `forced`, step i's ids are `forced(i, logits)` (teacher forcing)
    and `on_logits` sees every step's logits (parity checks)."""
    if forced is None and on_logits is None:
        return Sampling(temperature, top_k, generator)
    plain = Sampling(temperature, top_k, generator)
    steps = [0]

    def pick(logits: Tensor) -> Tensor:
        if on_logits is not None:
            on_logits(logits)
        picked = forced(steps[0], logits) if forced is not None else plain.draw(logits)
        steps[0] += 1
        return picked

    return Sampling(temperature, top_k, generator, pick=pick)


def generate_semantic(
    model: T2S,
    texts: Sequence[str],
    language: str = "en",
    cps: float = 15.0,
    max_tokens: int | Sequence[int] | None = None,
    temperature: float = 0.7,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    forced: Sequence[int] | None = None,
    on_logits: LogitsHook | None = None,
) -> list[list[int]]:
    """Semantic tokens (25 Hz) for each text, generated as one batch (alone in the batches).

    Mirrors upstream: SOT/EOS start token, at most `max_tokens - 1` tokens (default
    `stoks_len`; one limit per row if a sequence), a row stops at its first EOS (included in
    its result, as upstream returns it). `forced` (teacher forcing: every row runs
    `len(forced)` steps) and `on_logits` exist for parity checks.
    """
    if max_tokens is None or isinstance(max_tokens, int):
        limits = [max_tokens or model.cfg.stoks_len] * len(texts)
    else:
        limits = list(max_tokens)
    force = None
    if forced is not None:
        limits = [len(forced) + 1] * len(texts)
        tokens = list(forced)

        def force(step: int, logits: Tensor) -> Tensor:
            return torch.full((logits.shape[0],), tokens[step], device=logits.device)

    sampling = _sampling(temperature, top_k, generator, force, on_logits)
    batches = DecodeBatches()
    rows = batches.t2s(model).add(texts, language, cps, limits, sampling, forced is None)
    while batches.rows():
        batches.step()
    eos = model.cfg.eos
    return [
        row.tokens[: row.tokens.index(eos) + 1] if eos in row.tokens else row.tokens for row in rows
    ]


def stream_acoustic(
    model: S2A,
    stoks: Sequence[Sequence[int]],
    speakers: Tensor,
    frames: int | None = None,
    temperature: float = 0.7,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    forced: Sequence[Sequence[int]] | None = None,
    on_logits: LogitsHook | None = None,
    chunk: int = 0,
) -> Iterator[Tensor]:
    """EnCodec codes (b, quantizers, k) at 75 Hz for rows of semantic tokens with their speakers
    (b, 192), as soon as frames are final: every `chunk` frames (0: once, at the end). N =
    `frames` decoder positions (default 3 × the longest input) give N - 4 frames (upstream's
    sampling order and unshift). Frame t is final after step t + quantizers - 1 (the delay
    pattern). `forced` and `on_logits` exist for parity checks."""
    force = None
    if forced is not None:
        table = [list(step) for step in forced]

        def force(step: int, logits: Tensor) -> Tensor:
            return torch.tensor(table[step], device=logits.device).expand(logits.shape[0], -1)

    sampling = _sampling(temperature, top_k, generator, force, on_logits)
    batches = DecodeBatches()
    n = frames or 3 * max(len(t) for t in stoks)
    rows = batches.s2a(model).add(stoks, speakers, sampling, chunk, n)
    while True:
        if all(row.pieces for row in rows):
            yield torch.stack([row.pieces.pop(0)[0] for row in rows])
        if not batches.rows():
            break
        batches.step()


def generate_acoustic(
    model: S2A,
    stoks: Sequence[Sequence[int]],
    speakers: Tensor,
    frames: int | None = None,
    temperature: float = 0.7,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    forced: Sequence[Sequence[int]] | None = None,
    on_logits: LogitsHook | None = None,
) -> Tensor:
    """`stream_acoustic` joined: EnCodec codes (b, quantizers, N - 4)."""
    pieces = stream_acoustic(
        model, stoks, speakers, frames, temperature, top_k, generator, forced, on_logits
    )
    return torch.cat(list(pieces), dim=-1)
