"""A new voice's files received from a multipart form, streamed to disk within a size limit.

Parts: `profile` (the profile's fields as JSON, the YAML's own shape), `model` (the `.pth`),
optional `index` (`.index`) and `speaker` (`.npy`/`.pt`). The file names the browser sends are
only checked for their suffix: the files are stored as `model.pth`, `model.index` and
`speaker.<suffix>` in a new folder of the studio's own (`studio-<id>/`), so no name a client
gives is ever a path. Anything wrong removes that folder again: a failed upload leaves nothing.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web

from ..server.catalog import STUDIO_PREFIX
from .errors import HttpError

MAX_PROFILE_BYTES = 64 * 1024
FILE_PARTS = {"model": (".pth",), "index": (".index",), "speaker": (".npy", ".pt")}
CHUNK = 1 << 20


def new_voice_id() -> str:
    """`studio-<date>-<time>-<random>`: sorts by when it was added, says nothing of the name."""
    return f"{STUDIO_PREFIX}{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


@dataclass
class Upload:
    """What a form brought: the profile fields, and the stored files by part name."""

    folder: Path  # `studio-<id>/` in the voices folder
    profile: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


async def receive(request: web.Request, voices: Path, limit: int) -> Upload:
    """Read the form into a new `studio-<id>/` folder of `voices` (`HttpError` for a bad form or
    one over `limit` bytes, the folder removed)."""
    if not request.content_type.startswith("multipart/form-data"):
        raise HttpError("invalid-request", "send the voice as multipart/form-data")
    if request.content_length is not None and request.content_length > limit:
        raise HttpError("too-large", f"the upload is over the limit of {limit // 2**20} MB")
    folder = voices / new_voice_id()
    folder.mkdir()  # a new name: never an existing folder
    upload = Upload(folder)
    try:
        await _read_parts(await request.multipart(), upload, limit)
    except BaseException:
        upload.discard()
        raise
    return upload


async def _read_parts(reader: Any, upload: Upload, limit: int) -> None:
    received = 0
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise HttpError("invalid-request", "nested multipart is not accepted")
        name = part.name or ""
        if name == "profile":
            data = await part.read(decode=False)
            if len(data) > MAX_PROFILE_BYTES:
                raise HttpError("too-large", "the profile fields are over 64 KB")
            try:
                fields = json.loads(data.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                raise HttpError("invalid-request", f"profile: not JSON: {err}") from None
            if not isinstance(fields, dict):
                raise HttpError("invalid-request", "profile: must be a JSON object")
            upload.profile = fields
            continue
        if name not in FILE_PARTS:
            raise HttpError("invalid-request", f"unknown form field {name!r}", param=name)
        if name in upload.files:
            raise HttpError("invalid-request", f"{name}: sent twice", param=name)
        suffix = Path(part.filename or "").suffix.lower()
        if suffix not in FILE_PARTS[name]:
            raise HttpError(
                "invalid-request",
                f"{name}: must be a {' or '.join(FILE_PARTS[name])} file",
                param=name,
            )
        stored = upload.folder / (f"{name}{suffix}" if name == "speaker" else f"model{suffix}")
        with stored.open("wb") as out:
            while chunk := await part.read_chunk(CHUNK):
                received += len(chunk)
                if received > limit:
                    raise HttpError(
                        "too-large", f"the upload is over the limit of {limit // 2**20} MB"
                    )
                await asyncio.to_thread(out.write, chunk)  # off the event loop
        if stored.stat().st_size == 0:
            raise HttpError("invalid-request", f"{name}: the file is empty", param=name)
        upload.files[name] = stored
