"""Decoding shared across requests: a request's codes do not depend on what else is in its
batch (greedy: identical; sampled: its own generator), rows join and leave between steps, a
request that goes away leaves at once, and a full server says `busy`. Real (random-weight)
checkpoints in their file formats, real sockets."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.tts import Synthesize

from wyoming_wsrvc.config.voices import VoiceProfile, WhisperSpeechParams
from wyoming_wsrvc.devtools.loopback import serving
from wyoming_wsrvc.devtools.write_vocos import VOCOS_TINY, write_vocos
from wyoming_wsrvc.devtools.write_whisperspeech import write_s2a, write_t2s
from wyoming_wsrvc.engine.pipeline import Pipeline
from wyoming_wsrvc.engine.speech import SpeechPiece, run_alone
from wyoming_wsrvc.engine.whisperspeech import WhisperSpeechStage, WhisperSpeechWork
from wyoming_wsrvc.models.int8 import Int8Linear
from wyoming_wsrvc.models.vocos import Vocoder
from wyoming_wsrvc.models.whisperspeech import decoding
from wyoming_wsrvc.models.whisperspeech.decoding import DecodeBatches, generate_semantic
from wyoming_wsrvc.models.whisperspeech.sampling import Sampling, sample_rows
from wyoming_wsrvc.scheduling.scheduler import Scheduler

from .conftest import FakeSpeech, eventually, read_all, read_until, server_context

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
    """A's codes decoded alone (a batch of one request: the same decode loop)."""
    generator = _seeded() if params is SAMPLED else None
    batches = DecodeBatches()
    work = ws.begin(batches, A_TEXTS, "en", params, 24, generator=generator)
    with torch.inference_mode():
        pieces = [piece for turn in run_alone(batches, work) for piece in turn]
    return _codes(pieces, len(A_TEXTS))


def _drain(task: WhisperSpeechWork, into: list[SpeechPiece]) -> None:
    into += task.pieces()


def _batched(ws: WhisperSpeechStage, params: WhisperSpeechParams) -> tuple[list[torch.Tensor], int]:
    """A's codes when B started 5 steps before it and C joins 10 steps after it and leaves
    early; the most rows a step held while A was in the batch."""
    batches = DecodeBatches()
    b = ws.begin(batches, B_TEXTS, "en", SLOW, 24, generator=torch.Generator().manual_seed(7))
    b_pieces: list[SpeechPiece] = []
    with torch.inference_mode():
        for _ in range(5):
            batches.step()
            _drain(b, b_pieces)
        generator = _seeded() if params is SAMPLED else None
        a = ws.begin(batches, A_TEXTS, "en", params, 24, generator=generator)
        a_pieces = a.pieces()
        most, steps = 0, 0
        c: WhisperSpeechWork | None = None
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


@dataclass
class _Calls:
    """A greedy request's logits and picks at every sampler call, per stage (T2S, S2A)."""

    t2s: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    s2a: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    mine: Sampling | None = None  # the request's sampling state: which rows are its own


def _recording(monkeypatch: pytest.MonkeyPatch) -> list[_Calls]:
    """Record, at every shared step, the logits and picks of the first greedy request seen
    (the request under test: B samples, C joins after A); one `_Calls` per run."""
    runs: list[_Calls] = []
    original = sample_rows  # what `decoding` calls

    def record(logits: torch.Tensor, samplings: list[Sampling]) -> torch.Tensor:
        picks = original(logits, samplings)
        run = runs[-1]
        greedy = [s for s in samplings if s.temperature <= 0 or s.top_k == 1]
        if greedy:
            run.mine = run.mine or greedy[0]
            rows = [i for i, s in enumerate(samplings) if s is run.mine]
            if rows:
                calls = run.s2a if logits.dim() == 3 else run.t2s
                calls.append((logits[rows].clone(), picks[rows].clone()))
        return picks

    monkeypatch.setattr(decoding, "sample_rows", record)
    return runs


def _explained(
    alone: list[tuple[torch.Tensor, torch.Tensor]],
    batched: list[tuple[torch.Tensor, torch.Tensor]],
    tolerance: float,
) -> int:
    """Alone and batched agree call by call: logits within `tolerance` of their scale, picks
    equal, until a pick differs; that pick must be a near-tie that the rounding difference
    explains (its top-two margin no larger than twice the logits' difference). Returns the
    calls that agreed."""
    for call, ((want, want_ids), (got, got_ids)) in enumerate(zip(alone, batched, strict=False)):
        assert got.shape == want.shape, f"call {call}: {got.shape} vs {want.shape}"
        diff = (got - want).abs()
        scale = want.abs().amax()
        assert diff.amax() <= tolerance * scale, f"call {call}: logits differ by {diff.amax()}"
        if torch.equal(got_ids, want_ids):
            continue
        top2 = want.topk(2, dim=-1).values
        margin = top2[..., 0] - top2[..., 1]
        flipped = got_ids != want_ids
        worst = diff.amax(dim=-1)
        assert (margin[flipped] <= 2 * worst[flipped] + 1e-6 * scale).all(), (
            f"call {call}: a decisive pick changed (margin {margin[flipped].tolist()}, "
            f"logits moved {worst[flipped].tolist()})"
        )
        return call
    return min(len(alone), len(batched))


def test_greedy_decoding_alone_and_batched(
    stage: WhisperSpeechStage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What holds on every CPU: a greedy request's logits are the same alone and in a shared
    batch up to float rounding (attention over rows at other positions and the matrix kernels
    round a row differently by batch size, by ~1e-7; bfloat16 activations into the int8
    kernel can turn that into one bf16 step), so its picks are the same except where two ids
    are that close to a tie. Every agreeing call is compared; a changed pick must be such a
    tie."""
    runs = _recording(monkeypatch)
    runs.append(_Calls())
    batched, most = _batched(stage, GREEDY)
    assert most >= len(A_TEXTS) + len(B_TEXTS) + 1  # A really shared its steps
    runs.append(_Calls())
    alone = _alone(stage, GREEDY)
    tolerance = 1e-2 if stage.int8 else 1e-4
    assert runs[0].t2s
    assert runs[0].s2a
    agreed = [_explained(runs[1].t2s, runs[0].t2s, tolerance)]
    agreed.append(_explained(runs[1].s2a, runs[0].s2a, tolerance))
    assert min(agreed) >= 3, agreed  # the first steps (prefill included) are never near a tie
    if not stage.int8:  # float32: no near-tie on these checkpoints, on either kind of CPU
        _same(batched, alone)


def test_int8_products_are_row_independent(stage: WhisperSpeechStage) -> None:
    """The int8 kernel itself is exact per row on this CPU (AVX2 or AVX-512): every int8 layer
    of the decoders gives each row of a batch what that row gives alone."""
    layers = [
        m
        for pair in [stage.pair(GREEDY)]
        for model in (pair.t2s, pair.s2a)
        for m in model.modules()
        if isinstance(m, Int8Linear)
    ]
    if not stage.int8:
        assert not layers
        return
    assert layers
    generator = torch.Generator().manual_seed(3)
    for layer in layers:
        x = torch.randn(7, layer.in_features, generator=generator)
        together = layer(x)
        for row in range(7):
            assert torch.equal(together[row : row + 1], layer(x[row : row + 1].clone()))


def test_sampling_uses_the_requests_own_generator(float32_stage: WhisperSpeechStage) -> None:
    """A seeded request draws the same codes alone and batched (float32: with int8 weights the
    kernels round a row's activations differently by batch size, which moves sampled ids)."""
    batched, most = _batched(float32_stage, SAMPLED)
    assert most >= len(A_TEXTS) + len(B_TEXTS) + 1
    _same(batched, _alone(float32_stage, SAMPLED))


def test_batched_audio_equals_alone(stage: WhisperSpeechStage) -> None:
    """Through the vocoder: a sentence whose codes are the same batched and alone has the same
    audio, byte for byte (float32: every sentence here)."""
    alone = _alone(stage, GREEDY)
    batched = _batched(stage, GREEDY)[0]
    compared = 0
    for got, want in zip(batched, alone, strict=True):
        if got.shape == want.shape and torch.equal(got, want):
            a, b = stage.vocoder.decode(got), stage.vocoder.decode(want)
            assert a.samples.tobytes() == b.samples.tobytes()
            compared += 1
    assert compared >= (len(A_TEXTS) if not stage.int8 else 1)


def test_rows_at_their_own_positions_match_one_batch(stage: WhisperSpeechStage) -> None:
    """The T2S rows of a batch stepped at different positions give what each gives alone."""
    t2s = stage.pair(GREEDY).t2s
    alone = [generate_semantic(t2s, [text], "en", 15.0, max_tokens=60, top_k=1) for text in A_TEXTS]
    together = generate_semantic(t2s, A_TEXTS, "en", 15.0, max_tokens=60, top_k=1)
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
        await eventually(lambda: bool(speech.calls))  # the first request is being decoded
        async with AsyncTcpClient("127.0.0.1", port) as second:
            await second.write_event(Synthesize(text="Me too.").event())
            events = await read_all(second)
        assert [e.type for e in events] == ["error"]
        assert Error.from_event(events[0]).code == "busy"
        done = await read_until(first, {"audio-stop"})
        assert done[-1].type == "audio-stop"
        assert sum(e.type == "audio-chunk" for e in done) > 0
