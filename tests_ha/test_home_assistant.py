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
from mutagen.mp3 import MP3

from .conftest import IDLE_TIMEOUT, HomeAssistantUnderTest, Server, Wav, direct, read_wav

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
    """Home Assistant 2026.2 ignores error events: the answer is spoken with the default voice
    and the server's log names the voice asked for."""
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
