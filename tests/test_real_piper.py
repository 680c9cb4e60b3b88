"""Layer mode against a real peer: wyoming-piper 2.5.2 serving the real Piper voice
en_US-joe-medium (tests/peers/install.sh), as the upstream of a plain layer voice and an RVC layer
voice, over the real socket, one-shot and streamed; the upstream cut off mid-answer; and real
ears: Whisper (CTranslate2, faster-whisper) hears what the server sends for the plain layer voice
about as well as Piper's own audio.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from wyoming_wsrvc.config.settings import Settings
from wyoming_wsrvc.config.voices import load_voices
from wyoming_wsrvc.devtools.loopback import Heard, serving, speak
from wyoming_wsrvc.devtools.peers import PIPER_VOICE, CutRelay, Peers, Piper, piper
from wyoming_wsrvc.devtools.quality import evaluate_remote, transcriber
from wyoming_wsrvc.devtools.random_models import random_models
from wyoming_wsrvc.engine.build import build_pipeline

from .conftest import server_context

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
TEXT = "Turn on the kitchen light. The weather is sunny today."
LONG_FIRST = "Your timer for the pasta ends in ten minutes, and I will remind you. Enjoy."
# five ordinary assistant answers, two sentences each: the joins and pauses are heard too
ANSWERS = [
    "The kitchen light is on. The living room is still dark.",
    "It is twenty one degrees outside. Tomorrow will be sunny and warm.",
    "Your timer for the pasta ends in ten minutes. I will remind you then.",
    "I have added milk and eggs to your shopping list. Is there anything else?",
    "The front door is locked. The alarm is set for the night.",
]


@pytest.fixture(scope="module")
def peers() -> Peers:
    return Peers.find(REPO)  # fails (never skips) without them, naming the install script


@pytest.fixture(scope="module")
def joe(peers: Peers) -> Iterator[Piper]:
    with piper(peers) as running:
        yield running


@pytest.fixture(scope="module")
def relay(joe: Piper) -> Iterator[CutRelay]:
    cut = CutRelay(joe.port)
    yield cut
    cut.close()


def layer_voices(models: Path, piper_uri: str, relay_uri: str) -> Path:
    """joe-plain (Piper's speech as it is), joe-rvc (converted by the tiny RVC v2 voice) and
    joe-cut (plain, through the relay that can cut Piper off)."""
    folder = models / "voices-layer"
    folder.mkdir()
    rvc = yaml.safe_load((models / "voices" / "rvc-v2.yaml").read_text())["rvc"]
    rvc["model"] = str((models / "voices" / rvc["model"]).resolve())
    rvc["index"] = str((models / "voices" / rvc["index"]).resolve())
    common = {"languages": ["en", "en_US"], "sentence_pause": 0.2, "tail_silence": 0.1}
    profiles = {
        "joe-plain": {"upstream": {"uri": piper_uri, "voice": PIPER_VOICE}},
        "joe-rvc": {"upstream": {"uri": piper_uri, "voice": PIPER_VOICE}, "rvc": rvc},
        "joe-cut": {"upstream": {"uri": relay_uri, "voice": PIPER_VOICE}},
    }
    for name, profile in profiles.items():
        (folder / f"{name}.yaml").write_text(yaml.safe_dump({**common, **profile}))
    return folder


@pytest.fixture(scope="module")
def layer_server(
    joe: Piper, relay: CutRelay, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[int]:
    """The server in-process (Settings.local: no phrase cache, every answer asks Piper again)."""
    models = tmp_path_factory.mktemp("real-piper")
    random_models(models, "tiny")
    voices_dir = layer_voices(models, joe.uri, relay.uri)
    settings = Settings.local(models, voices_dir=voices_dir)
    pipeline, voices = build_pipeline(settings, load_voices(voices_dir))
    assert pipeline.speech is None  # no WhisperSpeech loaded: layer voices only
    context = server_context(pipeline, voices, "joe-plain")
    loop = asyncio.new_event_loop()
    ready: asyncio.Future[int] = loop.create_future()
    stop = asyncio.Event()

    async def run() -> None:
        async with serving(context) as port:
            ready.set_result(port)
            await stop.wait()

    task = loop.create_task(run())
    port = loop.run_until_complete(ready)
    import threading

    thread = threading.Thread(target=loop.run_until_complete, args=(task,), daemon=True)
    thread.start()
    yield port
    loop.call_soon_threadsafe(stop.set)
    thread.join(30)


def ask(port: int, text: str, voice: str | None, streaming: bool) -> Heard:
    return asyncio.run(speak(port, text, voice, streaming=streaming, silence=120.0))


@pytest.mark.parametrize("streaming", [False, True], ids=["one-shot", "streamed"])
def test_plain_layer_voice_is_pipers_speech(joe: Piper, layer_server: int, streaming: bool) -> None:
    """Piper's own speech, resampled to the server's rate, with the profile's pauses: as long as
    Piper's answers to each sentence plus those pauses (Piper's durations vary a little from one
    run to the next: its duration predictor samples noise)."""
    sentences = ["Turn on the kitchen light.", "The weather is sunny today."]
    own = [ask(joe.port, sentence, PIPER_VOICE, False) for sentence in sentences]
    assert all(heard.error is None and heard.seconds > 0.5 for heard in own)
    heard = ask(layer_server, TEXT, "joe-plain", streaming)
    assert heard.error is None
    assert heard.rates == {24000}
    expected = sum(h.seconds for h in own) + 0.2 + 0.1
    assert heard.seconds == pytest.approx(expected, rel=0.15)
    assert max(abs(s) for s in memoryview(heard.audio).cast("h")) > 1000  # speech, not silence


@pytest.mark.parametrize("streaming", [False, True], ids=["one-shot", "streamed"])
def test_rvc_layer_voice_converts_pipers_speech(
    joe: Piper, layer_server: int, streaming: bool
) -> None:
    plain = ask(layer_server, TEXT, "joe-plain", False)
    heard = ask(layer_server, TEXT, "joe-rvc", streaming)
    assert heard.error is None
    assert heard.rates == {40000}  # the v2 40 kHz voice's rate
    assert heard.seconds == pytest.approx(plain.seconds, rel=0.15)
    assert heard.first_audio < heard.total


def test_upstream_cut_off_mid_answer(relay: CutRelay, layer_server: int) -> None:
    """Piper stops after a little of its answer: the request ends with an error naming the
    upstream (no hang, no silence passed off as speech), and the next request is answered."""
    relay.cut_after = 8000  # bytes of Piper's answer: a few audio chunks
    try:
        heard = ask(layer_server, TEXT, "joe-cut", True)
    finally:
        relay.cut_after = None
    assert relay.cuts >= 1
    assert heard.error is not None
    assert heard.error.code == "upstream-failed"
    assert heard.error.text.startswith(f"upstream {relay.uri}:"), heard.error.text
    again = ask(layer_server, LONG_FIRST, "joe-cut", True)
    assert again.error is None
    assert again.seconds > 3.0
    # one upstream request per sentence: a layer voice's first sentence is not cut at its
    # first clause (Piper would speak the two pieces with their own intonation and a pause)
    first, second = LONG_FIRST.split(". ")
    assert [t for t in relay.texts if t in LONG_FIRST] == [first + ".", second]


def test_whisper_hears_the_layer_voice_as_well_as_piper(
    peers: Peers, joe: Piper, layer_server: int
) -> None:
    """Real ears: Whisper base (CTranslate2, faster-whisper) transcribes Piper's own answers and
    the server's plain layer voice (Piper's speech through our resampling, sentence pieces, pauses,
    streamed word by word): word error rates within 2 points, so a broken join, a dropped piece or
    a wrong rate would be heard."""
    ears = transcriber(peers.whisper_base)
    own = asyncio.run(evaluate_remote("127.0.0.1", joe.port, [PIPER_VOICE], ANSWERS, ears))
    ours = asyncio.run(
        evaluate_remote("127.0.0.1", layer_server, ["joe-plain"], ANSWERS, ears, streaming=True)
    )
    upstream_wer, layer_wer = own[0].wer, ours[0].wer
    assert upstream_wer < 0.15, own[0].sentences  # the ears work on Piper's own speech
    assert layer_wer <= upstream_wer + 0.02, (upstream_wer, layer_wer, ours[0].sentences)
