"""Frozen server settings, and the checks of device and dtype.

`__main__` builds `Settings` once from the command line; nothing else sees argparse.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported only when a device or dtype is resolved
    import torch

from ..errors import SettingsError
from .http_settings import HttpSettings
from .uri import parse_uri

_LOGGER = logging.getLogger(__name__)

DEFAULT_PORT = 10210
# more flags, read before the command line's (Docker Compose, the health check)
ARGS_ENV = "WYOMING_WSRVC_ARGS"
DEFAULT_URI = f"tcp://0.0.0.0:{DEFAULT_PORT}"


# Measured on the 2-core CPU (README, "Many satellites at once"): a step of 8 rows costs about
# 1.6x a step of one; past 8 the step grows about linearly, so waiting is as fast as joining.
MAX_BATCH = 8
# Clients waiting beyond the batch: each holds only its text; past this they are told `busy`.
MAX_QUEUE = 32


@dataclass(frozen=True)
class Settings:
    """Everything the server was asked to do, validated."""

    uri: str
    data_dir: Path
    voices_dir: Path
    default_voice: str | None
    device: str
    dtype: str
    offline: bool
    zeroconf_name: str | None
    streaming: bool
    samples_per_chunk: int
    max_text_length: int
    skip_bad_voices: bool = False
    max_loaded_voices: int = 4
    threads: int | None = None  # CPU threads for model work; None = the available cores
    max_batch: int = MAX_BATCH  # sentences decoded together across requests
    max_queue: int = MAX_QUEUE  # clients that may wait for their turn; more get `busy`
    phrase_cache: int = 256  # entries; 0 disables the cache
    idle_timeout: float = 60.0
    debug: bool = False
    http: HttpSettings | None = None  # the voice studio and HTTP APIs; None: off
    watch_interval: float = 5.0  # seconds between checks of the voices folder; 0: on describe only

    @classmethod
    def local(cls, data_dir: Path, **changes: Any) -> Settings:
        """Settings for running the engine in-process on a local model set (tools, tests):
        offline, CPU unless told otherwise, `<data-dir>/voices`, no phrase cache."""
        base = cls(
            uri="tcp://127.0.0.1:0",
            data_dir=data_dir,
            voices_dir=data_dir / "voices",
            default_voice=None,
            device="cpu",
            dtype="auto",
            offline=True,
            zeroconf_name=None,
            streaming=True,
            samples_per_chunk=1024,
            max_text_length=100_000,
            phrase_cache=0,
        )
        return replace(base, **changes)

    @property
    def zeroconf(self) -> bool:
        return self.zeroconf_name is not None

    def validate(self) -> Settings:
        """Raise `SettingsError` for values that cannot work; return self."""
        if self.samples_per_chunk < 1:
            raise SettingsError("--samples-per-chunk must be at least 1")
        if self.max_text_length < 1:
            raise SettingsError("--max-text-length must be at least 1")
        if self.phrase_cache < 0:
            raise SettingsError(
                f"--phrase-cache must be 0 (off) or a number of sentences, got {self.phrase_cache}"
            )
        if self.threads is not None and self.threads < 1:
            raise SettingsError("--threads must be at least 1")
        if self.max_batch < 1:
            raise SettingsError("--max-batch must be at least 1")
        if self.max_queue < 0:
            raise SettingsError("--max-queue must be 0 or more")
        if self.max_loaded_voices < 1:
            raise SettingsError("--max-loaded-voices must be at least 1")
        if self.idle_timeout <= 0:
            raise SettingsError("--idle-timeout must be positive")
        if self.watch_interval < 0:
            raise SettingsError("--watch-interval must be 0 (off) or more seconds")
        if self.zeroconf and parse_uri(self.uri).scheme != "tcp":
            raise SettingsError("--zeroconf needs a tcp:// --uri")
        device = resolve_device(self.device)
        check_dtype(self.dtype, device)
        return self


def resolve_device(name: str) -> torch.device:
    """`auto` picks the first CUDA device when there is one, else the CPU."""
    import torch

    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:  # torch's message lists every device type it knows of
        raise SettingsError(
            f"--device {name!r} is not a device: use auto, cpu, cuda or cuda:N"
        ) from None
    if device.type not in ("cpu", "cuda"):
        raise SettingsError(f"--device {name!r}: only auto, cpu and cuda[:N] are supported")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SettingsError(f"--device {name!r}: CUDA is not available on this machine")
    return device


DTYPES = ("float32", "float16", "bfloat16")


def check_dtype(name: str, device: torch.device) -> None:
    """Raise `SettingsError` for a `--dtype` this device cannot use.

    float16 on the CPU is refused: RVC's synthesizer and RMVPE overflow there (every sample
    non-finite: a silent voice), and the CPU has no fast float16 arithmetic anyway."""
    if name == "auto":
        return
    resolve_dtype(name, device)
    if name == "float16" and device.type == "cpu":
        raise SettingsError(
            "--dtype float16 cannot run on the CPU (RVC voices come out silent, and the CPU has "
            "no fast float16): use auto, float32 or bfloat16"
        )


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """`auto` is float32 on the CPU (half precision is slow there) and float16 on CUDA."""
    import torch

    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    dtypes = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    try:
        return dtypes[name]
    except KeyError:
        raise SettingsError(f"--dtype {name!r}: choose auto, {', '.join(DTYPES)}") from None
