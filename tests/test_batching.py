"""Decoding shared across requests: a request's codes do not depend on what else is in its
batch (greedy: identical; sampled: its own generator), rows join and leave between steps, a
request that goes away leaves at once, and a full server says `busy`. Real (random-weight)
checkpoints in their file formats, real sockets."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.tts import Synthesize

from wyoming_wsrvc.pipeline import Pipeline
from wyoming_wsrvc.scheduler import Scheduler
from wyoming_wsrvc.vocoder import VOCOS_TINY, Vocoder, write_vocos
from wyoming_wsrvc.voices import VoiceProfile, WhisperSpeechParams
from wyoming_wsrvc.whisperspeech.checkpoint import write_s2a, write_t2s
from wyoming_wsrvc.whisperspeech.decoding import DecodeBatches, SpeechTask
from wyoming_wsrvc.whisperspeech.stage import SpeechPiece, WhisperSpeechStage

from .conftest import FakeSpeech, read_all, read_until, server_context, serving

A_TEXTS = ["Good morning, the kitchen light is on.", "Short."]
B_TEXTS = ["Another client asks something rather longer than the first one does, at once."]
C_TEXTS = ["A third one joins late.", "And leaves early."]


def _stage(folder: Path, int8: bool) -> WhisperSpeechStage:
    vocos = write_vocos(folder / "vocos", VOCOS_TINY)
    ws = WhisperSpeechStage(
        Vocoder(vocos / "config.yaml", vocos / "pytorch_model.bin"),
        torch.device("cpu"),
        torch.float32,
        int8=int8,
    )
    t2s, s2a = write_t2s(folder / "t2s.model", 2, 2), write_s2a(folder / "s2a.model", 2, 2)
    for params in (GREEDY, SAMPLED, SLOW):
        ws.bind(params, t2s, s2a)
    return ws


@pytest.fixture(scope="module", params=["float32", "int8"])
def stage(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> WhisperSpeechStage:
    return _stage(tmp_path_factory.mktemp("batching"), request.param == "int8")


@pytest.fixture(scope="module")
def float32_stage(tmp_path_factory: pytest.TempPathFactory) -> WhisperSpeechStage:
    return _stage(tmp_path_factory.mktemp("batching-f32"), int8=False)


GREEDY = WhisperSpeechParams(temperature=0.0, top_k=1)
SAMPLED = WhisperSpeechParams(temperature=0.7)
SLOW = WhisperSpeechParams(temperature=0.9, speaking_rate=9.0)  # same models, other settings


def _codes(pieces: list[SpeechPiece], sentences: int) -> list[torch.Tensor]:
    """Each sentence's codes (quantizers, frames), its pieces joined in order."""
    out: list[list[torch.Tensor]] = [[] for _ in range(sentences)]
    for piece in pieces:
        if piece.codes is not None:
            out[piece.sentence].append(piece.codes)
    return [torch.cat(parts, dim=-1) for parts in out]


def _seeded() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


def _alone(ws: WhisperSpeechStage, params: WhisperSpeechParams) -> list[torch.Tensor]:
    generator = _seeded() if params is SAMPLED else None
    return _codes(list(ws.stream(A_TEXTS, "en", params, 24, generator)), len(A_TEXTS))


def _drain(task: SpeechTask, into: list[SpeechPiece]) -> None:
    into += task.pieces()


def _batched(ws: WhisperSpeechStage, params: WhisperSpeechParams) -> tuple[list[torch.Tensor], int]:
    """A's codes when B started 5 steps before it and C joins 10 steps after it and leaves
    early; the most rows a step held while A was in the batch."""
    batches = DecodeBatches()
    b = ws.begin(batches, B_TEXTS, "en", SLOW, 24, torch.Generator().manual_seed(7))
    b_pieces: list[SpeechPiece] = []
    with torch.inference_mode():
        for _ in range(5):
            batches.step()
            _drain(b, b_pieces)
        generator = _seeded() if params is SAMPLED else None
        a = ws.begin(batches, A_TEXTS, "en", params, 24, generator)
        a_pieces = a.pieces()
        most, steps = 0, 0
        c: SpeechTask | None = None
        while not a.done:
            most = max(most, batches.rows())
            batches.step()
            steps += 1
            a_pieces += a.pieces()
            _drain(b, b_pieces)
            if steps == 10:
                c = ws.begin(batches, C_TEXTS, "en", GREEDY, 24)
            if steps == 20 and c is not None:
                before = batches.rows()
                c.cancel()
                assert batches.rows() < before  # a request that goes away leaves at once
        return _codes(a_pieces, len(A_TEXTS)), most


def _same(batched: list[torch.Tensor], alone: list[torch.Tensor]) -> None:
    assert [c.shape for c in batched] == [c.shape for c in alone]
    for got, want in zip(batched, alone, strict=True):
        assert torch.equal(got, want)


def test_greedy_decoding_is_the_same_alone_and_batched(stage: WhisperSpeechStage) -> None:
    """float32 and int8 weights: the other rows never change a greedy request's codes."""
    batched, most = _batched(stage, GREEDY)
    assert most >= len(A_TEXTS) + len(B_TEXTS) + 1  # A really shared its steps
    _same(batched, _alone(stage, GREEDY))


def test_sampling_uses_the_requests_own_generator(float32_stage: WhisperSpeechStage) -> None:
    """A seeded request draws the same codes alone and batched (float32: with int8 weights the
    kernels round a row's activations differently by batch size, which moves sampled ids)."""
    batched, most = _batched(float32_stage, SAMPLED)
    assert most >= len(A_TEXTS) + len(B_TEXTS) + 1
    _same(batched, _alone(float32_stage, SAMPLED))


def test_batched_audio_equals_alone(stage: WhisperSpeechStage) -> None:
    """Through the vocoder: the greedy sentence's audio is the same batched and alone."""
    alone = [stage.vocoder.decode(c) for c in _alone(stage, GREEDY)]
    batched = [stage.vocoder.decode(c) for c in _batched(stage, GREEDY)[0]]
    for got, want in zip(batched, alone, strict=True):
        assert got.samples.tobytes() == want.samples.tobytes()


def test_rows_at_their_own_positions_match_one_batch(stage: WhisperSpeechStage) -> None:
    """The T2S rows of a batch stepped at different positions give what each gives alone."""
    t2s = stage.pair(GREEDY).t2s
    alone = [t2s.generate([text], "en", 15.0, max_tokens=60, top_k=1) for text in A_TEXTS]
    together = t2s.generate(A_TEXTS, "en", 15.0, max_tokens=60, top_k=1)
    assert together == [rows[0] for rows in alone]


async def test_a_full_server_says_busy(voices: dict[str, VoiceProfile]) -> None:
    """One request decoding, none may wait (`--max-queue 0`): a new client gets `busy` and
    its connection closes; the first request still completes."""
    speech = FakeSpeech(delay=0.5)
    pipeline = Pipeline(speech)
    scheduler = Scheduler(pipeline, max_rows=1, max_queue=0)
    context = server_context(pipeline, voices, "alice", streaming=False, scheduler=scheduler)
    async with serving(context) as port, AsyncTcpClient("127.0.0.1", port) as first:
        await first.write_event(Synthesize(text="One. Two. Three.").event())
        await asyncio.sleep(0.2)
        async with AsyncTcpClient("127.0.0.1", port) as second:
            await second.write_event(Synthesize(text="Me too.").event())
            events = await read_all(second)
        assert [e.type for e in events] == ["error"]
        assert Error.from_event(events[0]).code == "busy"
        done = await read_until(first, {"audio-stop"})
        assert done[-1].type == "audio-stop"
        assert sum(e.type == "audio-chunk" for e in done) > 0
