"""The failures of synthesis that a client is told about, as `ClientError`s."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from ..config.voices import VoiceUnavailableError
from ..errors import ClientError


@contextlib.contextmanager
def synthesis_errors() -> Iterator[None]:
    """Turn the failures a client should hear about into `ClientError` (out of memory, after
    freeing the GPU cache; a voice that cannot be loaded)."""
    try:
        yield
    except torch.OutOfMemoryError as err:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise ClientError("out-of-memory", f"Out of memory while speaking: {err}") from err
    except VoiceUnavailableError as err:
        raise ClientError("voice-unavailable", str(err)) from err
