"""The real Home Assistant (a release of tests_ha/versions) beside the real server process and
the real wyoming-piper.

Runs in the interpreter tests_ha/install.sh installed that release into (tests_ha/run.sh picks
it: `.venv-ha`, or the Debian sid folder for the newest); the server runs in the project's `.venv`
on a random-weight model set, as a separate process over TCP, the way Home Assistant meets it,
and its layer voices take their speech from wyoming-piper serving the real Piper voice
(`.venv-peers`, tests/peers/install.sh). Nothing in Home Assistant is mocked: it is bootstrapped
from a configuration.yaml, the Wyoming integration is added through its config flow, and speech
goes through its TTS manager, ffmpeg and HTTP proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import inspect
import os
import re
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from wyoming.audio import AudioChunk, AudioStart
from wyoming.client import AsyncTcpClient
from wyoming.tts import Synthesize, SynthesizeVoice

from wyoming_wsrvc.devtools.peers import PIPER_VOICE, CutRelay, Peers, piper

REPO = Path(__file__).resolve().parent.parent
SERVER_PYTHON = Path(os.environ.get("WSRVC_PYTHON", REPO / ".venv" / "bin" / "python"))
IDLE_TIMEOUT = 2.0  # seconds; short, so that a pause longer than it is quick to test
WATCH_INTERVAL = 1.0  # seconds between the server's checks of its voices folder


def rereads_info() -> bool:
    """This release's Wyoming integration re-reads Info every 30 s (2026.3 and later)."""
    return importlib.util.find_spec("homeassistant.components.wyoming.coordinator") is not None


def raises_error_events() -> bool:
    """This release's Wyoming TTS raises an `error` event as HomeAssistantError (2026.2 reads
    past it)."""
    from homeassistant.components.wyoming import tts

    return "Error.is_type" in inspect.getsource(tts)


CONFIGURATION = """\
homeassistant:
  name: wsrvc test home
  latitude: 52.37
  longitude: 4.89
  elevation: 0
  unit_system: metric
  time_zone: UTC
  country: NL
  language: en
http:
  server_host: 127.0.0.1
  server_port: {port}
ffmpeg:
"""


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    voices: Path
    relay: CutRelay  # in front of Piper for the voice joe-cut

    def log_text(self) -> str:
        return self.log.read_text()


@dataclass
class HomeAssistantUnderTest:
    hass: object  # homeassistant.core.HomeAssistant
    entity_id: str
    entry_title: str
    http_port: int
    entry_id: str


def _free_port() -> int:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as sock:
        return int(sock.getsockname()[1])


def _layer_voices(voices: Path, piper_uri: str, relay_uri: str) -> None:
    """joe-plain (the real Piper voice's speech), joe-rvc (converted by the v1 voice) and
    joe-cut (plain, through the relay that can cut Piper off mid-answer)."""
    rvc = yaml.safe_load((voices / "rvc-v1.yaml").read_text())["rvc"]
    common = {"languages": ["en", "en_US"], "sentence_pause": 0.2, "tail_silence": 0.1}
    for name, uri, extra in (
        ("joe-plain", piper_uri, {}),
        ("joe-rvc", piper_uri, {"rvc": rvc}),
        ("joe-cut", relay_uri, {}),
    ):
        profile = {**common, "upstream": {"uri": uri, "voice": PIPER_VOICE}, **extra}
        (voices / f"{name}.yaml").write_text(yaml.safe_dump(profile))


def _model_set(folder: Path) -> None:
    subprocess.run(
        [str(SERVER_PYTHON), "-m", "wyoming_wsrvc.devtools", "random-models", str(folder)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    voices = folder / "voices"
    for source, name in (("random", "greedy"), ("rvc-v1", "greedy-rvc")):
        profile = yaml.safe_load((voices / f"{source}.yaml").read_text())
        profile["name"] = name
        profile["description"] = f"{name} (deterministic speech)"
        profile["whisperspeech"]["temperature"] = 0.0
        (voices / f"{name}.yaml").write_text(yaml.safe_dump(profile))


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if not SERVER_PYTHON.exists():
        pytest.fail(f"{SERVER_PYTHON} is missing: install the project first (README)")
    peers = Peers.find(REPO)  # fails (never skips) without them, naming the install script
    data = tmp_path_factory.mktemp("models")
    _model_set(data)
    with contextlib.ExitStack() as stack:
        joe = stack.enter_context(piper(peers))
        relay = CutRelay(joe.port)
        stack.callback(relay.close)
        _layer_voices(data / "voices", joe.uri, relay.uri)
        log = data / "server.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [
                    *(str(SERVER_PYTHON), "-m", "wyoming_wsrvc", "--data-dir", str(data)),
                    *("--offline", "--uri", "tcp://127.0.0.1:0", "--default-voice", "greedy"),
                    *("--dtype", "float32", "--idle-timeout", str(IDLE_TIMEOUT)),
                    *("--watch-interval", str(WATCH_INTERVAL), "--no-phrase-cache"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=sink,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if match := re.search(r"Ready: listening on tcp://127\.0\.0\.1:(\d+)", log.read_text()):
                break
            if process.poll() is not None:
                pytest.fail("server did not start:\n" + log.read_text())
            time.sleep(0.2)
        else:
            process.kill()
            pytest.fail("server did not start in time:\n" + log.read_text())
        yield Server(process, int(match.group(1)), log, data / "voices", relay)
        process.terminate()
        process.wait()  # no timeout: Home Assistant patched time.sleep (blocking call detection)


@pytest.fixture(scope="session")
async def home_assistant(
    server: Server, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[HomeAssistantUnderTest]:
    """Home Assistant bootstrapped from configuration.yaml, the server added by the config flow.
    One instance for the session, as a real one serves request after request (and its blocking
    call detection can be switched on once per process)."""
    from homeassistant import bootstrap
    from homeassistant.runner import RuntimeConfig

    http_port = _free_port()
    config = tmp_path_factory.mktemp("ha") / "config"
    config.mkdir()
    (config / "configuration.yaml").write_text(CONFIGURATION.format(port=http_port))
    # skip_pip: tests_ha/install.sh installed the integrations' requirements
    hass = await bootstrap.async_setup_hass(RuntimeConfig(config_dir=str(config), skip_pip=True))
    assert hass is not None
    assert "recovery_mode" not in hass.config.components  # a real start, not the fallback
    await hass.async_start()
    try:
        result = await hass.config_entries.flow.async_init(
            "wyoming",
            context={"source": "user"},
            data={"host": "127.0.0.1", "port": server.port},
        )
        assert result["type"] == "create_entry", result
        await hass.async_block_till_done()
        entity_ids = [s.entity_id for s in hass.states.async_all("tts")]
        assert len(entity_ids) == 1, entity_ids
        yield HomeAssistantUnderTest(
            hass, entity_ids[0], str(result["title"]), http_port, result["result"].entry_id
        )
    finally:
        await hass.async_stop(force=True)


@dataclass(frozen=True)
class Wav:
    rate: int
    channels: int
    width: int
    frames: int
    data: bytes


def read_wav(wav: bytes) -> Wav:
    """A WAV as Home Assistant writes it: a streamed one says 0x7fffffff frames, so the frames
    are counted from the data that follows the header."""
    assert wav[:4] == b"RIFF", wav[:16]
    assert wav[8:12] == b"WAVE"
    position, fmt = 12, None
    while position + 8 <= len(wav):
        kind, size = (
            wav[position : position + 4],
            int.from_bytes(wav[position + 4 : position + 8], "little"),
        )
        body = position + 8
        if kind == b"fmt ":
            fmt = wav[body : body + size]
        elif kind == b"data":
            assert fmt is not None
            channels = int.from_bytes(fmt[2:4], "little")
            rate = int.from_bytes(fmt[4:8], "little")
            width = int.from_bytes(fmt[14:16], "little") // 8
            data = wav[body:]  # to the end: the declared size may be "unknown"
            return Wav(rate, channels, width, len(data) // (width * channels), data)
        position = body + size
    raise AssertionError("no data chunk")


async def direct(server: Server, text: str, voice: str) -> tuple[int, int]:
    """(rate, samples) the server itself sends for `text` as one `synthesize`."""
    rate, samples = 0, 0
    async with AsyncTcpClient("127.0.0.1", server.port) as client:
        await client.write_event(Synthesize(text=text, voice=SynthesizeVoice(name=voice)).event())
        while True:
            event = await asyncio.wait_for(client.read_event(), 120)
            assert event is not None
            if AudioStart.is_type(event.type):
                rate = AudioStart.from_event(event).rate
            elif AudioChunk.is_type(event.type):
                samples += len(AudioChunk.from_event(event).audio) // 2
            elif event.type == "audio-stop":
                return rate, samples
            elif event.type == "error":
                raise AssertionError(event.data)
