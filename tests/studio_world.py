"""A real engine for the studio, hot-reload and HTTP API tests: random-weight models in the real
file formats (WhisperSpeech `.model`, Vocos, HuBERT, RMVPE, an RVC `.pth`), loaded once per test
session by `Engine` as the server loads them; each test gets a fresh copy of the voices folder
and a server context of its own over that engine."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from wyoming_wsrvc.config.http_settings import HttpSettings
from wyoming_wsrvc.config.registry import PRESETS
from wyoming_wsrvc.config.settings import Settings
from wyoming_wsrvc.config.voices import load_voices
from wyoming_wsrvc.devtools.loopback import serving_studio
from wyoming_wsrvc.devtools.write_rvc import write_hubert, write_rmvpe, write_rvc_voice
from wyoming_wsrvc.devtools.write_vocos import VOCOS_TINY, write_vocos
from wyoming_wsrvc.devtools.write_whisperspeech import write_s2a, write_t2s
from wyoming_wsrvc.engine.build import Engine
from wyoming_wsrvc.engine.threads import ThreadPlan
from wyoming_wsrvc.scheduling.scheduler import Scheduler
from wyoming_wsrvc.server.handler import ServerContext

PRESET_NAMES = frozenset(PRESETS)


def profile(name: str, **extra: Any) -> dict[str, Any]:
    """A WhisperSpeech voice on the test models, greedy (the same text gives the same audio)."""
    document: dict[str, Any] = {
        "name": name,
        "description": f"{name} (random weights)",
        "languages": ["en", "en_US"],
        "sentence_pause": 0.1,
        "tail_silence": 0.1,
        "whisperspeech": {
            "t2s": "../models/t2s.model",
            "s2a": "../models/s2a.model",
            "temperature": 0.0,
        },
    }
    document.update(extra)
    return document


def write_profile(folder: Path, file: str, document: dict[str, Any]) -> Path:
    path = folder / file
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


@dataclass
class StudioWorld:
    root: Path
    engine: Engine
    template: Path  # the voices folder every test starts from

    @property
    def models(self) -> Path:
        return self.root / "models"

    def voices(self, tmp_path: Path) -> Path:
        """A fresh voices folder for one test (beside the models, as `../models` expects)."""
        folder = self.root / f"voices-{tmp_path.name}"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(self.template, folder)
        return folder

    def context(self, folder: Path, default: str = "alice") -> ServerContext:
        voices = load_voices(folder, PRESET_NAMES)
        for each in voices.values():
            self.engine.load(each)  # loaded once already: only binds
        # one thread each side, as the inline reference runs (`expected`): byte for byte on
        # every CPU (AVX2 kernels round the last bit differently at 1 and 2 threads)
        plan = ThreadPlan(total=1, decode=1, audio=1, overlap=True)
        return ServerContext.wire(
            self.engine.pipeline,
            voices,
            default,
            scheduler=Scheduler(self.engine.pipeline, plan),
            engine=self.engine,
            folder=folder,
            presets=PRESET_NAMES,
        )

    def new_pth(self, path: Path, seed: int = 21) -> Path:
        """Another RVC voice file (v2, 40 kHz, classic WebUI format)."""
        return write_rvc_voice(path, "v2", 40000, seed=seed)


def build_world(root: Path) -> StudioWorld:
    models = root / "models"
    write_t2s(models / "t2s.model", 2, 2)
    write_s2a(models / "s2a.model", 2, 2)
    write_vocos(root / "vocos-encodec-24khz", VOCOS_TINY)
    write_hubert(root / "hubert_base")
    write_rmvpe(root / "rmvpe.pt")
    write_rvc_voice(models / "rvc.pth", "v2", 40000)
    template = root / "voices-template"
    template.mkdir()
    write_profile(template, "alice.yaml", profile("alice"))
    rvc = {"model": "../models/rvc.pth", "f0_method": "rmvpe", "pitch_shift": 0}
    write_profile(template, "rvc.yaml", profile("rvc", rvc=rvc))
    engine = Engine(Settings.local(root, voices_dir=template, threads=1))
    engine.start(load_voices(template, PRESET_NAMES))
    return StudioWorld(root, engine, template)


@pytest.fixture(scope="session")
def studio_world(tmp_path_factory: pytest.TempPathFactory) -> StudioWorld:
    return build_world(tmp_path_factory.mktemp("studio"))


@dataclass
class Studio:
    """A served studio: its Wyoming and HTTP ports, context, voices folder and an HTTP client."""

    port: int
    http_port: int
    context: ServerContext
    folder: Path
    http: aiohttp.ClientSession

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http_port}/{path.lstrip('/')}"


async def studio_serving(
    world: StudioWorld, tmp_path: Path, settings: HttpSettings | None = None
) -> AsyncIterator[Studio]:
    folder = world.voices(tmp_path)
    context = world.context(folder)
    async with (
        serving_studio(context, settings) as (port, http_port),
        aiohttp.ClientSession() as http,
    ):
        yield Studio(port, http_port, context, folder, http)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
async def studio(studio_world: StudioWorld, tmp_path: Path) -> AsyncIterator[Studio]:
    """A served studio over the session's engine, with a fresh voices folder."""
    async for served in studio_serving(studio_world, tmp_path):
        yield served
