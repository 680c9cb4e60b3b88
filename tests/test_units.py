"""Pure logic: sentence splitting, SSML, audio helpers, the decode loop's admission, settings, start-up."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from wyoming_wsrvc.__main__ import main, settings_from_args
from wyoming_wsrvc.audio import Audio, iter_chunks, resample, to_pcm16
from wyoming_wsrvc.engine.speech import IteratorWork, SpeechPiece, SpeechWork
from wyoming_wsrvc.errors import ClientError, SettingsError
from wyoming_wsrvc.models.whisperspeech.decoding import DecodeBatches
from wyoming_wsrvc.scheduling.audio_worker import FairWorker
from wyoming_wsrvc.scheduling.decode_loop import DecodeLoop, DecodeRequest
from wyoming_wsrvc.text.sentences import SentenceStream, limit_length, split_sentences
from wyoming_wsrvc.text.ssml import ssml_to_text

from .conftest import REPO


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello world. How are you?", ["Hello world.", "How are you?"]),
        ("Mr. Smith met Dr. Jones. Then left!", ["Mr. Smith met Dr. Jones.", "Then left!"]),
        ("It costs 3.50 euros. OK.", ["It costs 3.50 euros.", "OK."]),
        ("The U.S. team won. Yes", ["The U.S. team won.", "Yes"]),
        ('He said "stop." Then ran.', ['He said "stop."', "Then ran."]),
        ("Line one\nLine two", ["Line one", "Line two"]),
        ("Wait... what?! Really.", ["Wait... what?!", "Really."]),
        ("你好。再见！", ["你好。再见！"]),
        ("你好。 再见！", ["你好。", "再见！"]),
        ("", []),
        ("   ", []),
    ],
)
def test_split_sentences(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


def test_streaming_split_equals_batch_split() -> None:
    text = "First one. Second, with a clause; and more! Third? Fourth without end"
    for size in (1, 2, 3, 7, 50):
        stream = SentenceStream()
        out: list[str] = []
        for i in range(0, len(text), size):
            out += stream.add(text[i : i + size])
        out += stream.finish()
        assert out == split_sentences(text), size


def test_stream_emits_a_sentence_once_the_next_begins() -> None:
    stream = SentenceStream()
    assert stream.add("Hello there.") == []
    assert stream.add(" N") == ["Hello there."]
    assert stream.finish() == ["N"]


def test_limit_length_never_drops_text() -> None:
    sentence = "alpha, beta gamma; delta " * 40 + "x" * 90
    pieces = limit_length(sentence, 60)
    assert all(len(p.encode()) <= 60 for p in pieces)
    assert "".join(pieces).replace(" ", "") == sentence.replace(" ", "")


def test_ssml_to_text() -> None:
    assert ssml_to_text('<speak><sub alias="World Wide Web">WWW</sub> rocks</speak>') == (
        "World Wide Web rocks"
    )
    assert ssml_to_text("<speak><p>One</p><p>Two</p></speak>") == "One\n\nTwo"
    assert ssml_to_text("no markup &lt;3") == "no markup <3"


def test_audio_helpers() -> None:
    audio = Audio(np.sin(np.linspace(0, 100, 24000)).astype(np.float32), 24000)
    for rate in (16000, 22050, 40000, 48000):
        assert len(resample(audio, rate)) == rate
    pcm = to_pcm16(Audio(np.array([2.0, -2.0, 0.5], dtype=np.float32), 8000))
    assert np.frombuffer(pcm, "<i2").tolist() == [32767, -32767, 16384]
    assert [len(c) for c in iter_chunks(b"\0" * 10, 2)] == [4, 4, 2]
    with pytest.raises(ValueError, match="mono"):
        Audio(np.zeros((2, 2), dtype=np.float32), 8000)


def _request(
    client: str,
    name: str,
    order: list[str],
    gate: threading.Event | None = None,
    inside: threading.Event | None = None,
) -> DecodeRequest:
    """A request decoded by an iterator stage: one piece (after `gate`; `inside` is set when
    its decoding has begun), its name recorded in `order` when its decoding runs,
    `name!Error` when it fails."""

    def pieces() -> Iterator[SpeechPiece]:
        if inside is not None:
            inside.set()
        if gate is not None:
            gate.wait(5)
        order.append(name)
        if name.endswith("fails"):
            raise ZeroDivisionError
        yield SpeechPiece(0, final=True)

    def start(batches: DecodeBatches) -> SpeechWork:
        return IteratorWork(pieces())

    def fail(error: BaseException) -> None:
        order.append(f"{name}!{type(error).__name__}")

    return DecodeRequest(client, 1, start, lambda got: None, fail)


def test_decode_loop_is_fair_bounded_and_cancellable() -> None:
    loop = DecodeLoop(max_rows=1, max_queue=2)
    order: list[str] = []
    gate = threading.Event()
    try:
        inside = threading.Event()
        loop.submit(_request("blocker", "blocker", order, gate, inside), new=True)
        assert inside.wait(5)  # the blocker is being decoded: the rest must wait
        for client in ("a", "b"):
            for i in range(3):
                loop.submit(_request(client, f"{client}{i}", order), new=i == 0)
        for _ in range(2):
            loop.submit(_request("c", "c", order))
        assert loop.cancel("c") == 2
        # two clients (a, b) wait beyond the batch: a third new one is refused
        with pytest.raises(ClientError) as refused:
            loop.submit(_request("d", "d", order), new=True)
        assert refused.value.code == "busy"
        loop.submit(_request("a", "a-fails", order))
        gate.set()
        deadline = time.monotonic() + 5
        while not loop.idle() and time.monotonic() < deadline:
            time.sleep(0.01)
        fair = ["blocker", "a0", "b0", "a1", "b1", "a2", "b2"]
        assert order == [*fair, "a-fails", "a-fails!ZeroDivisionError"]
    finally:
        gate.set()
        loop.shutdown()


def test_worker_is_fair_and_cancellable() -> None:
    worker = FairWorker()
    order: list[str] = []
    gate = threading.Event()
    try:
        inside = threading.Event()

        def blocker() -> None:
            inside.set()
            gate.wait()

        worker.submit("blocker", blocker)
        assert inside.wait(5)  # the blocker runs: the rest must wait
        futures = [worker.submit("a", partial(order.append, f"a{i}")) for i in range(3)]
        futures += [worker.submit("b", partial(order.append, f"b{i}")) for i in range(3)]
        dropped = [worker.submit("c", partial(order.append, "c")) for _ in range(2)]
        dropped.append(worker.submit("c", partial(order.append, "c!"), urgent=True))
        # a request's first audio jumps the queue
        futures.append(worker.submit("d", partial(order.append, "first"), urgent=True))
        assert worker.cancel("c") == 3
        gate.set()
        for f in futures:
            f.result(5)
        assert order == ["first", "a0", "b0", "a1", "b1", "a2", "b2"]
        assert all(f.cancelled() for f in dropped)
        failing = worker.submit("a", lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            failing.result(5)
    finally:
        gate.set()
        worker.shutdown()


def test_settings(tmp_path: Path) -> None:
    settings = settings_from_args(["--data-dir", str(tmp_path), "--zeroconf", "--device", "cpu"])
    assert settings.zeroconf
    assert settings.zeroconf_name == ""
    assert settings.voices_dir == REPO / "wyoming_wsrvc" / "example_voices"
    (tmp_path / "voices").mkdir()
    assert settings_from_args(["--data-dir", str(tmp_path)]).voices_dir == tmp_path / "voices"
    with pytest.raises(SettingsError, match="tcp://"):
        settings_from_args(["--uri", "stdio://", "--zeroconf"])
    with pytest.raises(SettingsError, match="--dtype"):
        settings_from_args(["--dtype", "int8"])
    for device in ("tpu", "gpu"):
        with pytest.raises(SettingsError, match="is not a device: use auto, cpu, cuda") as caught:
            settings_from_args(["--device", device])
        assert "\n" not in str(caught.value)
    with pytest.raises(SettingsError, match="--phrase-cache must be 0"):
        settings_from_args(["--phrase-cache", "-5"])
    assert settings_from_args(["--no-phrase-cache"]).phrase_cache == 0


def test_invalid_profile_stops_start_up(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "bad.yaml").write_text("languages: [en]\nrvc: {model: gone.pth}\n")
    assert main(["--voices", str(tmp_path), "--data-dir", str(tmp_path), "--offline"]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1
    assert "bad.yaml" in errors[0]
    assert "rvc.model" in errors[0]
    assert "file not found" in errors[0]


def test_long_first_sentence_is_cut_at_a_clause() -> None:
    from wyoming_wsrvc.text.sentences import first_piece

    long = "In the kitchen and the living room, the lights are now switched off for the night."
    assert first_piece(long) == [
        "In the kitchen and the living room,",
        "the lights are now switched off for the night.",
    ]
    assert first_piece("Short, sweet.") == ["Short, sweet."]
    assert first_piece("A" * 60) == ["A" * 60]
