"""The WhisperSpeech speech stage: spoken-form text → EnCodec codes (T2S → S2A, in the shared
decode batches) → 24 kHz audio (Vocos, on the audio side).

`WhisperSpeechStage` binds each profile's settings to its loaded models; `begin` starts a
request's sentences as a `WhisperSpeechWork`: rows in the shared `DecodeBatches`, T2S first,
then each row's semantic tokens an S2A row of its own, whose codes come back as pieces in order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..config.voices import WhisperSpeechParams
from ..metrics import RequestMetrics
from ..models.vocos import RATE, Vocoder, VocoderStream
from ..models.whisperspeech.checkpoint import load_s2a, load_t2s
from ..models.whisperspeech.decoding import DecodeBatches
from ..models.whisperspeech.s2a import S2A, S2ARow, valid_codes
from ..models.whisperspeech.sampling import Sampling
from ..models.whisperspeech.speaker import default_speaker, load_speaker
from ..models.whisperspeech.t2s import T2S, T2SRow
from ..text.sentences import limit_length
from .speech import SpeechPiece

_LOGGER = logging.getLogger(__name__)

MAX_TEXT_BYTES = 300  # well inside the 549-byte text window and the 30 s token window
TOKENS_PER_SECOND = 25


@dataclass(frozen=True)
class ModelPair:
    t2s: T2S
    s2a: S2A


@dataclass(frozen=True)
class TokenBudget:
    """How many semantic tokens a sentence may take: `factor` × its expected length + `margin`,
    at least `minimum`. Random or confused models may never emit EOS; the default bounds the work
    without cutting speech (real models stop at their natural length, well inside it)."""

    factor: float = 2.0
    margin: int = TOKENS_PER_SECOND
    minimum: int = 2 * TOKENS_PER_SECOND


NATURAL_LENGTH = TokenBudget(1.0, 0, 0)  # benchmarks on random weights: the expected length


def token_budget(text: str, cps: float, limit: int, budget: TokenBudget = TokenBudget()) -> int:
    expected = len(text) / max(cps, 1.0) * TOKENS_PER_SECOND
    return int(min(limit, max(budget.factor * expected + budget.margin, budget.minimum, 1)))


class WhisperSpeechStage:
    """Holds the loaded models; `synthesize` is called from the worker thread only."""

    rate = RATE
    max_text_bytes = MAX_TEXT_BYTES

    def __init__(
        self,
        vocoder: Vocoder,
        device: torch.device,
        dtype: torch.dtype,
        budget: TokenBudget = TokenBudget(),
        int8: bool = False,
    ) -> None:
        self.vocoder = vocoder
        self.int8 = int8
        self.budget = budget
        self.device = device
        self.dtype = dtype
        self._pairs: dict[tuple[str, str], ModelPair] = {}
        self._t2s: dict[str, T2S] = {}
        self._s2a: dict[str, S2A] = {}
        self._speakers: dict[Path | None, Tensor] = {}
        self._bindings: dict[WhisperSpeechParams, ModelPair] = {}

    def load(self, t2s_path: Path, s2a_path: Path) -> ModelPair:
        """Load (once) the T2S/S2A pair stored at these local paths."""
        key = (str(t2s_path), str(s2a_path))
        if key not in self._pairs:
            start = time.perf_counter()
            t2s = self._t2s.get(key[0]) or load_t2s(t2s_path, self.device, self.dtype, self.int8)
            s2a = self._s2a.get(key[1]) or load_s2a(s2a_path, self.device, self.dtype, self.int8)
            self._t2s[key[0]], self._s2a[key[1]] = t2s, s2a
            if t2s.cfg.stoks_codes != s2a.cfg.stoks_codes:
                raise ValueError(
                    f"{t2s_path} and {s2a_path} have different semantic vocabularies "
                    f"({t2s.cfg.stoks_codes} vs {s2a.cfg.stoks_codes})"
                )
            self._pairs[key] = ModelPair(t2s, s2a)
            _LOGGER.info(
                "Loaded %s + %s in %.1f s",
                t2s_path.name,
                s2a_path.name,
                time.perf_counter() - start,
            )
        return self._pairs[key]

    def bind(self, params: WhisperSpeechParams, t2s_path: Path, s2a_path: Path) -> None:
        """Make `params` speak with the pair at these paths (and load its speaker)."""
        self._bindings[params] = self.load(t2s_path, s2a_path)
        self.speaker(params.speaker)

    def pair(self, params: WhisperSpeechParams) -> ModelPair:
        try:
            return self._bindings[params]
        except KeyError:
            raise KeyError("WhisperSpeech settings were not bound to models at start-up") from None

    def open_vocoder(self) -> VocoderStream:
        return self.vocoder.stream()

    def speaker(self, path: Path | None) -> Tensor:
        if path not in self._speakers:
            self._speakers[path] = default_speaker() if path is None else load_speaker(path)
        return self._speakers[path]

    def begin(
        self,
        batches: DecodeBatches,
        texts: Sequence[str],
        language: str,
        params: WhisperSpeechParams,
        chunk: int,
        metrics: RequestMetrics | None = None,
        generator: torch.Generator | None = None,
    ) -> WhisperSpeechWork:
        """Start speaking `texts` in `batches` (shared with other requests); whoever steps
        `batches` makes the work's pieces. Runs the T2S encoder now. `generator`: the
        request's own random numbers (tests; None: torch's global generator)."""
        sampling = Sampling(params.temperature, params.top_k, generator)
        with torch.inference_mode():
            return WhisperSpeechWork(
                self, batches, texts, language, params, chunk, sampling, metrics
            )

    def fit(self, text: str, t2s: T2S) -> list[str]:
        """`text` in parts the model takes (none when blank)."""
        text = " ".join(text.split())
        if not text:
            return []
        return limit_length(text, min(self.max_text_bytes, t2s.cfg.max_text_bytes))


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


class WhisperSpeechWork:
    """One request's sentences (generated together) in the shared batches: T2S rows first,
    each row's semantic tokens then an S2A row of its own; `pieces` gives the EnCodec codes
    pieces made so far, in order within each sentence. Nothing of its own to do per turn: the
    shared step moves it on (`advance` is empty)."""

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
        self.charge(("t2s", "speech"), time.perf_counter() - start)
        for i, row in enumerate(rows):
            self._part[row] = i
        batches.own(rows, self)
        for row in rows:
            if row.done:
                self.semantic(row)

    @property
    def rows(self) -> int:
        """The parts still being decoded."""
        return len(self._part)

    def charge(self, stages: tuple[str, ...], seconds: float) -> None:
        """Every request in a step pays for the whole step (it waited for all of it)."""
        if self.metrics is not None:
            for stage in stages:
                self.metrics.add(stage, seconds)

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
        self.charge(("speech",), time.perf_counter() - start)
        self._part[s2a_row] = part
        self.batches.own([s2a_row], self)
        self._collect(s2a_row)

    def advance(self) -> None:
        """Nothing to do alone: the shared step moves this work on."""

    def pieces(self) -> list[SpeechPiece]:
        """The pieces finished since the last call, in order within each sentence."""
        for row in [row for row in self._part if isinstance(row, S2ARow)]:
            self._collect(row)
        ready = [SpeechPiece(index, final=True) for index in self._empty] + self._order.take()
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
        return SpeechPiece(sentence, codes, part_end=end, final=final)
