"""The voices the server offers now, and how they change while it runs.

`VoiceCatalog.current` is a `VoiceSet` (profiles, default voice, Wyoming `Info`), replaced whole
and never changed, so a request reads one consistent set and keeps the profile it started with
however the set changes later. The voices folder is rescanned when its files change (`watch`, and
`poke` on every `describe`); a new or changed profile is validated and warmed up off the event loop
(`engine.build.Engine.add`, the checks of start-up) before it is swapped in; a removed one stops
being offered; a broken one is reported (`problems`, the log) while the voice it would replace
keeps serving. The voice studio (`http`) adds, saves and removes voices through the same lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from wyoming.info import Info

from ..config.profile_document import dump, to_document, write_atomically
from ..config.voice_folder import folder_stamp, profile_stamp
from ..config.voices import VoiceConfigError, VoiceProfile, scan_folder
from ..engine.build import Engine
from ..engine.pacing import VoiceSpeed
from ..engine.pipeline import EngineUnavailableError, Pipeline
from ..engine.threads import ThreadPlan
from .info import build_info
from .responses import VoiceFormat

_LOGGER = logging.getLogger(__name__)

STUDIO_PREFIX = "studio-"  # files and folders the studio made: `studio-<id>.yaml`, `studio-<id>/`
MAX_DRAFTS = 16
MAX_RETIRED = 64  # formats kept for requests that began before their voice changed


@dataclass(frozen=True)
class VoiceSet:
    """The voices offered at one moment."""

    voices: dict[str, VoiceProfile]
    default: str
    info: Info


@dataclass
class Loading:
    """A voice being loaded and warmed up: its file and the step it is at."""

    path: Path
    name: str
    step: str
    started: float = field(default_factory=time.monotonic)


class VoiceCatalog:
    """The current `VoiceSet`, each voice's output format, and the folder's problems."""

    def __init__(
        self,
        pipeline: Pipeline,
        voices: dict[str, VoiceProfile],
        default_voice: str,
        streaming: bool,
        formats: dict[VoiceProfile, VoiceFormat],
        engine: Engine | None = None,
        plan: ThreadPlan | None = None,
        folder: Path | None = None,
        presets: frozenset[str] = frozenset(),
    ) -> None:
        """`engine` and `folder`: where voices are loaded from while the server runs (without
        them the set never changes)."""
        self.pipeline = pipeline
        self.streaming = streaming
        self.engine = engine
        self.plan = plan or ThreadPlan.for_profiles(None, voices.values())
        self.folder = folder if engine is not None else None
        self.presets = presets
        self.preferred_default = default_voice
        self._formats = dict(formats)
        self._drafts: OrderedDict[VoiceProfile, VoiceFormat] = OrderedDict()
        self._stamps = {name: profile_stamp(p) for name, p in voices.items()}
        self.current = self._set(voices)
        self.problems: dict[Path, str] = {}  # profile file → why it is not (or no longer) loaded
        self.loading: dict[Path, Loading] = {}
        self._lock: asyncio.Lock | None = None
        self._seen = self._folder_stamp()
        self._reload: asyncio.Task[list[str]] | None = None
        self.listeners: list[Callable[[VoiceSet], None]] = []

    # -- reading -----------------------------------------------------------------------

    @property
    def voices(self) -> dict[str, VoiceProfile]:
        return self.current.voices

    def info(self) -> Info:
        return self.current.info

    def format(self, profile: VoiceProfile) -> VoiceFormat:
        """The output format of `profile` (a served voice, one it replaced, or a prepared draft)."""
        found = self._formats.get(profile) or self._drafts.get(profile)
        if found is None:
            raise KeyError(f"voice {profile.name!r} has no output format prepared")
        return found

    def speed(self, name: str) -> VoiceSpeed | None:
        return self.pipeline.speeds.get(name)

    @property
    def editable(self) -> bool:
        return self.folder is not None

    # -- changing ----------------------------------------------------------------------

    def lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def prepare(self, draft: VoiceProfile) -> None:
        """Make `draft` (a voice's settings being tuned, not saved) speakable: its models
        loaded as at start-up (`EngineUnavailableError` says why not), its format known."""
        if draft in self._formats or draft in self._drafts:
            return
        if self.engine is None:
            raise EngineUnavailableError("voices cannot change on this server")
        engine = self.engine
        format_ = await asyncio.to_thread(self._load_format, engine, draft)
        self._drafts[draft] = format_
        while len(self._drafts) > MAX_DRAFTS:
            self._drafts.popitem(last=False)

    def _load_format(self, engine: Engine, profile: VoiceProfile) -> VoiceFormat:
        engine.load(profile)
        return VoiceFormat.of(self.pipeline, profile)

    def _add_blocking(
        self, engine: Engine, profile: VoiceProfile, progress: Callable[[str], None]
    ) -> tuple[VoiceSpeed, VoiceFormat]:
        speed = engine.add(profile, self.plan, progress)
        return speed, VoiceFormat.of(self.pipeline, profile)

    async def warm_up(
        self, profile: VoiceProfile, progress: Callable[[str], None] = lambda step: None
    ) -> VoiceSpeed:
        """Load and warm up `profile` off the event loop, not yet offered (`EngineUnavailableError`
        says why it cannot be); its speed."""
        if self.engine is None:
            raise EngineUnavailableError("voices cannot change on this server")
        loading = Loading(profile.path, profile.name, "checking the profile")
        self.loading[profile.path] = loading

        def step(text: str) -> None:
            loading.step = text  # read on the event loop; a str is replaced whole
            progress(text)

        try:
            speed, format_ = await asyncio.to_thread(self._add_blocking, self.engine, profile, step)
        finally:
            self.loading.pop(profile.path, None)
        self._formats[profile] = format_
        return speed

    def offer(self, profile: VoiceProfile) -> None:
        """Serve `profile` (loaded and warmed up) under its name from now on."""
        voices = dict(self.current.voices)
        voices[profile.name] = profile
        self._stamps[profile.name] = profile_stamp(profile)
        self.problems.pop(profile.path, None)
        self._swap(voices)

    def withdraw(self, name: str) -> None:
        voices = dict(self.current.voices)
        profile = voices.pop(name, None)
        if profile is None:
            return
        self._stamps.pop(name, None)
        self.problems.pop(profile.path, None)
        self._swap(voices)

    def _set(self, voices: dict[str, VoiceProfile]) -> VoiceSet:
        ordered = dict(sorted(voices.items(), key=lambda item: item[1].path.name))
        default = self.preferred_default
        if default not in ordered:
            default = next(iter(ordered), default)
        return VoiceSet(ordered, default, build_info(ordered.values(), self.streaming))

    def _swap(self, voices: dict[str, VoiceProfile]) -> None:
        if not voices:
            _LOGGER.warning("No voice left to offer; keeping the last one until another loads")
            return
        self.current = self._set(voices)
        # the formats of voices no longer served stay a while: requests under way use them
        served = set(voices.values())
        retired = [p for p in self._formats if p not in served]
        for profile in retired[: max(0, len(retired) - MAX_RETIRED)]:
            del self._formats[profile]
        self._seen = self._folder_stamp()
        for listener in self.listeners:
            listener(self.current)

    async def save(self, profile: VoiceProfile) -> None:
        """Write `profile` (validated, loaded: see `prepare`) to its file and serve it."""
        format_ = self.format(profile)
        async with self.lock():
            text = dump(to_document(profile))
            await asyncio.to_thread(write_atomically, profile.path, text)
            self._formats[profile] = format_
            self.offer(profile)
        _LOGGER.info("Saved voice %s to %s", profile.name, profile.path)

    async def remove(self, name: str) -> VoiceProfile:
        """Stop offering `name` and delete its profile file, and the folder of its files if the
        studio made it; `KeyError` for a voice that is not offered."""
        async with self.lock():
            profile = self.current.voices[name]
            if len(self.current.voices) == 1:
                raise ValueError("the last voice cannot be removed")
            self.withdraw(name)
            await asyncio.to_thread(self._delete_files, profile)
            self._seen = self._folder_stamp()
        _LOGGER.info("Removed voice %s (%s)", name, profile.path)
        return profile

    def _delete_files(self, profile: VoiceProfile) -> None:
        folder = self.folder
        if folder is None or profile.path.parent != folder:
            raise ValueError(f"{profile.path} is not in the voices folder")
        profile.path.unlink(missing_ok=True)
        own = studio_folder(profile.path)
        if own is not None and own.is_dir() and own.parent == folder:
            shutil.rmtree(own)

    # -- the folder --------------------------------------------------------------------

    def _folder_stamp(self) -> tuple[object, ...]:
        if self.folder is None:
            return ()
        return folder_stamp(self.folder, list(self.current.voices.values()))

    def changed(self) -> bool:
        return self.folder is not None and self._folder_stamp() != self._seen

    def poke(self) -> None:
        """Rescan in the background if the folder changed (on `describe`: Home Assistant asks
        every 30 s); never waits."""
        if self._reload is None or self._reload.done():
            with contextlib.suppress(OSError):
                if self.changed():
                    self._reload = asyncio.create_task(self._reload_logged(), name="wsrvc reload")

    async def _reload_logged(self) -> list[str]:
        try:
            return await self.reload()
        except Exception:  # a rescan in the background: logged, the voices stay as they are
            _LOGGER.exception("Rescanning the voices folder failed")
            return []

    async def watch(self, interval: float) -> None:
        """Rescan whenever the folder changes, checking every `interval` seconds."""
        while True:
            await asyncio.sleep(interval)
            try:
                if self.changed():
                    await self.reload()
            except Exception:  # the watcher must outlive a bad scan
                _LOGGER.exception("Rescanning the voices folder failed")

    async def reload(self) -> list[str]:
        """Bring the offered voices in line with the folder; what changed, one line each."""
        folder, engine = self.folder, self.engine
        if folder is None or engine is None:
            return []
        async with self.lock():
            seen = self._folder_stamp()
            scan = await asyncio.to_thread(scan_folder, folder, self.presets)
            changes: list[str] = []
            voices = dict(self.current.voices)
            kept_paths = {path for path in scan.errors}  # broken files keep their old voice
            for path, error in scan.errors.items():
                if self.problems.get(path) != str(error):
                    _LOGGER.error("Voice profile not loaded: %s", error)
                self.problems[path] = str(error)
            for name, profile in scan.profiles.items():
                old = voices.get(name)
                if old == profile and self._stamps.get(name) == profile_stamp(profile):
                    continue
                verb = "Added" if old is None else "Reloaded"
                try:
                    await self.warm_up(profile)
                except (EngineUnavailableError, VoiceConfigError) as err:
                    if self.problems.get(profile.path) != str(err):
                        _LOGGER.error("Voice %s not loaded: %s", name, err)
                    self.problems[profile.path] = str(err)
                    kept_paths.add(profile.path)
                    continue
                if old == profile and self.pipeline.cache is not None:
                    # the same settings, other files: what the phrase cache holds is stale
                    self.pipeline.cache.clear()
                voices[name] = profile
                self._stamps[name] = profile_stamp(profile)
                self.problems.pop(profile.path, None)
                changes.append(f"{verb} voice {name} ({profile.path.name})")
            for name, profile in list(voices.items()):
                if name in scan.profiles or profile.path in kept_paths:
                    continue
                del voices[name]
                self._stamps.pop(name, None)
                changes.append(f"Removed voice {name} ({profile.path.name} is gone)")
            for path in list(self.problems):
                if not path.exists():
                    del self.problems[path]
            if changes:
                self._swap(voices)
                for line in changes:
                    _LOGGER.info("%s", line)
            self._seen = seen  # what changed during the scan is seen at the next check
            return changes


def studio_folder(profile_path: Path) -> Path | None:
    """The folder of a studio-made voice's files (`studio-<id>/` beside `studio-<id>.yaml`)."""
    if not profile_path.stem.startswith(STUDIO_PREFIX):
        return None
    return profile_path.with_suffix("")
