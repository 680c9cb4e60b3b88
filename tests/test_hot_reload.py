"""Voices change without a restart: the voices folder is rescanned (on `describe`, and by the
watcher when files change); new and changed profiles are validated and warmed up before they are
swapped in, removed ones stop being offered, a broken one is reported while the voice it would
replace keeps serving, and a request already running finishes with the voice it started with.
Real sockets, real model files (random weights), a real Wyoming client."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from wyoming.client import AsyncTcpClient
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize, SynthesizeVoice

from wyoming_wsrvc.config.voices import VoiceProfile
from wyoming_wsrvc.devtools.loopback import speak
from wyoming_wsrvc.engine.cache import PhraseCache
from wyoming_wsrvc.engine.pipeline import Pipeline
from wyoming_wsrvc.engine.threads import use
from wyoming_wsrvc.engine.utterance import PcmAudio

from .conftest import eventually, read_until
from .studio_world import (
    Studio,
    StudioWorld,
    profile,
    write_profile,
)

pytestmark = pytest.mark.slow

TEXT = "The kitchen light is on. The front door is locked. It is sunny outside today."


async def info_voices(port: int) -> list[str]:
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Describe().event())
        event = await read_until(client, {"info"})
    return [voice.name for voice in Info.from_event(event[-1]).tts[0].voices]


def expected(pipeline: Pipeline, voice: VoiceProfile, text: str) -> bytes:
    """A one-shot answer as the server must send it: the sentences made inline, the profile's
    pauses between them and its tail after them (on one thread, as the test server runs)."""
    use(1)
    pause = pipeline.silence(voice, voice.sentence_pause).data
    sentences = [pcm.data for pcm in pipeline.synthesize(text, voice)]
    return pause.join(sentences) + pipeline.silence(voice, voice.tail_silence).data


async def test_a_profile_added_on_disk_is_offered_after_describe(studio: Studio) -> None:
    assert await info_voices(studio.port) == ["alice", "rvc"]
    write_profile(studio.folder, "bruno.yaml", profile("bruno", sentence_pause=0.3))
    # Home Assistant's describe (every 30 s) answers at once and starts the rescan
    assert "bruno" not in await info_voices(studio.port)
    catalog = studio.context.catalog
    await eventually(lambda: "bruno" in catalog.voices, within=60)
    assert await info_voices(studio.port) == ["alice", "bruno", "rvc"]
    heard = await speak(studio.port, TEXT, "bruno")
    bruno = catalog.voices["bruno"]
    assert heard.audio == expected(studio.context.pipeline, bruno, TEXT)
    assert catalog.speed("bruno") is not None  # warmed up and measured before it was offered


async def test_the_watcher_sees_changes_and_removals(studio: Studio) -> None:
    catalog = studio.context.catalog
    watcher = asyncio.create_task(catalog.watch(0.05))
    try:
        path = write_profile(studio.folder, "bruno.yaml", profile("bruno"))
        await eventually(lambda: "bruno" in catalog.voices, within=60)
        write_profile(studio.folder, "bruno.yaml", profile("bruno", sentence_pause=0.7))
        await eventually(lambda: catalog.voices["bruno"].sentence_pause == 0.7, within=60)
        path.unlink()
        await eventually(lambda: "bruno" not in catalog.voices, within=60)
    finally:
        watcher.cancel()
    assert await info_voices(studio.port) == ["alice", "rvc"]
    # a name nobody serves any more is spoken by the default voice (as for Home Assistant)
    heard = await speak(studio.port, "Hello there.", "bruno")
    assert heard.error is None
    assert heard.audio


async def test_a_broken_change_keeps_the_old_voice_and_is_reported(
    studio: Studio, caplog: pytest.LogCaptureFixture
) -> None:
    catalog = studio.context.catalog
    before = catalog.voices["alice"]
    path = studio.folder / "alice.yaml"
    write_profile(studio.folder, "alice.yaml", profile("alice", sentence_pause=99))
    assert await catalog.reload() == []
    assert catalog.voices["alice"] is before  # still serving, unchanged
    assert await info_voices(studio.port) == ["alice", "rvc"]
    problem = catalog.problems[path]
    assert "alice.yaml: sentence_pause: must be between 0.0 and 5.0, got 99" in problem
    assert any("sentence_pause" in r.getMessage() for r in caplog.records if r.levelname == "ERROR")
    async with studio.http.get(studio.url("api/voices")) as response:
        listed = await response.json()
    alice = next(v for v in listed["voices"] if v["name"] == "alice")
    assert "sentence_pause" in alice["problem"]
    heard = await speak(studio.port, TEXT, "alice")
    assert heard.audio == expected(studio.context.pipeline, before, TEXT)
    # fixed: swapped in, the problem gone
    write_profile(studio.folder, "alice.yaml", profile("alice", sentence_pause=0.4))
    assert await catalog.reload() == ["Reloaded voice alice (alice.yaml)"]
    assert catalog.voices["alice"].sentence_pause == 0.4
    assert path not in catalog.problems


async def test_a_new_voice_whose_model_does_not_load_is_reported_not_offered(
    studio: Studio,
) -> None:
    (studio.folder / "broken.pth").write_bytes(b"not a checkpoint")
    document = profile("broken", rvc={"model": "broken.pth"})
    write_profile(studio.folder, "broken.yaml", document)
    assert await studio.context.catalog.reload() == []
    assert "broken" not in studio.context.catalog.voices
    problem = studio.context.catalog.problems[studio.folder / "broken.yaml"]
    assert "broken.pth" in problem
    assert "\n" not in problem
    async with studio.http.get(studio.url("api/voices")) as response:
        problems = (await response.json())["problems"]
    assert problems == [{"file": "broken.yaml", "error": problem}]


async def test_a_request_under_way_finishes_with_the_voice_it_started_with(
    studio: Studio,
) -> None:
    catalog = studio.context.catalog
    pipeline = studio.context.pipeline
    old = catalog.voices["alice"]
    new = replace(old, sentence_pause=0.6, tail_silence=0.5)
    await catalog.prepare(new)
    async with AsyncTcpClient("127.0.0.1", studio.port) as client:
        await client.write_event(Synthesize(text=TEXT, voice=SynthesizeVoice(name="alice")).event())
        first = await read_until(client, {"audio-chunk"})
        catalog.offer(new)  # what a reload does once the changed profile is warmed up
        rest = await read_until(client, {"audio-stop"})
    audio = b"".join(e.payload or b"" for e in first + rest if e.type == "audio-chunk")
    assert audio == expected(pipeline, old, TEXT)
    heard = await speak(studio.port, TEXT, "alice")
    assert heard.audio == expected(pipeline, new, TEXT)


async def test_a_voice_file_replaced_in_place_is_loaded_anew(
    studio: Studio, studio_world: StudioWorld
) -> None:
    catalog = studio.context.catalog
    model = studio_world.new_pth(studio.folder / "mine.pth", seed=31)
    rvc = {"model": "mine.pth", "f0_method": "rmvpe"}
    write_profile(studio.folder, "mine.yaml", profile("mine", rvc=rvc))
    assert await catalog.reload() == ["Added voice mine (mine.yaml)"]
    converter = studio.context.pipeline.converter
    assert converter is not None
    params = catalog.voices["mine"].rvc
    assert params is not None
    before = converter.voice(params)
    pipeline = studio.context.pipeline
    pipeline.cache = PhraseCache[PcmAudio](16)
    try:
        await speak(studio.port, "Hello there.", "mine")
        assert len(pipeline.cache) == 1
        studio_world.new_pth(model, seed=32)  # another voice copied over the file (Samba)
        assert catalog.changed()
        assert await catalog.reload() == ["Reloaded voice mine (mine.yaml)"]
        assert len(pipeline.cache) == 0  # its sentences are not answered from the old file
    finally:
        pipeline.cache = None
    after = converter.voice(params)
    assert after is not before
    weights = next(iter(before.file.weights))
    assert not before.file.weights[weights].equal(after.file.weights[weights])
