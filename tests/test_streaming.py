"""Audio within a sentence: every streamed stage against its whole-sentence counterpart, and
the scheduler's threads, overlap and cancellation."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from wyoming.tts import Synthesize

from wyoming_wsrvc.audio import Audio, StreamResampler, resample
from wyoming_wsrvc.config.voices import RvcParams, WhisperSpeechParams
from wyoming_wsrvc.devtools.write_rvc import write_hubert, write_rvc_voice
from wyoming_wsrvc.devtools.write_vocos import VOCOS_TINY, write_vocos
from wyoming_wsrvc.devtools.write_whisperspeech import write_s2a, write_t2s
from wyoming_wsrvc.engine.conversion import RvcConverter
from wyoming_wsrvc.engine.conversion_stream import ConversionStream
from wyoming_wsrvc.engine.speech import CHUNK_FRAMES, SpeechPiece, run_alone
from wyoming_wsrvc.engine.threads import ThreadPlan
from wyoming_wsrvc.engine.whisperspeech import NATURAL_LENGTH, WhisperSpeechStage, token_budget
from wyoming_wsrvc.models.rvc.content import ContentEncoder, ContentModels, load_hubert
from wyoming_wsrvc.models.rvc.pitch import YinPitch
from wyoming_wsrvc.models.vocos import Vocoder
from wyoming_wsrvc.models.whisperspeech.checkpoint import load_s2a
from wyoming_wsrvc.models.whisperspeech.decoding import (
    DecodeBatches,
    generate_acoustic,
    generate_semantic,
    stream_acoustic,
)
from wyoming_wsrvc.models.whisperspeech.s2a import valid_codes

from .conftest import FakeSpeech, ServerFactory, eventually, read_until


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("streaming")
    write_t2s(folder / "t2s.model", 2, 2)
    write_s2a(folder / "s2a.model", 2, 2)
    write_vocos(folder / "vocos", VOCOS_TINY)
    return folder


def _vocoder(models: Path) -> Vocoder:
    return Vocoder(models / "vocos" / "config.yaml", models / "vocos" / "pytorch_model.bin")


@pytest.mark.parametrize("chunk", [1, 5, 24])
def test_s2a_pieces_join_to_the_whole(models: Path, chunk: int) -> None:
    s2a = load_s2a(models / "s2a.model")
    stoks = [[3, 1, 4, 1, 5, 9, 2, 6], [2, 7, 1, 8]]
    speakers = torch.randn(2, 192, generator=torch.Generator().manual_seed(1))
    whole = generate_acoustic(s2a, stoks, speakers, top_k=1)
    pieces = list(stream_acoustic(s2a, stoks, speakers, top_k=1, chunk=chunk))
    assert all(p.shape[-1] == chunk for p in pieces[:-1])
    assert torch.equal(torch.cat(pieces, dim=-1), whole)


@pytest.mark.parametrize("piece", [1, 7, 24, 100])
def test_vocoder_pieces_equal_whole_decoding(models: Path, piece: int) -> None:
    vocoder = _vocoder(models)
    codes = torch.randint(0, 1024, (4, 120), generator=torch.Generator().manual_seed(2))
    whole = vocoder.decode(codes).samples
    stream = vocoder.stream()
    parts = [
        stream.feed(codes[:, a : a + piece], final=a + piece >= 120).samples
        for a in range(0, 120, piece)
    ]
    joined = np.concatenate(parts)
    assert len(joined) == len(whole) == 120 * 320
    np.testing.assert_allclose(joined, whole, atol=1e-5)


@pytest.mark.parametrize(("orig", "new"), [(24000, 22050), (24000, 16000), (40000, 48000)])
def test_resampler_pieces_equal_whole_resampling(orig: int, new: int) -> None:
    x = np.random.default_rng(3).normal(0, 0.1, orig).astype(np.float32)
    whole = resample(Audio(x, orig), new).samples
    stream = StreamResampler(orig, new)
    parts = [
        stream.feed(Audio(x[a : a + 997], orig), final=a + 997 >= len(x)).samples
        for a in range(0, len(x), 997)
    ]
    np.testing.assert_allclose(np.concatenate(parts), whole, atol=1e-5)


def _whole_sentences(
    stage: WhisperSpeechStage, texts: list[str], params: WhisperSpeechParams
) -> list[np.ndarray]:
    """Each sentence as the models make it generated whole: T2S for every part at once, S2A for
    every row at once, each row's codes vocoded in one piece (upstream's way)."""
    pair = stage.pair(params)
    parts = [stage.fit(text, pair.t2s) for text in texts]
    flat = [part for group in parts for part in group]
    budgets = [
        token_budget(part, params.speaking_rate, pair.t2s.cfg.stoks_len, stage.budget)
        for part in flat
    ]
    tokens = generate_semantic(
        pair.t2s, flat, "en", params.speaking_rate, max_tokens=budgets, temperature=0.0
    )
    stoks = [[t for t in row if t < pair.t2s.cfg.stoks_codes - 1] for row in tokens]
    speakers = stage.speaker(params.speaker)[None].expand(len(stoks), -1)
    codes = valid_codes(generate_acoustic(pair.s2a, stoks, speakers, temperature=0.0))
    audio = [
        stage.vocoder.decode(codes[i, :, : 3 * len(row) - 4]).samples for i, row in enumerate(stoks)
    ]
    out, index = [], 0
    for group in parts:
        out.append(np.concatenate(audio[index : index + len(group)]))
        index += len(group)
    return out


def test_streamed_sentences_equal_whole_sentences(
    models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stage's pieces (the server's decode path), vocoded as they come, equal decoding each
    sentence's codes whole."""
    stage = WhisperSpeechStage(
        _vocoder(models), torch.device("cpu"), torch.float32, budget=NATURAL_LENGTH
    )
    params = WhisperSpeechParams(temperature=0.0)
    stage.bind(params, models / "t2s.model", models / "s2a.model")
    monkeypatch.setattr(stage, "max_text_bytes", 80)  # (300: the same code, longer to run)
    long = " ".join(["A sentence so long that the models take it in two parts."] * 2)
    texts = ["Hello there.", "A second, longer sentence for the batch.", long]
    assert len(stage.fit(long, stage.pair(params).t2s)) == 2
    whole = _whole_sentences(stage, texts, params)
    streams = [stage.open_vocoder() for _ in texts]
    parts: list[list[np.ndarray]] = [[] for _ in texts]
    finals = []
    batches = DecodeBatches()
    work = stage.begin(batches, texts, "en", params, CHUNK_FRAMES)
    for piece in (piece for turn in run_alone(batches, work) for piece in turn):
        assert piece.codes is not None
        parts[piece.sentence].append(
            streams[piece.sentence].feed(piece.codes, piece.part_end).samples
        )
        if piece.part_end:
            streams[piece.sentence] = stage.open_vocoder()
        if piece.final:
            finals.append(piece.sentence)
    assert sorted(finals) == [0, 1, 2]
    for index, audio in enumerate(whole):
        np.testing.assert_allclose(np.concatenate(parts[index]), audio, atol=1e-5)


def _local(voice: Path, hubert: Path) -> None:
    """Make a random voice and content model local: no attention, no long convolutions, an
    identity flow. Then chunked conversion can equal whole conversion, and what is left of the
    difference measures the chunking itself (alignment, context, joins)."""
    data = torch.load(voice, weights_only=True)
    for key, value in data["weight"].items():
        if (".attn_layers." in key and "conv_o" in key) or (
            key.startswith("flow.") and ".post." in key
        ):
            value.zero_()
    torch.save(data, voice)
    state = torch.load(hubert / "pytorch_model.bin", weights_only=True)
    for key, value in state.items():
        if "attention.out_proj" in key or ("pos_conv_embed" in key and "weight_v" not in key):
            value.zero_()  # (weight_v stays: the weight-norm direction must not be 0/0)
    torch.save(state, hubert / "pytorch_model.bin")


def _speech(seconds: float, rate: int = 24000) -> Audio:
    t = np.arange(int(seconds * rate)) / rate
    f0 = 140 + 40 * np.sin(2 * np.pi * 0.7 * t)
    wave = 0.3 * np.sin(2 * np.pi * np.cumsum(f0) / rate) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return Audio(wave.astype(np.float32), rate)


def _convert_in_pieces(
    converter: RvcConverter, params: RvcParams, audio: Audio, short_start: bool = True
) -> np.ndarray:
    stream = ConversionStream(converter, params, audio.rate, short_start=short_start)
    step = 7680  # one 24-frame S2A piece of 24 kHz speech
    parts = [
        stream.feed(Audio(audio.samples[a : a + step], audio.rate), final=a + step >= len(audio))
        for a in range(0, len(audio), step)
    ]
    return np.concatenate([p.samples for p in parts])


def _snr(reference: np.ndarray, other: np.ndarray) -> float:
    error = other - reference
    return float(10 * np.log10(np.mean(reference**2) / max(np.mean(error**2), 1e-20)))


def test_a_short_start_sends_audio_before_a_segment_is_in(tmp_path: Path) -> None:
    """With `short_start` the first 0.24 s are converted once 0.34 s have arrived; without it
    nothing comes before a full segment and its context (2.2 s), or before the last piece."""
    hubert = write_hubert(tmp_path / "hubert_base")
    voice = write_rvc_voice(tmp_path / "v.pth", "v2", 40000)
    content = ContentModels(loaded={"contentvec": ContentEncoder(load_hubert(hubert))})
    converter = RvcConverter(content, {"yin": YinPitch()}, torch.device("cpu"), noise=False)
    params = RvcParams(model=voice, f0_method="yin")
    audio = _speech(3.0)
    heard = {}
    for short in (True, False):
        stream = ConversionStream(converter, params, audio.rate, short_start=short)
        step = int(0.4 * audio.rate)
        first = stream.feed(Audio(audio.samples[:step], audio.rate), final=False).samples
        at_two = stream.feed(Audio(audio.samples[step : 5 * step], audio.rate), final=False)
        rest = stream.feed(Audio(audio.samples[5 * step :], audio.rate), final=True)
        heard[short] = (len(first), len(at_two.samples), len(rest.samples))
    rate = 40000
    assert heard[True][0] == round(0.2 * rate)  # 0.24 s less the 40 ms crossfade held back
    assert heard[False][:2] == (0, 0)  # 2.0 s in: less than a segment and its context
    assert sum(heard[True]) == sum(heard[False]) == int(3.0 * rate)


def test_rvc_in_pieces_against_the_whole_sentence(tmp_path: Path) -> None:
    """Windows, phase continuation, crossfades: with local networks the pieces equal the whole
    sentence; HuBERT's first layer normalizes over its input (GroupNorm over time), which no
    window can see whole: that, and the loudness blend's 0.5 s frames, are what remains."""
    hubert = write_hubert(tmp_path / "hubert_base")
    voice = write_rvc_voice(tmp_path / "v.pth", "v2", 40000)
    _local(voice, hubert)
    encoder = ContentEncoder(load_hubert(hubert))
    content = ContentModels(loaded={"contentvec": encoder})
    converter = RvcConverter(content, {"yin": YinPitch()}, torch.device("cpu"), noise=False)
    audio = _speech(4.1)
    figures = {}
    for mix in (1.0, 0.25):
        params = RvcParams(model=voice, f0_method="yin", rms_mix_rate=mix)
        whole = converter.convert(audio, params).samples
        pieces = _convert_in_pieces(converter, params, audio)
        assert len(pieces) == len(whole)
        figures[mix] = _snr(whole, pieces)
        # no click at a join: no sample-to-sample step larger than in the whole conversion
        assert np.abs(np.diff(pieces)).max() <= 1.5 * np.abs(np.diff(whole)).max() + 1e-3
        # a later sentence (no short start) of at most one segment: nothing until its last
        # piece, then one window: the sentence's own conversion, but for the stream's resampler
        # rounding its last bits differently, which these random weights amplify (measured:
        # 57 dB at both mixes, where the windows give 17 dB)
        short = Audio(audio.samples[: int(2.2 * audio.rate)], audio.rate)
        at_once = _convert_in_pieces(converter, params, short, short_start=False)
        alone = converter.convert(short, params).samples
        assert len(at_once) == len(alone)
        assert _snr(alone, at_once) >= 45
    # measured here: 17 dB and 15 dB (GroupNorm statistics of a window vs the sentence)
    assert figures[1.0] >= 12, figures
    assert figures[0.25] >= 10, figures
    encoder.model.feature_extractor.conv_layers[0].layer_norm = None  # type: ignore[assignment]
    params = RvcParams(model=voice, f0_method="yin", rms_mix_rate=1.0)
    whole = converter.convert(audio, params).samples
    pieces = _convert_in_pieces(converter, params, audio)
    assert _snr(whole, pieces) >= 35  # measured: 45 dB; 36-200 dB in every 100 ms


def test_thread_plan_never_oversubscribes() -> None:
    for cores in range(1, 33):
        plan = ThreadPlan.for_threads(cores)
        assert plan.peak <= cores
        assert plan.decode >= 1
        assert plan.audio >= 1
        assert plan.overlap == (cores > 1)
    assert ThreadPlan.for_threads(2) == ThreadPlan(2, 1, 1, overlap=True)


class PieceSpeech(FakeSpeech):
    """Speech in many small pieces with a delay before each; records the threads it ran with."""

    def __init__(self, pieces: int = 20, delay: float = 0.05) -> None:
        super().__init__()
        self.pieces, self.piece_delay = pieces, delay
        self.yielded = 0
        self.threads: set[tuple[str, int]] = set()

    def stream(
        self, texts: Sequence[str], language: str, params: WhisperSpeechParams, chunk: int
    ) -> Iterator[SpeechPiece]:
        self.threads.add((threading.current_thread().name, torch.get_num_threads()))
        for index, text in enumerate(texts):
            audio = self.audio_for(text).samples
            step = max(1, len(audio) // self.pieces)
            for start in range(0, len(audio), step):
                time.sleep(self.piece_delay)
                self.yielded += 1
                final = start + step >= len(audio)
                yield SpeechPiece(
                    index, audio=Audio(audio[start : start + step], self.rate), final=final
                )
                if final:
                    break


async def test_first_audio_comes_before_the_sentence_is_done(server_factory: ServerFactory) -> None:
    speech = PieceSpeech(pieces=20, delay=0.05)
    async with server_factory(speech=speech) as srv, srv.client() as client:
        await client.write_event(Synthesize(text="A rather long sentence here.").event())
        events = await read_until(client, {"audio-chunk"})
        made_by_then = speech.yielded
        rest = await read_until(client, {"audio-stop"})
    assert events[-1].type == "audio-chunk"
    assert rest[-1].type == "audio-stop"
    assert made_by_then < 20  # the first piece was sent before the sentence was made
    assert any(
        name.startswith("wsrvc-decode") and n <= srv.scheduler.plan.decode
        for name, n in speech.threads
    )


async def test_disconnect_stops_the_sentence_within_a_piece(server_factory: ServerFactory) -> None:
    speech = PieceSpeech(pieces=40, delay=0.05)
    async with server_factory(speech=speech) as srv:
        async with srv.client() as client:
            await client.write_event(Synthesize(text="Long enough to take two seconds.").event())
            await read_until(client, {"audio-chunk"})
        at_disconnect = speech.yielded
        await eventually(srv.scheduler.decoder.idle)
        assert speech.yielded <= at_disconnect + 3  # stopped within a few pieces, not 40
        assert srv.scheduler.pending() == 0
