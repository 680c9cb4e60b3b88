"""The server's own path with small real models (random weights in the real formats): clients
that share decode steps get byte for byte what `Pipeline.synthesize` makes inline, and a
failing audio job ends its request with `error`, never with silence."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
import torch

from wyoming_wsrvc.config.voices import VoiceProfile, WhisperSpeechParams
from wyoming_wsrvc.devtools.loopback import serving, speak
from wyoming_wsrvc.devtools.write_vocos import VOCOS_TINY, write_vocos
from wyoming_wsrvc.devtools.write_whisperspeech import write_s2a, write_t2s
from wyoming_wsrvc.engine.pipeline import Pipeline
from wyoming_wsrvc.engine.speech import run_alone
from wyoming_wsrvc.engine.utterance import Utterance
from wyoming_wsrvc.engine.whisperspeech import NATURAL_LENGTH, WhisperSpeechStage
from wyoming_wsrvc.models.vocos import Vocoder
from wyoming_wsrvc.models.whisperspeech.decoding import DecodeBatches

from .conftest import server_context

GREEDY = WhisperSpeechParams(temperature=0.0)
TEXTS = {
    "alice": "Good morning, the kitchen light is on. It is sunny.",
    "bruno": "The front door is locked.",
}


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> WhisperSpeechStage:
    folder = tmp_path_factory.mktemp("engine-path")
    vocos = write_vocos(folder / "vocos", VOCOS_TINY)
    ws = WhisperSpeechStage(
        Vocoder(vocos / "config.yaml", vocos / "pytorch_model.bin"),
        torch.device("cpu"),
        torch.float32,
        budget=NATURAL_LENGTH,  # sentence-length audio from random weights
    )
    ws.bind(GREEDY, write_t2s(folder / "t2s.model", 2, 2), write_s2a(folder / "s2a.model", 2, 2))
    return ws


@pytest.fixture
def greedy(voices: dict[str, VoiceProfile]) -> dict[str, VoiceProfile]:
    return {name: replace(p, whisperspeech=GREEDY) for name, p in voices.items()}


def _expected(pipeline: Pipeline, profile: VoiceProfile, text: str) -> bytes:
    """What the server must send: the sentences made inline, the profile's pauses between
    them and its tail after them."""
    pause = pipeline.silence(profile, profile.sentence_pause).data
    sentences = [pcm.data for pcm in pipeline.synthesize(text, profile)]
    return pause.join(sentences) + pipeline.silence(profile, profile.tail_silence).data


async def test_shared_decode_steps_give_what_synthesize_gives(
    stage: WhisperSpeechStage,
    greedy: dict[str, VoiceProfile],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two voices, one-shot and streamed, at once: their rows share the decode steps, and each
    answer is byte for byte the inline one."""
    pipeline = Pipeline(stage)
    expected = {name: _expected(pipeline, greedy[name], text) for name, text in TEXTS.items()}
    most = [0]
    step = DecodeBatches.step

    def counting(batches: DecodeBatches) -> None:
        most[0] = max(most[0], batches.rows())
        step(batches)

    monkeypatch.setattr(DecodeBatches, "step", counting)
    async with serving(server_context(pipeline, greedy, "alice")) as port:
        for streaming in (False, True):
            heard = await asyncio.gather(
                *(speak(port, text, name, streaming) for name, text in TEXTS.items())
            )
            for (name, _), answer in zip(TEXTS.items(), heard, strict=True):
                assert answer.error is None
                assert answer.rates == {pipeline.output_rate(greedy[name])}
                assert answer.audio == expected[name], (name, streaming)
    assert most[0] >= 2  # the two requests' rows were decoded in the same steps


async def test_a_failing_audio_job_ends_its_request_with_an_error(
    stage: WhisperSpeechStage,
    greedy: dict[str, VoiceProfile],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An exception on the audio worker (here: a bug in the audio side) reaches the client as
    `error` at once; the server goes on serving."""
    pipeline = Pipeline(stage)
    audio = Utterance.audio
    broken = {"on": True}

    def failing(self: Utterance, *args: object, **kwargs: object) -> object:
        if broken["on"]:
            raise RuntimeError("the audio side broke")
        return audio(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Utterance, "audio", failing)
    async with serving(server_context(pipeline, greedy, "alice")) as port:
        for streaming in (False, True):
            heard = await speak(port, TEXTS["bruno"], "bruno", streaming, silence=20)
            assert heard.error is not None
            assert heard.error.code == "synthesis-failed"
            assert "the audio side broke" in (heard.error.text or "")
            assert not heard.audio
        broken["on"] = False
        heard = await speak(port, TEXTS["bruno"], "bruno", silence=20)
        assert heard.error is None
        assert heard.audio == _expected(pipeline, greedy["bruno"], TEXTS["bruno"])


def test_a_request_alone_runs_to_its_end_and_leaves_the_batches(
    stage: WhisperSpeechStage,
) -> None:
    """The decode loop with one request (a blank sentence too): every sentence ends, and no
    row is left behind."""
    batches = DecodeBatches()
    work = stage.begin(batches, ["Hello there.", ""], "en", GREEDY, 24)
    pieces = [piece for turn in run_alone(batches, work) for piece in turn]
    assert {p.sentence for p in pieces if p.final} == {0, 1}
    assert any(p.codes is not None and p.codes.shape[-1] for p in pieces)
    assert work.done
    assert batches.rows() == 0
