"""The HTTP side over real sockets, on a real engine (random weights in the real formats): OpenAI's
speech API (streamed, each format decodable, the same audio as Wyoming), its errors (OpenAI's
shape, the Wyoming codes), `/v1/voices`, `/metrics` as Prometheus parses it, and the studio's
API (add a voice from an uploaded `.pth`, tune, save, remove), each checked through a Wyoming
client too."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import soundfile
import yaml
from prometheus_client.parser import text_string_to_metric_families

from wyoming_wsrvc.audio import Audio, resample, to_pcm16
from wyoming_wsrvc.config.http_settings import HttpSettings
from wyoming_wsrvc.devtools.loopback import speak
from wyoming_wsrvc.web.encoders import mp3_frame_length

from .conftest import eventually
from .studio_world import (
    Studio,
    StudioWorld,
    studio_serving,
)
from .test_hot_reload import info_voices

pytestmark = pytest.mark.slow

TEXT = "The kitchen light is on. The front door is locked."


async def post_speech(studio: Studio, **body: Any) -> aiohttp.ClientResponse:
    return await studio.http.post(studio.url("v1/audio/speech"), json=body)


async def error_of(response: aiohttp.ClientResponse) -> dict[str, Any]:
    body = await response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    return error


async def test_openai_wav_streams_the_audio_a_wyoming_client_hears(studio: Studio) -> None:
    heard = await speak(studio.port, TEXT, "alice")
    response = await post_speech(
        studio, model="tts-1", input=TEXT, voice="alice", response_format="wav"
    )
    assert response.status == 200
    assert response.headers["Content-Type"] == "audio/wav"
    assert response.headers["Transfer-Encoding"] == "chunked"  # streamed as it is made
    body = await response.read()
    assert body[:4] == b"RIFF"
    assert body[8:16] == b"WAVEfmt "
    rate = int.from_bytes(body[24:28], "little")
    assert rate == int(response.headers["X-Sample-Rate"]) == next(iter(heard.rates))
    assert body[44:] == heard.audio
    decoded, decoded_rate = soundfile.read(io.BytesIO(body), dtype="int16")
    assert decoded_rate == rate
    assert len(decoded) == len(heard.audio) // 2


def mp3_frames(data: bytes) -> list[bytes]:
    frames, position = [], 0
    while position < len(data):
        length = mp3_frame_length(data[position : position + 4])
        assert length is not None, f"no frame at byte {position}"
        frames.append(data[position : position + length])
        position += length
    assert position == len(data)
    return frames


def decode(data: bytes) -> tuple[np.ndarray, int]:
    """Decode a streamed file as a player does: block by block to its end (a streamed FLAC's
    header says "length unknown")."""
    blocks = []
    with soundfile.SoundFile(io.BytesIO(data)) as file:
        while len(block := file.read(4096, dtype="float32")):
            blocks.append(block)
        return np.concatenate(blocks), file.samplerate


async def test_openai_pcm_is_24_khz_and_other_formats_decode(studio: Studio) -> None:
    heard = await speak(studio.port, TEXT, "rvc")
    (rate,) = heard.rates
    assert rate == 40000
    seconds = len(heard.audio) / 2 / rate
    response = await post_speech(studio, input=TEXT, voice="rvc", response_format="pcm")
    assert response.status == 200
    assert response.headers["X-Sample-Rate"] == "24000"
    pcm = np.frombuffer(await response.read(), dtype="<i2")
    assert abs(len(pcm) / 24000 - seconds) < 0.01
    # the RVC voice is not the same twice (its noise), so its length is what is compared
    for name, content_type in (("flac", "audio/flac"), ("opus", "audio/ogg")):
        response = await post_speech(studio, input=TEXT, voice="rvc", response_format=name)
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"] == content_type
        audio, decoded_rate = decode(await response.read())
        assert decoded_rate == {"flac": 40000, "opus": 48000}[name]
        assert abs(len(audio) / decoded_rate - seconds) < 0.1, name
        assert np.abs(audio).max() > 0.001, name
    response = await post_speech(studio, input=TEXT, voice="rvc", response_format="mp3")
    assert response.headers["Content-Type"] == "audio/mpeg"
    data = await response.read()
    frames = mp3_frames(data)  # every byte is an MPEG-1 Layer III frame at 48 kHz
    assert abs(len(frames) * 1152 / 48000 - seconds) < 0.1
    audio, _ = decode(data)
    assert np.abs(audio).max() > 0.001


async def test_openai_pcm_is_the_wyoming_audio_resampled(studio: Studio) -> None:
    heard = await speak(studio.port, TEXT, "alice")
    response = await post_speech(studio, input=TEXT, voice="alice", response_format="pcm")
    pcm = np.frombuffer(await response.read(), dtype="<i2").astype(np.int32)
    source = Audio(np.frombuffer(heard.audio, dtype="<i2").astype(np.float32) / 32768, 24000)
    reference = np.frombuffer(to_pcm16(resample(source, 24000)), dtype="<i2").astype(np.int32)
    assert np.array_equal(pcm, reference)  # alice speaks at 24 kHz already: nothing resampled


async def test_openai_errors_have_openai_shape_and_wyoming_codes(studio: Studio) -> None:
    response = await post_speech(studio, input=TEXT, voice="nobody")
    assert response.status == 400
    error = await error_of(response)
    assert error["code"] == "unknown-voice"
    assert error["param"] == "voice"
    assert error["type"] == "invalid_request_error"
    response = await post_speech(studio, input=TEXT, voice="alice", response_format="aac")
    assert (await error_of(response))["code"] == "unsupported-format"
    response = await post_speech(studio, input="x" * 10_001, voice="alice")
    assert response.status == 400
    assert (await error_of(response))["code"] == "text-too-long"  # the Wyoming event's code
    response = await post_speech(studio, input="", voice="alice")
    assert (await error_of(response))["param"] == "input"
    response = await post_speech(studio, input=TEXT, voice="alice", speed=9)
    assert (await error_of(response))["param"] == "speed"
    response = await studio.http.post(studio.url("v1/audio/speech"), data=b"{not json")
    assert (await error_of(response))["code"] == "invalid-request"
    # OpenAI's own voice names, which apps send by default, speak with the default voice
    response = await post_speech(studio, input="Hello.", voice="alloy", response_format="wav")
    assert response.status == 200
    assert response.headers["X-Voice"] == "alice"
    assert len(await response.read()) > 44


async def test_openai_speed_changes_the_speaking_rate(studio: Studio) -> None:
    lengths = []
    for speed in (1.0, 0.5):
        response = await post_speech(
            studio, input=TEXT, voice="alice", response_format="pcm", speed=speed
        )
        assert response.status == 200
        lengths.append(len(await response.read()))
    assert lengths[1] > lengths[0] * 1.3  # half as fast: the budget of tokens grows


async def test_voices_and_models_lists(studio: Studio) -> None:
    async with studio.http.get(studio.url("v1/voices")) as response:
        body = await response.json()
    assert body["voices"] == ["alice", "rvc"]
    assert body["data"][0] == {
        "id": "alice",
        "object": "voice",
        "name": "alice (random weights)",
        "languages": ["en", "en_US"],
        "default": True,
    }
    async with studio.http.get(studio.url("v1/models")) as response:
        assert "tts-1" in [model["id"] for model in (await response.json())["data"]]


def samples(families: dict[str, Any], name: str, **labels: str) -> list[Any]:
    return [
        s
        for s in families[name].samples
        if all(s.labels.get(key) == value for key, value in labels.items())
    ]


async def test_metrics_in_prometheus_text_format(studio: Studio) -> None:
    await speak(studio.port, TEXT, "alice")
    response = await post_speech(studio, input=TEXT, voice="alice", response_format="wav")
    await response.read()
    await post_speech(studio, input="x" * 10_001, voice="alice")
    async with studio.http.get(studio.url("metrics")) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    requests = samples(families, "wsrvc_requests", voice="alice")
    assert {(s.labels["api"], s.value) for s in requests} == {("wyoming", 1.0), ("http", 1.0)}
    errors = samples(families, "wsrvc_errors", code="text-too-long", api="http")
    assert [s.value for s in errors] == [1.0]
    first = samples(families, "wsrvc_first_audio_seconds", voice="alice")
    assert [s.value for s in first if s.name.endswith("_count")] == [2.0]
    assert [s.value for s in first if s.labels.get("le") == "+Inf"] == [2.0]
    rtf = samples(families, "wsrvc_real_time_factor", voice="alice")
    assert [s.value for s in rtf if s.name.endswith("_count")] == [2.0]
    rows = samples(families, "wsrvc_decode_rows")
    assert next(s.value for s in rows if s.name.endswith("_count")) > 0
    assert samples(families, "wsrvc_queue_length")[0].value == 0
    assert samples(families, "wsrvc_voices")[0].value == 2


async def add_voice(
    studio: Studio, files: dict[str, tuple[str, bytes]], **profile: Any
) -> aiohttp.ClientResponse:
    form = aiohttp.FormData()
    form.add_field("profile", json.dumps(profile), content_type="application/json")
    for name, (filename, data) in files.items():
        form.add_field(name, data, filename=filename, content_type="application/octet-stream")
    return await studio.http.post(studio.url("api/voices"), data=form)


async def follow(studio: Studio, job: dict[str, Any]) -> dict[str, Any]:
    states: list[dict[str, Any]] = [job]

    async def done() -> bool:
        async with studio.http.get(studio.url(f"api/jobs/{job['id']}")) as response:
            states.append(await response.json())
        return bool(states[-1]["state"] != "running")

    for _ in range(600):
        if await done():
            break
        await __import__("asyncio").sleep(0.1)
    return states[-1]


async def test_add_tune_save_and_remove_a_voice(studio: Studio, studio_world: StudioWorld) -> None:
    pth = studio_world.new_pth(studio.folder.parent / "upload.pth").read_bytes()
    response = await add_voice(
        studio,
        {"model": ("Fancy Voice.pth", pth)},
        name="fancy",
        description="Fancy",
        languages=["en"],
        speech_from="alice",
        rvc={"pitch_shift": 2, "f0_method": "rmvpe"},
    )
    assert response.status == 202, await response.text()
    job = await follow(studio, await response.json())
    assert job["state"] == "done", job
    assert job["step"].startswith("ready: RTF")
    assert await info_voices(studio.port) == ["alice", "rvc", "fancy"]  # by file: studio-…
    (profile_file,) = studio.folder.glob("studio-*.yaml")
    document = yaml.safe_load(profile_file.read_text())
    stored = studio.folder / profile_file.stem / "model.pth"
    assert document["rvc"]["model"] == f"{profile_file.stem}/model.pth"
    assert stored.read_bytes() == pth  # the client's file name is not used
    assert document["whisperspeech"]["t2s"] == "../models/t2s.model"  # alice's speech
    heard = await speak(studio.port, TEXT, "fancy")
    assert heard.error is None
    assert heard.rates == frozenset({40000})
    assert heard.audio
    # tune and hear: the draft is spoken, nothing is saved
    settings = {"rvc": {"pitch_shift": 5, "index_rate": 0.5}, "sentence_pause": 0.4}
    async with studio.http.post(
        studio.url("api/speak"), json={"voice": "fancy", "text": TEXT, "settings": settings}
    ) as response:
        assert response.status == 200
        assert response.headers["X-Sample-Rate"] == "40000"
        drafted = await response.read()
    assert yaml.safe_load(profile_file.read_text())["rvc"]["pitch_shift"] == 2
    # save: the file and the served voice change
    async with studio.http.put(
        studio.url("api/voices/fancy"), json={"settings": settings}
    ) as response:
        assert response.status == 200, await response.text()
    saved = yaml.safe_load(profile_file.read_text())
    assert saved["rvc"]["pitch_shift"] == 5
    assert saved["sentence_pause"] == 0.4
    fancy = studio.context.catalog.voices["fancy"]
    assert fancy.rvc is not None
    assert fancy.rvc.pitch_shift == 5
    heard = await speak(studio.port, TEXT, "fancy")
    assert len(heard.audio) == len(drafted)  # the saved settings are what was heard
    assert not await studio.context.catalog.reload()  # the file on disk is what is served
    # remove: its profile and the files the studio stored go, nothing else
    async with studio.http.delete(studio.url("api/voices/fancy")) as response:
        assert response.status == 200
    assert not profile_file.exists()
    assert not stored.parent.exists()
    assert await info_voices(studio.port) == ["alice", "rvc"]
    assert sorted(p.name for p in studio.folder.iterdir()) == ["alice.yaml", "rvc.yaml"]


async def test_a_voice_with_its_own_speaker(studio: Studio, studio_world: StudioWorld) -> None:
    pth = studio_world.new_pth(studio.folder.parent / "upload.pth").read_bytes()
    speaker = io.BytesIO()
    np.save(speaker, np.random.default_rng(3).normal(size=192).astype(np.float32))
    response = await add_voice(
        studio,
        {"model": ("v.pth", pth), "speaker": ("me.npy", speaker.getvalue())},
        name="own",
        languages=["en"],
        speech_from="alice",
    )
    job = await follow(studio, await response.json())
    assert job["state"] == "done", job
    own = studio.context.catalog.voices["own"]
    assert own.whisperspeech.speaker is not None
    assert own.whisperspeech.speaker.name == "speaker.npy"
    assert own.whisperspeech.speaker.parent.name.startswith("studio-")
    async with studio.http.get(studio.url("api/voices")) as listed:
        described = next(v for v in (await listed.json())["voices"] if v["name"] == "own")
    assert described["source"] == {
        "kind": "whisperspeech",
        "preset": "fast",
        "models": ["t2s.model", "s2a.model"],
        "speaker": True,
    }
    assert described["rvc"]["vocoder"] == "HiFi-GAN"
    heard = await speak(studio.port, TEXT, "own")
    assert heard.error is None
    assert heard.audio


async def test_a_bad_profile_is_refused_with_its_field_and_leaves_nothing(
    studio: Studio, studio_world: StudioWorld
) -> None:
    pth = studio_world.new_pth(studio.folder.parent / "upload.pth").read_bytes()
    response = await add_voice(
        studio,
        {"model": ("v.pth", pth)},
        name="v",
        languages=["en"],
        speech_from="alice",
        rvc={"pitch_shift": 40},
    )
    error = await error_of(response)
    assert response.status == 400
    assert error["code"] == "invalid-profile"
    assert error["param"] == "rvc.pitch_shift"
    assert "rvc.pitch_shift: must be between -24.0 and 24.0, got 40" in error["message"]
    assert sorted(p.name for p in studio.folder.iterdir()) == ["alice.yaml", "rvc.yaml"]


class Evil:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (print, ("this ran while the file loaded",))


async def test_a_voice_file_the_strict_loader_refuses_fails_its_job_and_leaves_nothing(
    studio: Studio,
) -> None:
    import torch

    buffer = io.BytesIO()  # a pickle that would run code when loaded by a plain torch.load
    torch.save({"weight": {"x": torch.zeros(1)}, "config": [Evil()]}, buffer)
    response = await add_voice(
        studio,
        {"model": ("evil.pth", buffer.getvalue())},
        name="evil",
        languages=["en"],
        speech_from="alice",
    )
    assert response.status == 202
    job = await follow(studio, await response.json())
    assert job["state"] == "failed"
    assert "evil" not in studio.context.catalog.voices
    assert "model.pth" in job["error"]
    assert "\n" not in job["error"]
    await eventually(
        lambda: sorted(p.name for p in studio.folder.iterdir()) == ["alice.yaml", "rvc.yaml"]
    )


async def test_uploads_are_limited_and_never_name_a_path(
    studio_world: StudioWorld, tmp_path: Path
) -> None:
    pth = studio_world.new_pth(tmp_path / "upload.pth").read_bytes()
    assert len(pth) > 64 * 1024
    limited = HttpSettings(host="127.0.0.1", port=0, max_upload_bytes=64 * 1024)
    async for studio in studio_serving(studio_world, tmp_path, limited):
        before = sorted(p.name for p in studio.folder.iterdir())
        voice: dict[str, Any] = {"name": "v", "languages": ["en"], "speech_from": "alice"}
        response = await add_voice(studio, {"model": ("v.pth", pth)}, **voice)
        assert response.status == 413
        assert (await error_of(response))["code"] == "too-large"
        small = pth[: 32 * 1024]
        refusals: list[tuple[dict[str, tuple[str, bytes]], dict[str, Any], str]] = [
            ({"model": ("v.txt", small)}, voice, "model"),  # not a .pth
            ({"model": ("v.pth", small), "notes": ("a.txt", b"x")}, voice, "notes"),
            # a path of the client's, in the profile or as a name
            ({"model": ("v.pth", small)}, {**voice, "rvc": {"model": "../../x.pth"}}, "rvc.model"),
            ({"model": ("v.pth", small)}, {**voice, "rvc": {"index": "/etc/passwd"}}, "rvc.index"),
            ({"model": ("v.pth", small)}, {**voice, "name": "../../escape"}, "name"),
            ({"model": ("v.pth", small)}, {**voice, "rvc": {"embedder": "/tmp"}}, "rvc.embedder"),
            ({}, voice, "model"),  # no voice file
        ]
        for files, fields, param in refusals:
            response = await add_voice(studio, files, **fields)
            assert response.status == 400, (param, await response.text())
            assert (await error_of(response))["param"] == param
        # the name in the address is looked up, never followed
        async with studio.http.delete(studio.url("api/voices/..%2Falice.yaml")) as response:
            assert response.status == 400
            assert (await error_of(response))["code"] == "unknown-voice"
        assert sorted(p.name for p in studio.folder.iterdir()) == before  # nothing left behind
        assert (studio.folder / "alice.yaml").exists()
