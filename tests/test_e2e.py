"""The real server process on the random-weight model set: start-up, synthesis over TCP, SIGTERM."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

import pytest
import yaml
from wyoming.audio import AudioChunk, AudioStart
from wyoming.client import AsyncTcpClient
from wyoming.event import read_event, write_event
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize, SynthesizeVoice

from wyoming_wsrvc.devtools.random_models import random_models
from wyoming_wsrvc.engine.whisperspeech import MAX_TEXT_BYTES, token_budget
from wyoming_wsrvc.models.whisperspeech.checkpoint import load_t2s
from wyoming_wsrvc.models.whisperspeech.decoding import generate_semantic
from wyoming_wsrvc.text.normalize import normalize
from wyoming_wsrvc.text.sentences import split_sentences

from .conftest import REPO, read_until

pytestmark = pytest.mark.slow


@dataclass
class Server:
    process: subprocess.Popen[str]
    port: int
    data: Path
    log: list[str]


def launch(data: Path, uri: str, *extra: str) -> subprocess.Popen[str]:
    """The server as a user starts it, on the model set in `data`; its log on stderr."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # as from a terminal: tests run as a background job start with Ctrl-C ignored, and a
        # child would inherit that (Python then never handles it); a handler is not inherited
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "wyoming_wsrvc",
            "--data-dir",
            str(data),
            "--offline",
            "--uri",
            uri,
            *extra,
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def start_server(data: Path, *extra: str) -> Server:
    process = launch(data, "tcp://127.0.0.1:0", *extra)
    assert process.stderr is not None
    log: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        log.append(line)
        if match := re.search(r"Ready: listening on tcp://127\.0\.0\.1:(\d+)", line):
            return Server(process, int(match.group(1)), data, log)
    process.kill()
    raise AssertionError("server did not start:\n" + "".join(log))


def start_up_error(*args: str) -> str:
    """Run the server expecting it to refuse to start; return its single `Cannot start` line."""
    result = subprocess.run(
        [sys.executable, "-m", "wyoming_wsrvc", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "Cannot start" in line]
    assert len(errors) == 1, result.stderr
    return errors[0]


def stop_server(server: Server) -> tuple[int, str]:
    server.process.send_signal(signal.SIGTERM)
    _, rest = server.process.communicate(timeout=10)
    return server.process.returncode, "".join(server.log) + rest


@pytest.fixture(scope="module")
def model_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("models")
    random_models(data, "tiny")
    greedy = yaml.safe_load((data / "voices" / "random.yaml").read_text())
    greedy["name"] = "greedy"
    greedy["whisperspeech"]["temperature"] = 0.0
    (data / "voices" / "greedy.yaml").write_text(yaml.safe_dump(greedy))
    return data


def only(model_set: Path, *names: str) -> tuple[str, str]:
    """`--voices` for a folder with just these profiles of the model set (beside its `voices`
    folder, so their `../models/` paths still hold): a server that starts in seconds."""
    folder = model_set / f"voices-{'-'.join(names)}"
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / f"{name}.yaml").write_text((model_set / "voices" / f"{name}.yaml").read_text())
    return "--voices", str(folder)


@pytest.fixture(scope="module")
def server(model_set: Path) -> Iterator[Server]:
    running = start_server(model_set)
    yield running
    if running.process.poll() is None:
        stop_server(running)


def expected_samples(data: Path, text: str, pause: float, tail: float) -> int:
    """What the server must send for `text` with the greedy profile: per sentence, 3 frames of
    320 samples per semantic token minus the 4-frame delay tail, plus pauses and the tail."""
    t2s = load_t2s(data / "models" / "t2s-tiny.model")
    total = 0
    sentences = split_sentences(text, MAX_TEXT_BYTES)
    for sentence in sentences:
        spoken = normalize(sentence, "en")
        tokens = generate_semantic(
            t2s, [spoken], "en", 13.0, temperature=0.0, max_tokens=token_budget(spoken, 13.0, 750)
        )[0]
        total += (3 * len([t for t in tokens if t < 512]) - 4) * 320
    return total + round(pause * 24000) * (len(sentences) - 1) + round(tail * 24000)


async def test_serves_random_models_over_tcp(server: Server) -> None:
    text = "Hello there. It is 10:45 and 21.5 °C outside!"
    async with AsyncTcpClient("127.0.0.1", server.port) as client:
        await client.write_event(Describe().event())
        info = Info.from_event((await read_until(client, {"info"}))[-1])
        names = {v.name for v in info.tts[0].voices}
        assert names == {
            "greedy",
            "random",
            "random-cond",
            "rvc-v1",
            "rvc-v2",
            "applio-hifigan-24k",
            "applio-mrf-24k",
            "applio-refinegan-32k",
            "applio-refinegan-3.2.9-32k",
        }
        await client.write_event(
            Synthesize(text=text, voice=SynthesizeVoice(name="greedy")).event()
        )
        events = await read_until(client, {"audio-stop"}, timeout=60)
    start = AudioStart.from_event(events[0])
    assert (start.rate, start.width, start.channels) == (24000, 2, 1)
    audio = b"".join(AudioChunk.from_event(e).audio for e in events if e.type == "audio-chunk")
    assert len(audio) // 2 == expected_samples(server.data, text, 0.1, 0.1)
    assert (
        max(
            abs(int.from_bytes(audio[i : i + 2], "little", signed=True))
            for i in range(0, len(audio), 2)
        )
        > 100
    )


async def test_conditioned_s2a_and_speaker_file(server: Server) -> None:
    async with AsyncTcpClient("127.0.0.1", server.port) as client:
        await client.write_event(
            Synthesize(text="Another voice.", voice=SynthesizeVoice(name="random-cond")).event()
        )
        events = await read_until(client, {"audio-stop"}, timeout=60)
    audio = b"".join(AudioChunk.from_event(e).audio for e in events if e.type == "audio-chunk")
    assert len(audio) > 2 * 24000 * 0.1


def test_sigterm_shuts_down_cleanly(model_set: Path) -> None:
    running = start_server(model_set, *only(model_set, "rvc-v1"))

    async def speak() -> None:
        async with AsyncTcpClient("127.0.0.1", running.port) as client:
            voice = SynthesizeVoice(name="rvc-v1")
            await client.write_event(Synthesize(text="Hi there. Bye.", voice=voice).event())
            await read_until(client, {"audio-stop"}, timeout=120)

    asyncio.run(speak())
    started = time.monotonic()
    code, log = stop_server(running)
    assert code == 0, log
    # start-up says what it loads and warms up, one line per model and per voice
    assert "Loaded the Vocos vocoder" in log
    # and each voice's measured speed on this machine
    assert re.search(r"Warmed up \S+ \(1/\d+\) in [\d.]+ s; RTF [\d.]+: ", log), log
    # the request's metrics line, with the real stages' times
    assert re.search(
        r"Spoke voice rvc-v1: 14 chars, 2 sentence\(s\), first audio [\d.]+ s"
        r"( \(held [\d.]+ s\))?, total [\d.]+ s, "
        r"audio [\d.]+ s, RTF [\d.]+ \(t2s [\d.]+ s, s2a [\d.]+ s, vocoder [\d.]+ s, "
        r"rvc [\d.]+ s, resample [\d.]+ s\)",
        log,
    ), log
    assert time.monotonic() - started < 10
    assert "Stopping" in log


def test_offline_names_the_missing_file(tmp_path: Path) -> None:
    (tmp_path / "voices").mkdir()
    (tmp_path / "voices" / "v.yaml").write_text("languages: [en]\n")
    error = start_up_error("--data-dir", str(tmp_path), "--offline")
    assert "charactr/vocos-encodec-24khz:config.yaml" in error
    assert "offline" in error


def test_port_in_use_fails_before_loading_models(model_set: Path) -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        started = time.monotonic()
        error = start_up_error("--data-dir", str(model_set), "--uri", f"tcp://127.0.0.1:{port}")
    assert f"cannot listen on tcp://127.0.0.1:{port}: Address already in use" in error
    assert time.monotonic() - started < 30  # no model was loaded


def test_ctrl_c_during_start_up_exits_cleanly(model_set: Path) -> None:
    process = launch(model_set, "tcp://127.0.0.1:0")
    assert process.stderr is not None
    log = []
    for line in process.stderr:
        log.append(line)
        if "Loading the models" in line:
            process.send_signal(signal.SIGINT)
            break
    log.append(process.communicate(timeout=60)[1])
    text = "".join(log)
    assert process.returncode == 130, text
    assert "Interrupted during start-up" in text
    assert "Traceback" not in text


def test_zeroconf_registers_and_withdraws(model_set: Path) -> None:
    running = start_server(model_set, "--zeroconf", "wsrvc-e2e", *only(model_set, "greedy"))
    code, log = stop_server(running)
    assert code == 0, log
    assert re.search(r"Zeroconf: advertising wsrvc-e2e\._wyoming\._tcp\.local\. at [\d.]+:\d+", log)
    assert "0.0.0.0" not in log.split("Zeroconf: advertising")[1].split("\n")[0]
    assert "Zeroconf: withdrew wsrvc-e2e._wyoming._tcp.local." in log


async def test_rvc_voices_over_tcp(server: Server) -> None:
    voices = (
        ("rvc-v2", 40000),
        ("rvc-v1", 22050),
        ("applio-hifigan-24k", 24000),
        ("applio-mrf-24k", 24000),
        ("applio-refinegan-32k", 32000),
        ("applio-refinegan-3.2.9-32k", 32000),
    )
    for voice, rate in voices:
        async with AsyncTcpClient("127.0.0.1", server.port) as client:
            await client.write_event(
                Synthesize(
                    text="Turn on the light. Thanks!", voice=SynthesizeVoice(name=voice)
                ).event()
            )
            events = await read_until(client, {"audio-stop", "error"}, timeout=120)
        assert events[-1].type == "audio-stop", events[-1]
        rates = {AudioChunk.from_event(e).rate for e in events if e.type == "audio-chunk"}
        assert AudioStart.from_event(events[0]).rate == rate
        assert rates == {rate}
        audio = b"".join(AudioChunk.from_event(e).audio for e in events if e.type == "audio-chunk")
        assert len(audio) // 2 > rate * 0.3


def _bad_voice_set(model_set: Path, tmp_path: Path) -> Path:
    voices = tmp_path / "voices"
    voices.mkdir()
    (voices / "broken.pth").write_bytes(b"PK\x03\x04 truncated")
    for name in ("random", "rvc-v2"):
        profile = yaml.safe_load((model_set / "voices" / f"{name}.yaml").read_text())
        for key in ("t2s", "s2a"):
            profile["whisperspeech"][key] = str(
                model_set / "models" / Path(profile["whisperspeech"][key]).name
            )
        if "rvc" in profile:
            profile["rvc"]["index"] = str(model_set / "models" / Path(profile["rvc"]["index"]).name)
            profile["rvc"]["model"] = "broken.pth"
        (voices / f"{name}.yaml").write_text(yaml.safe_dump(profile))
    return voices


def test_bad_voice_file_is_refused_or_skipped(model_set: Path, tmp_path: Path) -> None:
    voices = _bad_voice_set(model_set, tmp_path)
    error = start_up_error("--data-dir", str(model_set), "--voices", str(voices), "--offline")
    assert "rvc-v2.yaml" in error
    assert "broken.pth" in error
    assert "truncated" in error
    running = start_server(model_set, "--voices", str(voices), "--skip-bad-voices")
    code, log = stop_server(running)
    assert code == 0
    assert "Skipping voice rvc-v2" in log
    assert "with 1 voice(s)" in log


def test_sigterm_during_synthesis(model_set: Path) -> None:
    """SIGTERM while a long request is being synthesized: exit 0 within seconds, zeroconf withdrawn."""
    running = start_server(model_set, "--zeroconf", "wsrvc-term", *only(model_set, "rvc-v2"))

    async def start_long_request() -> AsyncTcpClient:
        client = AsyncTcpClient("127.0.0.1", running.port)
        await client.connect()
        text = " ".join(f"This is sentence number {i} of a long answer." for i in range(40))
        await client.write_event(
            Synthesize(text=text, voice=SynthesizeVoice(name="rvc-v2")).event()
        )
        await read_until(client, {"audio-chunk"}, timeout=60)
        return client

    loop = asyncio.new_event_loop()
    try:
        client = loop.run_until_complete(start_long_request())
        started = time.monotonic()
        code, log = stop_server(running)
        assert code == 0, log
        assert time.monotonic() - started < 8
        assert "Zeroconf: withdrew wsrvc-term._wyoming._tcp.local." in log
        loop.run_until_complete(client.disconnect())
    finally:
        loop.close()


def test_stdio_uri_serves_describe_and_synthesis(model_set: Path) -> None:
    """`--uri stdio://`: one connection over stdin/stdout, as wyoming-piper is tested."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "wyoming_wsrvc",
            "--data-dir",
            str(model_set),
            "--offline",
            "--uri",
            "stdio://",
            *only(model_set, "greedy"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        write_event(Describe().event(), cast(BinaryIO, process.stdin))
        process.stdin.flush()
        event = read_event(cast(BinaryIO, process.stdout))
        assert event is not None
        assert Info.is_type(event.type)
        names = {v.name for v in Info.from_event(event).tts[0].voices}
        assert "greedy" in names
        write_event(
            Synthesize(text="Hi.", voice=SynthesizeVoice(name="greedy")).event(),
            cast(BinaryIO, process.stdin),
        )
        process.stdin.flush()
        types = []
        while (event := read_event(cast(BinaryIO, process.stdout))) is not None:
            types.append(event.type)
            if event.type in ("audio-stop", "error"):
                break
        assert types[0] == "audio-start"
        assert types[-1] == "audio-stop"
        assert "audio-chunk" in types
    finally:
        process.stdin.close()
        process.wait(timeout=30)
    assert process.returncode == 0


def test_light_entry_points_import_no_torch() -> None:
    """The health check runs every 30 s on small hosts; `--help` should answer at once."""
    code = (
        "import sys, wyoming_wsrvc.server.healthcheck, wyoming_wsrvc.__main__; "
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False, timeout=60).returncode == 0
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "wyoming_wsrvc", "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0
    assert "--threads" in result.stdout
    assert time.monotonic() - started < 5


def test_non_editable_install_ships_the_default_voices(tmp_path: Path) -> None:
    """A `pip install .` (as the Docker image does) has the example profile as package data."""
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            str(REPO),
        ],
        check=True,
        timeout=300,
    )
    folder = subprocess.run(
        [sys.executable, "-m", "wyoming_wsrvc.example_voices"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(target)},
        cwd=tmp_path,
    ).stdout.strip()
    assert Path(folder).is_relative_to(target)
    profile = yaml.safe_load((Path(folder) / "example.yaml").read_text())
    assert profile["name"] == "example"
