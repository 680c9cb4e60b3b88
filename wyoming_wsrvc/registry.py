"""Model refs and presets; the only module that downloads.

A ref is `repo_id:filename` on Hugging Face (optionally `@revision` after the repo) or a local
path. Downloads go into `<data-dir>/hf` with `huggingface_hub` (its progress bar shows on the
console; the log says what is fetched); `offline` uses local files only and names the exact file
that is missing. Stages receive local paths only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

_LOGGER = logging.getLogger(__name__)

# Revisions are pinned per ref; "main" until a checkpoint repo publishes a tagged release.
WS_REVISION = "main"
VOCOS_REPO = "charactr/vocos-encodec-24khz"
VOCOS_REVISION = "main"
VOCOS_LOCAL_DIR = "vocos-encodec-24khz"  # <data-dir>/<this>/{config.yaml,pytorch_model.bin}


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


class Registry:
    """Resolves refs to local files under `data_dir`."""

    def __init__(self, data_dir: Path, offline: bool) -> None:
        self.data_dir = data_dir
        self.offline = offline
        self.cache_dir = data_dir / "hf"

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
        return self._download(hub)

    def _download(self, hub: HubRef) -> Path:
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
            return Path(local)
        except LocalEntryNotFoundError:
            if self.offline:
                raise ModelUnavailableError(
                    f"offline and not in {self.cache_dir}: {hub.repo_id}:{hub.filename} "
                    f"(revision {hub.revision}); run once without --offline to download it"
                ) from None
        _LOGGER.info(
            "Downloading %s:%s (first use) into %s", hub.repo_id, hub.filename, self.cache_dir
        )
        try:
            local = hf_hub_download(
                hub.repo_id, hub.filename, revision=hub.revision, cache_dir=str(self.cache_dir)
            )
        except Exception as err:  # network, auth, missing file: all mean "not available"
            raise ModelUnavailableError(
                f"cannot download {hub.repo_id}:{hub.filename}: {type(err).__name__}: {err}"
            ) from err
        _LOGGER.info("Downloaded %s", local)
        return Path(local)

    def shared_model(self, name: str) -> Path:
        """`hubert_base` or `rmvpe`: `<data-dir>/<its file name>` if present, else the named ref."""
        for local in LOCAL_NAMES[name]:
            candidate = self.data_dir / local
            if candidate.exists():
                return candidate
        return self.resolve(NAMED_REFS[name])

    def embedder(self, name: str) -> Path:
        """A content model: `contentvec` is the shared `hubert_base`; Applio's HuBERT embedders are
        `<data-dir>/embedders/<name>/` if present, else `config.json` + `pytorch_model.bin` from
        `IAHispano/Applio:Resources/embedders/<folder>/`; anything else is a custom model's path."""
        from .rvc.embedders import APPLIO_EMBEDDERS, CONTENTVEC

        if name == CONTENTVEC:
            return self.shared_model("hubert_base")
        folder = APPLIO_EMBEDDERS.get(name)
        if folder is None:
            path = Path(name)
            if not path.exists():
                raise ModelUnavailableError(f"content model not found: {path}")
            return path
        local = self.data_dir / "embedders" / name
        if (local / "pytorch_model.bin").is_file():
            return local
        files = [
            self.resolve(f"{APPLIO_REPO}:Resources/embedders/{folder}/{file}")
            for file in ("config.json", "pytorch_model.bin")
        ]
        return files[1].parent

    def whisper_checkpoint(self, name: str) -> Path:
        """An openai-whisper model (`tiny`, `base`, … or a local checkpoint path) for the quality
        check, in `<data-dir>/whisper`; downloaded only when not offline."""
        local = Path(name).expanduser()
        if local.is_file():
            return local
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
            raise ModelUnavailableError(f"offline and not in {root}: {target.name}")
        _LOGGER.info("Downloading Whisper %s into %s", name, root)
        root.mkdir(parents=True, exist_ok=True)
        whisper._download(urls[name], str(root), False)  # checks the published SHA-256
        return target

    def vocoder_files(self) -> tuple[Path, Path]:
        """(config.yaml, pytorch_model.bin) of Vocos; `<data-dir>/vocos-encodec-24khz/` wins."""
        local = self.data_dir / VOCOS_LOCAL_DIR
        if (local / "config.yaml").is_file() and (local / "pytorch_model.bin").is_file():
            return local / "config.yaml", local / "pytorch_model.bin"
        config = self.resolve(f"{VOCOS_REPO}@{VOCOS_REVISION}:config.yaml")
        weights = self.resolve(f"{VOCOS_REPO}@{VOCOS_REVISION}:pytorch_model.bin")
        return config, weights
