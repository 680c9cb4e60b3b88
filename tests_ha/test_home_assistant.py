"""What Home Assistant users get: the real integration, end to end (see conftest.py).

Home Assistant advertises-driven: our Info says it streams, so Home Assistant sends every
request as a stream (synthesize-start, chunks, a compatibility synthesize, synthesize-stop) and
writes its WAV header from the first audio-start.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncGenerator

import aiohttp
import pytest
import yaml
from mutagen.mp3 import MP3
from wyoming.client import AsyncTcpClient

from .conftest import (
    IDLE_TIMEOUT,
    HomeAssistantUnderTest,
    Server,
    Wav,
    direct,
    raises_error_events,
    read_wav,
    rereads_info,
)

TEXT = "Turn on the light. The kitchen is warm."
VOICES = ("greedy", "greedy-rvc")  # a plain WhisperSpeech voice and an RVC voice


def _stream(ha: HomeAssistantUnderTest, voice: str, **options: object):  # type: ignore[no-untyped-def]
    from homeassistant.components import tts

    return tts.async_create_stream(ha.hass, ha.entity_id, "en", {"voice": voice, **options})


async def _collect(stream) -> bytes:  # type: ignore[no-untyped-def]
    return b"".join([chunk async for chunk in stream.async_stream_result()])


async def speak(ha: HomeAssistantUnderTest, text: str, voice: str, **options: object) -> bytes:
    """Finished text, as an automation's tts.speak sends it."""
    stream = _stream(ha, voice, preferred_format="wav", **options)
    stream.async_set_message(text)
    return await asyncio.wait_for(_collect(stream), 180)


async def speak_streamed(
    ha: HomeAssistantUnderTest,
    chunks: list[str],
    voice: str,
    pause: tuple[int, float] | None = None,
) -> bytes:
    """Text as an LLM streams it: small chunks, optionally a long pause before chunk N."""

    async def text() -> AsyncGenerator[str]:
        for index, chunk in enumerate(chunks):
            if pause is not None and index == pause[0]:
                await asyncio.sleep(pause[1])
            await asyncio.sleep(0.005)
            yield chunk

    stream = _stream(ha, voice, preferred_format="wav")
    stream.async_set_message_stream(text())
    return await asyncio.wait_for(_collect(stream), 180)


def pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


async def test_config_flow_entity_voices_and_languages(
    home_assistant: HomeAssistantUnderTest,
) -> None:
    from homeassistant.components.tts.const import DATA_COMPONENT

    ha = home_assistant
    entity = ha.hass.data[DATA_COMPONENT].get_entity(ha.entity_id)  # type: ignore[attr-defined]
    assert entity is not None
    assert ha.entry_title == "wsrvc"
    assert {"en", "en_US"} <= set(entity.supported_languages)
    assert entity.async_supports_streaming_input()
    voices = {voice.voice_id: voice.name for voice in entity.async_get_supported_voices("en")}
    assert voices["greedy"] == "greedy (deterministic speech)"
    assert {"greedy-rvc", "rvc-v1", "applio-refinegan-32k"} <= set(voices)


@pytest.mark.parametrize("voice", VOICES)
async def test_finished_text(
    home_assistant: HomeAssistantUnderTest, server: Server, voice: str
) -> None:
    rate, samples = await direct(server, TEXT, voice)
    wav = read_wav(await speak(home_assistant, TEXT, voice))
    assert (wav.rate, wav.channels, wav.width) == (rate, 1, 2)
    assert wav.frames == samples
    assert any(wav.data)


@pytest.mark.parametrize("voice", VOICES)
async def test_streamed_text_in_small_chunks(
    home_assistant: HomeAssistantUnderTest, server: Server, voice: str
) -> None:
    rate, samples = await direct(server, TEXT, voice)
    wav = read_wav(await speak_streamed(home_assistant, pieces(TEXT, 3), voice))
    assert (wav.rate, wav.frames) == (rate, samples)


async def test_ffmpeg_conversions_and_the_http_proxy(
    home_assistant: HomeAssistantUnderTest, server: Server
) -> None:
    """What a satellite gets (16 kHz mono WAV) and a media player (MP3), fetched through Home
    Assistant's TTS proxy URL as they fetch it."""
    rate, samples = await direct(server, TEXT, "greedy-rvc")
    seconds = samples / rate
    async with aiohttp.ClientSession() as session:
        for options in (
            {
                "preferred_format": "wav",
                "preferred_sample_rate": 16000,
                "preferred_sample_channels": 1,
            },
            {"preferred_format": "mp3"},
        ):
            stream = _stream(home_assistant, "greedy-rvc", **options)
            stream.async_set_message(TEXT)
            url = f"http://127.0.0.1:{home_assistant.http_port}{stream.url}"
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=180)) as response:
                assert response.status == 200
                body = await response.read()
            if options["preferred_format"] == "wav":
                wav = read_wav(body)
                assert (wav.rate, wav.channels) == (16000, 1)
                assert wav.frames == pytest.approx(seconds * 16000, abs=0.02 * 16000)
            else:
                assert MP3(io.BytesIO(body)).info.sample_rate == rate
                # decoded by ffmpeg: mp3 adds an encoder delay and pads its last frame
                ffmpeg = await asyncio.create_subprocess_exec(
                    *("ffmpeg", "-v", "error", "-i", "pipe:", "-f", "s16le", "-ac", "1", "pipe:"),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                )
                decoded, _ = await ffmpeg.communicate(body)
                assert ffmpeg.returncode == 0
                assert len(decoded) / 2 / rate == pytest.approx(seconds, abs=0.1)


async def test_ssml_in_a_stream_is_not_read_aloud(
    home_assistant: HomeAssistantUnderTest, server: Server
) -> None:
    ssml = '<speak>Turn on the <emphasis>light</emphasis>.<break time="3s"/>The kitchen is warm.</speak>'
    rate, samples = await direct(server, TEXT, "greedy")
    wav = read_wav(await speak_streamed(home_assistant, pieces(ssml, 5), "greedy"))
    assert (wav.rate, wav.frames) == (rate, samples)


async def test_a_long_pause_mid_answer_keeps_the_whole_answer(
    home_assistant: HomeAssistantUnderTest, server: Server
) -> None:
    """An LLM calling a tool mid-answer pauses longer than the idle timeout."""
    rate, samples = await direct(server, TEXT, "greedy")
    chunks = ["Turn on the light. ", "The kitchen ", "is warm."]
    wav = read_wav(
        await speak_streamed(home_assistant, chunks, "greedy", pause=(1, 2.5 * IDLE_TIMEOUT))
    )
    assert (wav.rate, wav.frames) == (rate, samples)


async def test_empty_text_gives_a_valid_wav(
    home_assistant: HomeAssistantUnderTest, server: Server
) -> None:
    rate, samples = await direct(server, "", "greedy")
    stream = _stream(home_assistant, "greedy", preferred_format="wav")
    stream.async_set_message("")
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{home_assistant.http_port}{stream.url}"
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=60)) as response:
            assert response.status == 200
            wav: Wav = read_wav(await response.read())
    assert wav.rate == rate
    assert wav.frames == samples  # the tail silence: a short, valid WAV


async def test_unknown_voice_is_spoken_and_logged(
    home_assistant: HomeAssistantUnderTest, server: Server
) -> None:
    """An unknown voice (a pipeline still set to a voice that was removed) is spoken with the
    default voice, and the server's log names the voice asked for: 2026.2 would read past an
    `error` event and 2026.3+ raises it, so either way an error would leave the user in
    silence."""
    rate, samples = await direct(server, TEXT, "greedy")
    wav = read_wav(await speak_streamed(home_assistant, pieces(TEXT, 4), "no-such-voice"))
    assert (wav.rate, wav.frames) == (rate, samples)
    log = server.log_text()
    assert log.count("Unknown voice 'no-such-voice' requested; speaking with 'greedy'") == 1


async def test_two_requests_at_once(home_assistant: HomeAssistantUnderTest, server: Server) -> None:
    expected = [await direct(server, TEXT, voice) for voice in VOICES]
    results = await asyncio.gather(
        speak_streamed(home_assistant, pieces(TEXT, 3), VOICES[0]),
        speak(home_assistant, TEXT, VOICES[1]),
    )
    for (rate, samples), data in zip(expected, results, strict=True):
        wav = read_wav(data)
        assert (wav.rate, wav.frames) == (rate, samples)


async def test_metrics_line_per_request(server: Server) -> None:
    """Each request (including Home Assistant's above) logs one INFO metrics line."""
    await direct(server, "Hello there.", "greedy-rvc")
    lines = [line for line in server.log_text().splitlines() if "Spoke voice greedy-rvc" in line]
    assert lines
    assert "rvc " in lines[-1]
    assert "first audio" in lines[-1]


LAYER_TEXT = "Turn on the kitchen light. The weather is sunny today."


async def served_voices(server: Server) -> set[str]:
    """The voices the server's Info lists now."""
    from wyoming.info import Describe, Info

    async with AsyncTcpClient("127.0.0.1", server.port) as client:
        await client.write_event(Describe().event())
        while True:
            event = await asyncio.wait_for(client.read_event(), 30)
            assert event is not None
            if Info.is_type(event.type):
                info = Info.from_event(event)
                return {voice.name for program in info.tts for voice in program.voices}


def _voices(ha: HomeAssistantUnderTest) -> set[str]:
    from homeassistant.components.tts.const import DATA_COMPONENT

    entity = ha.hass.data[DATA_COMPONENT].get_entity(ha.entity_id)  # type: ignore[attr-defined]
    return {voice.voice_id for voice in entity.async_get_supported_voices("en")}


@pytest.mark.parametrize("voice", ["joe-plain", "joe-rvc"])
@pytest.mark.parametrize("streamed", [False, True], ids=["finished", "streamed"])
async def test_layer_voices_with_the_real_piper(
    home_assistant: HomeAssistantUnderTest, server: Server, voice: str, streamed: bool
) -> None:
    """Layer mode through Home Assistant: the real Piper voice's speech as it is (joe-plain) and
    converted by an RVC voice (joe-rvc). Piper samples its durations, so two answers to the same
    text differ a little in length."""
    rate, samples = await direct(server, LAYER_TEXT, voice)
    if streamed:
        data = await speak_streamed(home_assistant, pieces(LAYER_TEXT, 4), voice)
    else:
        data = await speak(home_assistant, LAYER_TEXT, voice)
    wav = read_wav(data)
    assert (wav.rate, wav.channels, wav.width) == (rate, 1, 2)
    assert wav.frames == pytest.approx(samples, rel=0.15)
    assert wav.frames > 2 * rate  # two sentences of speech, not a fragment
    assert max(abs(s) for s in memoryview(wav.data).cast("h")) > 1000


async def test_upstream_stopped_mid_answer(
    home_assistant: HomeAssistantUnderTest, server: Server
) -> None:
    """Piper stops after a little of its answer: the server ends the request with an
    `upstream-failed` error. Home Assistant 2026.3+ raises it (HomeAssistantError: the user is told
    the TTS failed); 2026.2 reads past it and plays what came (the server then ends the stream, so
    nothing hangs). The next answer is whole again."""
    from homeassistant.exceptions import HomeAssistantError

    rate, full = await direct(server, LAYER_TEXT, "joe-plain")
    server.relay.cut_after = 8000  # bytes of Piper's answer: a few audio chunks
    try:
        if raises_error_events():
            with pytest.raises(HomeAssistantError, match="upstream"):
                await speak_streamed(home_assistant, pieces(LAYER_TEXT, 4), "joe-cut")
        else:
            wav = read_wav(await speak_streamed(home_assistant, pieces(LAYER_TEXT, 4), "joe-cut"))
            assert wav.rate == rate
            assert wav.frames < full / 2
    finally:
        server.relay.cut_after = None
    assert server.relay.cuts >= 1
    assert "upstream-failed" in server.log_text() or "upstream tcp://" in server.log_text()
    wav = read_wav(await speak_streamed(home_assistant, pieces(LAYER_TEXT, 4), "joe-cut"))
    assert wav.frames == pytest.approx(full, rel=0.15)


async def test_voices_added_and_removed_while_running(
    home_assistant: HomeAssistantUnderTest, server: Server
) -> None:
    """A profile dropped into the voices folder is served at once (the server watches it). Home
    Assistant 2026.3+ re-reads Info every 30 s, so it offers the voice within that without any
    action; 2026.2 reads Info only when the integration is set up, so there it shows after a
    reload of the integration. A removed voice leaves the list the same way; a request that still
    names it is spoken with the default voice."""
    ha = home_assistant
    profile = yaml.safe_load((server.voices / "greedy.yaml").read_text())
    profile["name"] = "added-later"
    profile["description"] = "added while Home Assistant runs"
    (server.voices / "added-later.yaml").write_text(yaml.safe_dump(profile))

    async def until(condition, within: float) -> None:  # type: ignore[no-untyped-def]
        deadline = asyncio.get_running_loop().time() + within
        while not condition():
            assert asyncio.get_running_loop().time() < deadline, f"not within {within} s"
            await asyncio.sleep(0.5)

    if rereads_info():
        await until(lambda: "added-later" in _voices(ha), 30 + 10)  # one poll, and the load
    else:
        for _ in range(40):
            if "added-later" in await served_voices(server):
                break
            await asyncio.sleep(0.5)
        assert "added-later" in await served_voices(server)
        assert "added-later" not in _voices(ha)
        assert await ha.hass.config_entries.async_reload(ha.entry_id)  # type: ignore[attr-defined]
        await ha.hass.async_block_till_done()  # type: ignore[attr-defined]
        await until(lambda: "added-later" in _voices(ha), 20)
    rate, samples = await direct(server, TEXT, "greedy")
    wav = read_wav(await speak(ha, TEXT, "added-later"))
    assert (wav.rate, wav.frames) == (rate, samples)  # the same greedy speech under a new name

    (server.voices / "added-later.yaml").unlink()
    if rereads_info():
        await until(lambda: "added-later" not in _voices(ha), 30 + 10)
    else:
        for _ in range(40):
            if "added-later" not in await served_voices(server):
                break
            await asyncio.sleep(0.5)
        assert "added-later" not in await served_voices(server)
        assert "added-later" in _voices(ha)  # 2026.2 still offers it: a request may name it
    wav = read_wav(await speak_streamed(ha, pieces(TEXT, 4), "added-later"))
    assert (wav.rate, wav.frames) == (rate, samples)  # spoken by the default voice
    await until(
        lambda: (
            "Unknown voice 'added-later' requested; speaking with 'greedy'" in server.log_text()
        ),
        5,
    )
