"""The WhisperSpeech speech stage: spoken-form text → 24 kHz audio (T2S → S2A → Vocos)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..audio import Audio, concat
from ..config.voices import WhisperSpeechParams
from ..metrics import RequestMetrics, timed
from ..models.vocos import RATE, Vocoder, VocoderStream
from ..models.whisperspeech.checkpoint import load_s2a, load_t2s
from ..models.whisperspeech.decoding import DecodeBatches, SpeechTask
from ..models.whisperspeech.s2a import S2A, valid_codes
from ..models.whisperspeech.sampling import Sampling
from ..models.whisperspeech.speaker import default_speaker, load_speaker
from ..models.whisperspeech.t2s import T2S

_LOGGER = logging.getLogger(__name__)

MAX_TEXT_BYTES = 300  # well inside the 549-byte text window and the 30 s token window
TOKENS_PER_SECOND = 25


@dataclass(frozen=True)
class SpeechPiece:
    """Part of one sentence's speech from the decode side: EnCodec codes (quantizers, frames)
    at 75 Hz to vocode, or audio (a stage that vocodes itself). `part_end`: the last piece of
    one S2A row (a vocoder stream ends); `final`: the last piece of the sentence."""

    sentence: int
    codes: Tensor | None = None
    audio: Audio | None = None
    part_end: bool = True
    final: bool = True


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

    def synthesize(self, text: str, language: str, params: WhisperSpeechParams) -> Audio:
        """One sentence (≤ `max_text_bytes` UTF-8 bytes, else split) → Audio @ 24 kHz."""
        return self.synthesize_batch([text], language, params)[0]

    def stream(
        self,
        texts: Sequence[str],
        language: str,
        params: WhisperSpeechParams,
        chunk: int,
        generator: torch.Generator | None = None,
    ) -> Iterator[SpeechPiece]:
        """Several sentences generated as one batch, as EnCodec codes: pieces of `chunk` frames
        (75 Hz) as soon as S2A has made them final, in order within each sentence (a sentence
        longer than the models take is spoken as several parts, one after the other). The
        same decoding as the server's shared batches (`begin`), with no other request in them."""
        batches = DecodeBatches()
        task = self.begin(batches, texts, language, params, chunk, generator)
        yield from task.pieces()
        while not task.done:
            with torch.inference_mode():
                batches.step()
            yield from task.pieces()

    def begin(
        self,
        batches: DecodeBatches,
        texts: Sequence[str],
        language: str,
        params: WhisperSpeechParams,
        chunk: int,
        generator: torch.Generator | None = None,
        metrics: RequestMetrics | None = None,
    ) -> SpeechTask:
        """Start speaking `texts` in `batches` (shared with other requests); whoever steps
        `batches` makes the task's pieces. Runs the T2S encoder now."""
        sampling = Sampling(params.temperature, params.top_k, generator)
        with torch.inference_mode():
            return SpeechTask(self, batches, texts, language, params, chunk, sampling, metrics)

    @torch.inference_mode()
    def _semantic(
        self,
        texts: list[str],
        language: str,
        params: WhisperSpeechParams,
        pair: ModelPair,
        generator: torch.Generator | None,
    ) -> list[list[int]]:
        """T2S for every text as one batch; each row's semantic tokens without EOS/specials."""
        budgets = [
            token_budget(t, params.speaking_rate, pair.t2s.cfg.stoks_len, self.budget)
            for t in texts
        ]
        with timed("t2s"):
            tokens = pair.t2s.generate(
                texts,
                language,
                params.speaking_rate,
                max_tokens=budgets,
                temperature=params.temperature,
                top_k=params.top_k,
                generator=generator,
            )
        pad = pair.t2s.cfg.stoks_codes - 1  # the VQ pad code; EOS/specials are above it
        return [[t for t in row if t < pad] for row in tokens]

    @torch.inference_mode()
    def synthesize_batch(
        self,
        texts: Sequence[str],
        language: str,
        params: WhisperSpeechParams,
        generator: torch.Generator | None = None,
    ) -> list[Audio]:
        """Several sentences generated as one batch; one Audio @ 24 kHz each, in order. Each
        sentence is vocoded whole: the reference the streamed path (`stream`) is tested against."""
        pair = self.pair(params)
        pieces: list[list[str]] = [self.fit(text, pair.t2s) for text in texts]
        flat = [p for group in pieces for p in group]
        if not flat:
            return [Audio.silence(0, RATE) for _ in texts]
        stoks = self._semantic(flat, language, params, pair, generator)
        audios = self._acoustic(stoks, params, pair, generator)
        out, index = [], 0
        for group in pieces:
            out.append(
                concat(audios[index : index + len(group)]) if group else Audio.silence(0, RATE)
            )
            index += len(group)
        return out

    def fit(self, text: str, t2s: T2S) -> list[str]:
        """`text` in parts the model takes (none when blank)."""
        from ..text.sentences import limit_length

        text = " ".join(text.split())
        if not text:
            return []
        return limit_length(text, min(self.max_text_bytes, t2s.cfg.max_text_bytes))

    def _acoustic(
        self,
        stoks: list[list[int]],
        params: WhisperSpeechParams,
        pair: ModelPair,
        generator: torch.Generator | None,
    ) -> list[Audio]:
        """S2A for every row as one batch (rows are independent: the decoder is causal), then
        each row cut to its own length (3 frames per token, minus the 4-frame delay tail)."""
        rows = [i for i, row in enumerate(stoks) if row]
        out = [Audio.silence(0, RATE) for _ in stoks]
        if not rows:
            return out
        speaker = self.speaker(params.speaker).to(self.device)
        codes = valid_codes(
            pair.s2a.generate(
                [stoks[i] for i in rows],
                speaker[None].expand(len(rows), -1),
                temperature=params.temperature,
                top_k=params.top_k,
                generator=generator,
            )
        )
        for slot, i in enumerate(rows):
            frames = max(3 * len(stoks[i]) - 4, 0)
            out[i] = self.vocoder.decode(codes[slot, :, :frames])
        return out
