"""Decoding shared across requests: every loaded T2S and S2A model has one batch of rows, each
row at its own position with its own settings; a request's sentences join as rows, leave when
they are done, and come back as speech pieces in order (`SpeechTask`).

A step (`DecodeBatches.step`) advances every row of every model by one token (T2S) or frame
(S2A): the weights are read once for all rows. A row's result does not depend on the others in
its batch: attention sees only the row's own positions, and each request samples with its own
`Sampling` (its own generator). Used from one thread.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from torch import Tensor

from ...metrics import RequestMetrics
from .s2a import S2A, S2ABatch, S2ARow, valid_codes
from .sampling import Sampling, sample_rows
from .t2s import T2S, T2SBatch, T2SRow

if TYPE_CHECKING:
    from ...config.voices import WhisperSpeechParams
    from ...engine.whisperspeech import SpeechPiece, WhisperSpeechStage


class DecodeBatches:
    """One `T2SBatch` and one `S2ABatch` per model in use, and which task owns each row."""

    def __init__(self) -> None:
        self._t2s: dict[int, T2SBatch] = {}
        self._s2a: dict[int, S2ABatch] = {}
        self._owners: dict[T2SRow | S2ARow, SpeechTask] = {}

    def t2s(self, model: T2S) -> T2SBatch:
        return self._t2s.setdefault(id(model), T2SBatch(model))

    def s2a(self, model: S2A) -> S2ABatch:
        return self._s2a.setdefault(id(model), S2ABatch(model))

    def own(self, rows: Sequence[T2SRow | S2ARow], task: SpeechTask) -> None:
        for row in rows:
            self._owners[row] = task

    def rows(self) -> int:
        """Rows being decoded now, in all batches."""
        return sum(len(b.rows) for b in self._t2s.values()) + sum(
            len(b.rows) for b in self._s2a.values()
        )

    def step(self) -> None:
        """One token or frame for every row of every batch; finished T2S rows go on to S2A."""
        for t2s in list(self._t2s.values()):
            if t2s.rows:
                start = time.perf_counter()
                owners = self._stepping(t2s.rows)
                logits = t2s.forward()
                done = t2s.accept(sample_rows(logits, [row.sampling for row in t2s.rows]))
                _charge(owners, ("t2s", "speech"), time.perf_counter() - start)
                for row in done:
                    self._owners.pop(row).semantic(row)
        for s2a in list(self._s2a.values()):
            if s2a.rows:
                start = time.perf_counter()
                owners = self._stepping(s2a.rows)
                logits = s2a.forward()
                samplings = [s2a_row.sampling for s2a_row in s2a.rows]
                for finished in s2a.accept(sample_rows(logits, samplings)):
                    self._owners.pop(finished)
                _charge(owners, ("speech",), time.perf_counter() - start)

    def leave(self, task: SpeechTask) -> None:
        """Take every row of `task` out of its batch (its request is gone)."""
        batches: list[T2SBatch | S2ABatch] = [*self._t2s.values(), *self._s2a.values()]
        for batch in batches:
            rows: Sequence[T2SRow | S2ARow] = batch.rows
            slots = [i for i, row in enumerate(rows) if self._owners.get(row) is task]
            for row in batch.drop(slots):
                self._owners.pop(row, None)

    def _stepping(self, rows: Sequence[T2SRow | S2ARow]) -> set[SpeechTask]:
        return {self._owners[row] for row in rows}


def _charge(tasks: set[SpeechTask], stages: tuple[str, ...], seconds: float) -> None:
    """Every request in a step pays for the whole step (it waited for all of it)."""
    for task in tasks:
        if task.metrics is not None:
            for stage in stages:
                task.metrics.add(stage, seconds)


class _PartOrder:
    """Pieces of a sentence's parts (a sentence longer than the models take is spoken as
    several) released in order: a later part's pieces wait until the earlier parts end."""

    def __init__(self, sentences: list[int]) -> None:
        self.sentences = sentences  # each part's sentence
        self.done = [False] * len(sentences)
        self.waiting: dict[int, list[SpeechPiece]] = {i: [] for i in range(len(sentences))}
        self.ready: list[SpeechPiece] = []

    def put(self, part: int, piece: SpeechPiece) -> None:
        if not self._current(part):
            self.waiting[part].append(piece)
            self.done[part] = piece.part_end
            return
        self.ready.append(piece)
        if piece.part_end:
            self._finish(part)

    def _current(self, part: int) -> bool:
        """Whether `part` is its sentence's earliest unfinished part."""
        sentence = self.sentences[part]
        return all(self.done[j] for j in range(part) if self.sentences[j] == sentence)

    def _finish(self, part: int) -> None:
        self.done[part] = True
        for j in range(part + 1, len(self.sentences)):
            if self.sentences[j] == self.sentences[part]:
                self.ready += self.waiting.pop(j, [])
                if not self.done[j]:
                    break

    def take(self) -> list[SpeechPiece]:
        ready, self.ready = self.ready, []
        return ready

    @property
    def finished(self) -> bool:
        return all(self.done) and not self.ready


class SpeechTask:
    """One request's sentences (generated together) in the shared batches: T2S rows first,
    each row's semantic tokens then an S2A row of its own; `pieces` gives the EnCodec codes
    pieces made so far, in order within each sentence."""

    def __init__(
        self,
        stage: WhisperSpeechStage,
        batches: DecodeBatches,
        texts: Sequence[str],
        language: str,
        params: WhisperSpeechParams,
        chunk: int,
        sampling: Sampling,
        metrics: RequestMetrics | None = None,
    ) -> None:
        from ...engine.whisperspeech import SpeechPiece, token_budget

        self.stage, self.batches, self.chunk = stage, batches, chunk
        self.params, self.sampling, self.metrics = params, sampling, metrics
        self.pair = stage.pair(params)
        parts = [stage.fit(text, self.pair.t2s) for text in texts]
        flat = [(index, part) for index, group in enumerate(parts) for part in group]
        self._order = _PartOrder([index for index, _ in flat])
        self._last_part = {index: i for i, (index, _) in enumerate(flat)}
        self._part: dict[T2SRow | S2ARow, int] = {}
        self._previous: dict[int, Tensor] = {}
        self._empty = [i for i, group in enumerate(parts) if not group]
        self._piece = SpeechPiece
        if not flat:
            return
        budgets = [
            token_budget(part, params.speaking_rate, self.pair.t2s.cfg.stoks_len, stage.budget)
            for _, part in flat
        ]
        start = time.perf_counter()
        rows = batches.t2s(self.pair.t2s).add(
            [part for _, part in flat], language, params.speaking_rate, budgets, sampling
        )
        _charge({self}, ("t2s", "speech"), time.perf_counter() - start)
        for i, row in enumerate(rows):
            self._part[row] = i
        batches.own([row for row in rows if not row.done], self)
        for row in rows:
            if row.done:
                self.semantic(row)

    @property
    def rows(self) -> int:
        """The parts still being decoded."""
        return len(self._part)

    def semantic(self, row: T2SRow) -> None:
        """A T2S row is done: its tokens (without EOS/specials) go on to S2A."""
        part = self._part.pop(row)
        pad = self.pair.t2s.cfg.stoks_codes - 1  # the VQ pad code; EOS/specials are above it
        tokens = [t for t in row.tokens if t < pad]
        if not tokens:
            self._order.put(part, self._make(part, None, True))
            return
        start = time.perf_counter()
        speaker = self.stage.speaker(self.params.speaker).to(self.stage.device)
        (s2a_row,) = self.batches.s2a(self.pair.s2a).add(
            [tokens], speaker[None], self.sampling, self.chunk, 3 * len(tokens)
        )
        _charge({self}, ("speech",), time.perf_counter() - start)
        self._part[s2a_row] = part
        if not s2a_row.done:
            self.batches.own([s2a_row], self)
        self._collect(s2a_row)

    def pieces(self) -> list[SpeechPiece]:
        """The pieces finished since the last call, in order within each sentence."""
        for row in [row for row in self._part if isinstance(row, S2ARow)]:
            self._collect(row)
        ready = [self._piece(index, final=True) for index in self._empty] + self._order.take()
        self._empty = []
        return ready

    @property
    def done(self) -> bool:
        return not self._part and not self._empty and self._order.finished

    def cancel(self) -> None:
        self.batches.leave(self)
        self._part.clear()

    def _collect(self, row: S2ARow) -> None:
        part = self._part[row]
        while row.pieces:
            codes, end = row.pieces.pop(0)
            codes = valid_codes(codes, self._previous.get(part))
            if codes.shape[-1]:
                self._previous[part] = codes[:, -1]
            self._order.put(part, self._make(part, codes, end))
            if end:
                del self._part[row]

    def _make(self, part: int, codes: Tensor | None, end: bool) -> SpeechPiece:
        sentence = self._order.sentences[part]
        final = end and self._last_part[sentence] == part
        return self._piece(sentence, codes, part_end=end, final=final)
