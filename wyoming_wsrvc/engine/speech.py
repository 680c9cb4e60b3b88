"""What every speech stage gives the engine, and the one decode turn.

A stage (WhisperSpeech, or layer mode's upstream) is started the same way for every request:
`SpeechStage.begin(batches, texts, ...)` returns a `SpeechWork`. WhisperSpeech's work has rows in
the shared `DecodeBatches` (whoever steps them makes its pieces); a stage with its own iterator
(`IteratorWork`) makes one piece per turn. `decode_turn` is the decode side's only step: the
scheduler's decode thread runs it over every admitted request, `run_alone` over one (warm-up,
`Pipeline.synthesize`, the quality check, tests).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from ..audio import Audio
from ..config.voices import RvcParams, WhisperSpeechParams
from ..metrics import RequestMetrics, collecting, timed
from ..models.vocos import VocoderStream
from ..models.whisperspeech.decoding import DecodeBatches
from .failures import synthesis_errors

CHUNK_FRAMES = 24  # S2A frames (75 Hz) per speech piece: 0.32 s


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


class SpeechWork(Protocol):
    """One request's sentences on the decode side."""

    @property
    def rows(self) -> int:
        """Rows it decodes at once (what it takes of the batch limit)."""
        ...

    @property
    def done(self) -> bool:
        """Every piece has been taken."""
        ...

    def advance(self) -> None:
        """Its own step, after the shared batches' step (nothing for work in the batches)."""

    def pieces(self) -> list[SpeechPiece]:
        """The pieces made since the last call, in order within each sentence."""
        ...

    def cancel(self) -> None:
        """Stop: its rows leave the batches."""


class SpeechStage(Protocol):
    """Text to speech: WhisperSpeech, or an upstream Wyoming TTS (layer mode)."""

    rate: int
    max_text_bytes: int

    def begin(
        self,
        batches: DecodeBatches,
        texts: Sequence[str],
        language: str,
        params: WhisperSpeechParams,
        chunk: int,
        metrics: RequestMetrics | None = None,
        generator: torch.Generator | None = None,
    ) -> SpeechWork:
        """Start speaking sentences of spoken-form text (generated together) as pieces of about
        `chunk` frames: codes to vocode, or audio at `rate`. Called on the decode thread.
        `generator`: the random numbers its sampling draws (None: torch's global generator; a
        stage that samples nothing here ignores it)."""
        ...

    def open_vocoder(self) -> VocoderStream:
        """A decoder for one run of codes pieces (`SpeechPiece.codes`), at `rate`."""
        ...


class ConversionStage(Protocol):
    """Voice conversion (RVC)."""

    def output_rate(self, params: RvcParams) -> int:
        """The native rate of the converted audio for this voice."""
        ...


class IteratorWork:
    """Work of a stage that makes its pieces itself, one per turn (an upstream TTS). Its time
    is charged to the request as `stage` ("speech", or the upstream's own name)."""

    rows = 1

    def __init__(
        self,
        pieces: Iterator[SpeechPiece],
        metrics: RequestMetrics | None = None,
        stage: str = "speech",
    ) -> None:
        self._iterator = pieces
        self._metrics = metrics
        self._stage = stage
        self._ready: list[SpeechPiece] = []
        self._finished = False

    @property
    def done(self) -> bool:
        return self._finished and not self._ready

    def advance(self) -> None:
        if self._finished:
            return
        with collecting(self._metrics), timed(self._stage):
            piece = next(self._iterator, None)
        if piece is None:
            self._finished = True
        else:
            self._ready.append(piece)

    def pieces(self) -> list[SpeechPiece]:
        ready, self._ready = self._ready, []
        return ready

    def cancel(self) -> None:
        self._finished = True
        self._ready = []
        close = getattr(self._iterator, "close", None)
        if close is not None:  # a generator: an upstream's connection closes now
            close()


class NoWork:
    """Nothing to decode (every sentence was in the phrase cache)."""

    rows = 0
    done = True

    def advance(self) -> None:
        pass

    def pieces(self) -> list[SpeechPiece]:
        return []

    def cancel(self) -> None:
        pass


@dataclass(frozen=True)
class Turn:
    """What one turn gave one work: its new pieces, or the error that stopped it."""

    pieces: list[SpeechPiece]
    error: Exception | None = None


def decode_turn(batches: DecodeBatches, works: Sequence[SpeechWork]) -> list[Turn]:
    """One turn of the decode side: every shared batch takes one step (a T2S token, an S2A
    frame for every row of every request), then each work its own step, and each gives the
    pieces it has ready (one `Turn` per work, in order). A failing shared step raises (every
    work in it fails); a work that fails alone has its error in its `Turn`. Errors a client
    should hear about come as `ClientError` (`synthesis_errors`)."""
    with synthesis_errors():
        batches.step()
    turns = []
    for work in works:
        try:
            with synthesis_errors():
                work.advance()
                turns.append(Turn(work.pieces()))
        except Exception as err:  # noqa: BLE001 - the caller ends that request with it
            turns.append(Turn([], err))
    return turns


def run_alone(batches: DecodeBatches, work: SpeechWork) -> Iterator[list[SpeechPiece]]:
    """`work` decoded to its end with no other request: the decode thread's turns, inline."""
    while not work.done:
        (turn,) = decode_turn(batches, [work])
        if turn.error is not None:
            raise turn.error
        yield turn.pieces
