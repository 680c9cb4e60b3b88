"""wyoming-wsrvc: a Wyoming text-to-speech server (WhisperSpeech followed by RVC)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("wyoming-wsrvc")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"
