"""The voice studio's API: list, add (upload), tune and hear, save and remove voices.

Every profile the studio makes or changes goes through `profile_document.tuned` /
`voices.parse_profile` (the checks of start-up) and `Engine` (the same strict loading and
warm-up), and reaches Wyoming clients through the `VoiceCatalog` like a file changed on disk.
Voice names are looked up in the catalog, never used as paths.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from ..config.profile_document import dump, merged, to_document, tuned, write_atomically
from ..config.voices import F0_METHODS, VoiceConfigError, VoiceProfile, parse_profile
from ..engine.pipeline import EngineUnavailableError
from ..models.rvc.embedders import KNOWN as EMBEDDERS
from ..server.catalog import studio_folder
from ..server.handler import ServerContext
from .answer import HttpAnswer
from .encoders import PcmEncoder
from .errors import HttpError, json_body
from .uploads import Upload, receive

_LOGGER = logging.getLogger(__name__)

MAX_JOBS = 32
# fields a client may not set on a new voice: the files are the upload's, the models the presets'
PATH_FIELDS = {"rvc": ("model", "index"), "whisperspeech": ("speaker", "t2s", "s2a")}


@dataclass
class Job:
    """Adding one voice: its steps as they happen, then done or failed."""

    id: str
    name: str
    state: str = "running"  # running, done, failed
    step: str = "checking the profile"
    error: str | None = None
    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "voice": self.name,
            "state": self.state,
            "step": self.step,
            "error": self.error,
            "seconds": round(self.seconds or time.monotonic() - self.started, 2),
        }


class Studio:
    """The studio's routes over one server's context."""

    def __init__(self, context: ServerContext, max_upload_bytes: int, presets: list[str]) -> None:
        self.ctx = context
        self.catalog = context.catalog
        self.max_upload_bytes = max_upload_bytes
        self.presets = presets
        self.jobs: dict[str, Job] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/voices", self.list_voices),
            web.post("/api/voices", self.add_voice),
            web.get("/api/jobs/{job}", self.job),
            web.post("/api/speak", self.speak),
            web.put("/api/voices/{name}", self.save_voice),
            web.delete("/api/voices/{name}", self.remove_voice),
        ]

    # -- reading -----------------------------------------------------------------------

    def describe(self, profile: VoiceProfile) -> dict[str, Any]:
        """What the page shows of a voice."""
        converter = self.ctx.pipeline.converter
        facts = (
            converter.known_facts(profile.rvc)
            if profile.rvc is not None and converter is not None
            else None
        )
        speed = self.ctx.speeds.get(profile.name)
        if profile.upstream is not None:
            source: dict[str, Any] = {
                "kind": "upstream",
                "uri": profile.upstream.uri,
                "voice": profile.upstream.voice,
            }
        else:
            params = profile.whisperspeech
            source = {
                "kind": "whisperspeech",
                "preset": params.preset,
                "models": [Path(ref).name for ref in (params.t2s, params.s2a) if ref],
                "speaker": params.speaker is not None,
            }
        problem = self.catalog.problems.get(profile.path)
        return {
            "name": profile.name,
            "description": profile.description,
            "languages": list(profile.languages),
            "language": profile.language,
            "file": profile.path.name,
            "default": profile.name == self.catalog.current.default,
            "source": source,
            "rvc": None
            if facts is None
            else {
                "version": facts.version,
                "vocoder": facts.vocoder,
                "rate": facts.rate,
                "embedder": facts.embedder,
                "pitch": facts.pitch,
                "speakers": facts.speakers,
                "index": facts.index,
            },
            "settings": to_document(profile),
            "state": "ready" if problem is None else "ready (its changed profile did not load)",
            "problem": problem,
            "speed": None
            if speed is None
            else {
                "rtf": round(speed.rtf, 3),
                "keeps_up": speed.keeps_up,
                "answers": speed.answers,
                "text": speed.describe(),
            },
            "studio": studio_folder(profile.path) is not None,
        }

    async def list_voices(self, request: web.Request) -> web.Response:
        current = self.catalog.current
        served = {profile.path for profile in current.voices.values()}
        return web.json_response(
            {
                "voices": [self.describe(profile) for profile in current.voices.values()],
                "problems": [
                    {"file": path.name, "error": error}
                    for path, error in sorted(self.catalog.problems.items())
                    if path not in served
                ],
                "loading": [
                    {
                        "file": each.path.name,
                        "voice": each.name,
                        "step": each.step,
                        "seconds": round(time.monotonic() - each.started, 1),
                    }
                    for each in self.catalog.loading.values()
                ],
                "editable": self.catalog.editable,
                "presets": self.presets,
                "f0_methods": list(F0_METHODS),
                "embedders": list(EMBEDDERS),
                "max_upload_mb": self.max_upload_bytes // 2**20,
            }
        )

    async def job(self, request: web.Request) -> web.Response:
        job = self.jobs.get(request.match_info["job"])
        if job is None:
            raise HttpError("not-found", "no such job")
        return web.json_response(job.view())

    # -- tuning ------------------------------------------------------------------------

    def _voice(self, name: object) -> VoiceProfile:
        if not isinstance(name, str):
            raise HttpError("invalid-request", "voice: must be a voice name", param="voice")
        profile = self.catalog.current.voices.get(name)
        if profile is None:
            raise HttpError("unknown-voice", f"unknown voice {name!r}", param="voice")
        return profile

    async def _draft(self, profile: VoiceProfile, settings: object) -> VoiceProfile:
        """`profile` with the page's `settings`, validated and loaded as at start-up."""
        if settings is None:
            settings = {}
        if not isinstance(settings, dict):
            raise HttpError("invalid-request", "settings: must be an object", param="settings")
        _refuse_paths(settings)
        try:
            draft = tuned(profile, settings, frozenset(self.presets))
            await self.catalog.prepare(draft)
        except VoiceConfigError as err:
            raise HttpError("invalid-profile", str(err), param=err.field) from None
        except EngineUnavailableError as err:
            raise HttpError("voice-unavailable", str(err)) from None
        return draft

    async def speak(self, request: web.Request) -> web.StreamResponse:
        """`{voice, text, settings}` → the one-shot answer as raw s16le PCM at the voice's rate
        (`X-Sample-Rate`), streamed as it is made."""
        body = await json_body(request)
        profile = self._voice(body.get("voice"))
        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            raise HttpError("invalid-request", "text: must be a non-empty string", param="text")
        draft = await self._draft(profile, body.get("settings"))
        answer = HttpAnswer(self.ctx, request, PcmEncoder(rate=None))
        return await answer.speak(text, draft, {"X-Voice": draft.name})

    async def save_voice(self, request: web.Request) -> web.Response:
        self._editable()
        profile = self._voice(request.match_info["name"])
        body = await json_body(request)
        draft = await self._draft(profile, body.get("settings"))
        await self.catalog.save(draft)
        return web.json_response(self.describe(draft))

    async def remove_voice(self, request: web.Request) -> web.Response:
        self._editable()
        name = request.match_info["name"]
        self._voice(name)
        try:
            await self.catalog.remove(name)
        except KeyError:
            raise HttpError("unknown-voice", f"unknown voice {name!r}") from None
        except ValueError as err:
            raise HttpError("invalid-request", str(err)) from None
        return web.json_response({"removed": name})

    def _editable(self) -> None:
        if not self.catalog.editable:
            raise HttpError(
                "read-only",
                "the voices come from the package's examples: start with --voices FOLDER "
                "(or create <data-dir>/voices) to add and change voices",
            )

    # -- adding ------------------------------------------------------------------------

    async def add_voice(self, request: web.Request) -> web.Response:
        """A multipart form (`uploads`) → 202 and a job to follow; the voice is served once its
        warm-up passed."""
        self._editable()
        folder = self.catalog.folder
        if folder is None:
            raise RuntimeError("an editable catalog has a folder")
        upload = await receive(request, folder, self.max_upload_bytes)
        try:
            profile = self._new_profile(upload)
            if profile.name in self.catalog.current.voices or any(
                job.name == profile.name and job.state == "running" for job in self.jobs.values()
            ):
                raise HttpError("name-taken", f"a voice named {profile.name!r} exists", "name")
        except BaseException:
            upload.discard()
            raise
        job = Job(secrets.token_hex(8), profile.name)
        self.jobs[job.id] = job
        while len(self.jobs) > MAX_JOBS:
            self.jobs.pop(next(iter(self.jobs)))
        task = asyncio.create_task(self._add(job, profile, upload), name="wsrvc add voice")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return web.json_response(job.view(), status=202)

    def _new_profile(self, upload: Upload) -> VoiceProfile:
        fields = dict(upload.profile)
        _refuse_paths(fields)
        like = fields.pop("speech_from", None)
        if like is not None:  # the speech of a voice already served: its preset or models
            base = to_document(self._voice(like))
            for section in ("whisperspeech", "upstream"):
                fields.pop(section, None)
                if section in base:
                    fields[section] = base[section]
        if "model" not in upload.files:
            raise HttpError("invalid-request", "model: a .pth voice file is required", "model")
        files = {"model": f"{upload.folder.name}/{upload.files['model'].name}"}
        if "index" in upload.files:
            files["index"] = f"{upload.folder.name}/{upload.files['index'].name}"
        changes: dict[str, Any] = {"rvc": files}
        if "speaker" in upload.files:
            if "upstream" in fields:
                raise HttpError("invalid-request", "speaker: a layer-mode voice has none")
            speaker = f"{upload.folder.name}/{upload.files['speaker'].name}"
            changes["whisperspeech"] = {"speaker": speaker}
        document = merged(fields, changes)
        path = upload.folder.parent / f"{upload.folder.name}.yaml"
        try:
            return parse_profile(path, document, frozenset(self.presets))
        except VoiceConfigError as err:
            raise HttpError("invalid-profile", str(err), param=err.field) from None

    async def _add(self, job: Job, profile: VoiceProfile, upload: Upload) -> None:
        def progress(step: str) -> None:
            job.step = step

        try:
            async with self.catalog.lock():
                speed = await self.catalog.warm_up(profile, progress)
                job.step = "saving the profile"
                await asyncio.to_thread(write_atomically, profile.path, dump(to_document(profile)))
                self.catalog.offer(profile)
        except (EngineUnavailableError, VoiceConfigError, OSError) as err:
            upload.discard()
            job.state, job.error = "failed", str(err)
            _LOGGER.error("Voice %s not added: %s", profile.name, err)
        except BaseException:
            upload.discard()
            profile.path.unlink(missing_ok=True)
            job.state, job.error = "failed", "the server stopped"
            raise
        else:
            job.state, job.step = "done", f"ready: {speed.describe()}"
            _LOGGER.info(
                "Added voice %s (%s); %s", profile.name, profile.path.name, speed.describe()
            )
        finally:
            job.seconds = time.monotonic() - job.started


def _refuse_paths(fields: dict[str, Any]) -> None:
    """The page sets settings, never files: those come with the upload or stay as they are."""
    for section, keys in PATH_FIELDS.items():
        values = fields.get(section)
        if isinstance(values, dict):
            for key in keys:
                if key in values:
                    raise HttpError(
                        "invalid-request",
                        f"{section}.{key}: files are uploaded, not named",
                        param=f"{section}.{key}",
                    )
    rvc = fields.get("rvc")
    if isinstance(rvc, dict) and rvc.get("embedder") not in (None, *EMBEDDERS):
        raise HttpError(
            "invalid-request",
            f"rvc.embedder: one of {', '.join(EMBEDDERS)}",
            param="rvc.embedder",
        )
