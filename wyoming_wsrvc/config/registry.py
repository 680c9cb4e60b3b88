"""Model refs and presets; the only module that downloads.

A ref is `repo_id:filename` on Hugging Face (optionally `@revision` after the repo) or a local
path. Downloads go into `<data-dir>/hf` with `huggingface_hub` (its progress bar shows on the
console; the log says what is fetched). The engine asks for every file it will need at once
(`ensure`): offline, or with the hub's host unresolvable, one error lists every missing file with
its URL and the path to put it at. Stages receive local paths only.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

_LOGGER = logging.getLogger(__name__)

# Revisions are pinned per ref; "main" until a checkpoint repo publishes a tagged release.
WS_REVISION = "main"
VOCOS_REPO = "charactr/vocos-encodec-24khz"
VOCOS_REVISION = "main"
VOCOS_LOCAL_DIR = "vocos-encodec-24khz"  # <data-dir>/<this>/{config.yaml,pytorch_model.bin}
VOCOS_FILES = ("config.yaml", "pytorch_model.bin")


class ModelUnavailableError(RuntimeError):
    """A model file is not available (offline and not cached, or the download failed)."""


@dataclass(frozen=True)
class Preset:
    """A T2S + S2A pair that share a semantic vocabulary, and the languages they speak."""

    name: str
    t2s: str
    s2a: str
    languages: tuple[str, ...]
    description: str


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        "tiny",
        t2s="collabora/whisperspeech:t2s-tiny-en+pl.model",
        s2a="collabora/whisperspeech:s2a-q4-tiny-en+pl.model",
        languages=("en", "pl"),
        description="the smallest hosts: tiny T2S + tiny S2A (English, Polish)",
    ),
    "fast": Preset(
        "fast",
        t2s="collabora/whisperspeech:t2s-base-en+pl.model",
        s2a="collabora/whisperspeech:s2a-q4-tiny-en+pl.model",
        languages=("en", "pl"),
        description="CPU-friendly: base T2S + tiny S2A (English, Polish)",
    ),
    "quality": Preset(
        "quality",
        t2s="WhisperSpeech/WhisperSpeech:t2s-v1.95-small-8lang.model",
        s2a="WhisperSpeech/WhisperSpeech:s2a-v1.95-medium-7lang.model",
        languages=("en", "pl", "de", "fr", "es", "it", "pt", "nl"),
        description="multilingual, for a GPU: small T2S + medium S2A",
    ),
}

# Applio's published content models (embedders), by folder under Resources/embedders/.
APPLIO_REPO = "IAHispano/Applio"

# The shared RVC models, by name; a file or folder of that name in <data-dir> wins.
NAMED_REFS: dict[str, str] = {
    "hubert_base": "lj1995/VoiceConversionWebUI:hubert_base.pt",
    "rmvpe": "lj1995/VoiceConversionWebUI:rmvpe.pt",
}
LOCAL_NAMES: dict[str, tuple[str, ...]] = {
    "hubert_base": ("hubert_base.pt", "hubert_base"),
    "rmvpe": ("rmvpe.pt",),
}


@dataclass(frozen=True)
class HubRef:
    repo_id: str
    filename: str
    revision: str = WS_REVISION

    @classmethod
    def parse(cls, ref: str) -> HubRef | None:
        """`owner/repo[@rev]:file` → HubRef; anything else (a path) → None."""
        if ":" not in ref or ref.startswith(("/", ".", "~")):
            return None
        repo, filename = ref.split(":", 1)
        if repo.count("/") != 1 or not filename:
            return None
        revision = WS_REVISION
        if "@" in repo:
            repo, revision = repo.split("@", 1)
        return cls(repo, filename, revision)

    def __str__(self) -> str:
        return f"{self.repo_id}:{self.filename}"

    def url(self, endpoint: str) -> str:
        return f"{endpoint}/{self.repo_id}/resolve/{self.revision}/{self.filename}"


def hub_endpoint() -> str:
    """Where files are downloaded from (`HF_ENDPOINT`, huggingface.co by default)."""
    from huggingface_hub import constants

    return str(constants.ENDPOINT).rstrip("/")


def host_resolves(url: str) -> str | None:
    """None when the host of `url` resolves, else why not (a host that does not resolve fails
    every retry the same way: better said at once)."""
    host = urlparse(url).hostname or ""
    try:
        socket.getaddrinfo(host, 443, type=socket.SOCK_STREAM)
    except OSError as err:
        return f"cannot resolve {host} ({getattr(err, 'strerror', None) or err})"
    return None


class Registry:
    """Resolves refs to local files under `data_dir`.

    A hub file is found, in order, at `<data-dir>/<owner>/<repo>/<file>` (where a user can put a
    file downloaded elsewhere), in the download cache `<data-dir>/hf`, or is downloaded there.
    """

    def __init__(self, data_dir: Path, offline: bool) -> None:
        self.data_dir = data_dir
        self.offline = offline
        self.cache_dir = data_dir / "hf"

    def placed(self, hub: HubRef) -> Path:
        """Where a user may put `hub`'s file by hand."""
        return self.data_dir / hub.repo_id / hub.filename

    def _local(self, hub: HubRef) -> Path | None:
        if self.placed(hub).is_file():
            return self.placed(hub)
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            local = hf_hub_download(
                hub.repo_id,
                hub.filename,
                revision=hub.revision,
                cache_dir=str(self.cache_dir),
                local_files_only=True,
            )
        except LocalEntryNotFoundError:
            return None
        return Path(local)

    def resolve(self, ref: str) -> Path:
        """A local path for `ref`, downloading it first unless offline."""
        ref = NAMED_REFS.get(ref, ref)
        hub = HubRef.parse(ref)
        if hub is None:
            path = Path(ref).expanduser()
            if not path.is_absolute():
                path = self.data_dir / path
            if not path.is_file():
                raise ModelUnavailableError(f"model file not found: {path}")
            return path
        local = self._local(hub)
        if local is not None:
            return local
        self.ensure([ref])
        local = self._local(hub)
        if local is None:  # downloaded, yet not where the cache says
            raise ModelUnavailableError(f"{hub} was downloaded but is not in {self.cache_dir}")
        return local

    def missing(self, refs: Iterable[str]) -> list[HubRef]:
        """The hub files among `refs` that are not on this machine (each once, in order)."""
        out: list[HubRef] = []
        for ref in refs:
            hub = HubRef.parse(NAMED_REFS.get(ref, ref))
            if hub is not None and hub not in out and self._local(hub) is None:
                out.append(hub)
        return out

    def ensure(self, refs: Iterable[str]) -> None:
        """Download every hub file among `refs` that is missing. Offline, or when the hub's host
        cannot be resolved, raise one `ModelUnavailableError` that lists them all, each with its
        URL and the path to put it at."""
        missing = self.missing(refs)
        if not missing:
            return
        endpoint = hub_endpoint()
        why = "offline (--offline)" if self.offline else host_resolves(endpoint)
        if why is not None:
            listing = "".join(
                f"\n  {hub.url(endpoint)}\n    -> {self.placed(hub)}" for hub in missing
            )
            raise ModelUnavailableError(
                f"{len(missing)} model file(s) missing and {why}: "
                f"{', '.join(str(hub) for hub in missing)}. Download each on a machine with "
                f"internet access and put it at the path shown, then start again:{listing}"
            )
        _quiet_hub_logging()
        from huggingface_hub import hf_hub_download

        for number, hub in enumerate(missing, 1):
            _LOGGER.info(
                "Downloading %s (%d/%d, first use) into %s",
                hub,
                number,
                len(missing),
                self.cache_dir,
            )
            try:
                local = hf_hub_download(
                    hub.repo_id, hub.filename, revision=hub.revision, cache_dir=str(self.cache_dir)
                )
            except Exception as err:  # network, auth, missing file: all mean "not available"
                raise ModelUnavailableError(
                    f"cannot download {hub} ({hub.url(endpoint)}): {type(err).__name__}: {err}; "
                    f"download it elsewhere and put it at {self.placed(hub)}"
                ) from err
            _LOGGER.info("Downloaded %s", local)

    def shared_refs(self, name: str) -> list[str]:
        """What `shared_model(name)` downloads: nothing when a local file is there."""
        if any((self.data_dir / local).exists() for local in LOCAL_NAMES[name]):
            return []
        return [NAMED_REFS[name]]

    def shared_model(self, name: str) -> Path:
        """`hubert_base` or `rmvpe`: `<data-dir>/<its file name>` if present, else the named ref."""
        for local in LOCAL_NAMES[name]:
            candidate = self.data_dir / local
            if candidate.exists():
                return candidate
        return self.resolve(NAMED_REFS[name])

    def embedder_refs(self, name: str) -> list[str]:
        """What `embedder(name)` downloads: nothing for a local or custom model."""
        from ..models.rvc.embedders import APPLIO_EMBEDDERS, CONTENTVEC

        if name == CONTENTVEC:
            return self.shared_refs("hubert_base")
        folder = APPLIO_EMBEDDERS.get(name)
        if folder is None or (self.data_dir / "embedders" / name / "pytorch_model.bin").is_file():
            return []
        return [
            f"{APPLIO_REPO}:Resources/embedders/{folder}/{file}"
            for file in ("config.json", "pytorch_model.bin")
        ]

    def embedder(self, name: str) -> Path:
        """A content model: `contentvec` is the shared `hubert_base`; Applio's HuBERT embedders are
        `<data-dir>/embedders/<name>/` if present, else `config.json` + `pytorch_model.bin` from
        `IAHispano/Applio:Resources/embedders/<folder>/`; anything else is a custom model's path."""
        from ..models.rvc.embedders import APPLIO_EMBEDDERS, CONTENTVEC

        if name == CONTENTVEC:
            return self.shared_model("hubert_base")
        if APPLIO_EMBEDDERS.get(name) is None:
            path = Path(name)
            if not path.exists():
                raise ModelUnavailableError(f"content model not found: {path}")
            return path
        refs = self.embedder_refs(name)
        if not refs:
            return self.data_dir / "embedders" / name
        self.ensure(refs)
        return self.resolve(refs[1]).parent

    def whisper_checkpoint(self, name: str) -> Path:
        """A Whisper model for the quality check: a local openai-whisper checkpoint file or a
        CTranslate2 Whisper folder (with `model.bin`) as it is, else an openai-whisper model
        name (`tiny`, `base`, …) in `<data-dir>/whisper`, downloaded only when not offline."""
        local = Path(name).expanduser()
        if local.is_file() or (local / "model.bin").is_file():
            return local
        if local.is_dir():
            raise ModelUnavailableError(
                f"{local}: not a Whisper model in CTranslate2 format (no model.bin)"
            )
        import whisper

        urls: dict[str, str] = whisper._MODELS  # the package's own table of checkpoints
        if name not in urls:
            raise ModelUnavailableError(
                f"unknown Whisper model {name!r} (known: {', '.join(urls)})"
            )
        root = self.data_dir / "whisper"
        target = root / Path(urls[name]).name
        if target.is_file():
            return target
        if self.offline:
            raise ModelUnavailableError(
                f"offline and Whisper {name!r} is not at {target}: download {urls[name]} there "
                "(or pass --whisper with the path of a checkpoint)"
            )
        _LOGGER.info("Downloading Whisper %s into %s", name, root)
        root.mkdir(parents=True, exist_ok=True)
        whisper._download(urls[name], str(root), False)  # checks the published SHA-256
        return target

    def vocoder_refs(self) -> list[str]:
        """What `vocoder_files` downloads: nothing when `<data-dir>/vocos-encodec-24khz/` has both."""
        local = self.data_dir / VOCOS_LOCAL_DIR
        if (local / "config.yaml").is_file() and (local / "pytorch_model.bin").is_file():
            return []
        return [f"{VOCOS_REPO}@{VOCOS_REVISION}:{file}" for file in VOCOS_FILES]

    def vocoder_files(self) -> tuple[Path, Path]:
        """(config.yaml, pytorch_model.bin) of Vocos; `<data-dir>/vocos-encodec-24khz/` wins."""
        refs = self.vocoder_refs()
        if not refs:
            local = self.data_dir / VOCOS_LOCAL_DIR
            return local / VOCOS_FILES[0], local / VOCOS_FILES[1]
        self.ensure(refs)
        return self.resolve(refs[0]), self.resolve(refs[1])


def _quiet_hub_logging() -> None:
    """huggingface_hub logs through a handler of its own and the root logger: once is enough."""
    hub_logger = logging.getLogger("huggingface_hub")
    for handler in list(hub_logger.handlers):
        hub_logger.removeHandler(handler)
    hub_logger.propagate = True
