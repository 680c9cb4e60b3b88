"""The voice studio's HTTP listener: `--http-uri`, `--http-token`, `--http-ingress` and the upload
limit, parsed and checked once at start-up.

Off unless `--http-uri` is given. A host-less `--http-uri PORT` (or `http://:PORT`) binds to
127.0.0.1: the page and its API write files on the host. Any other address than loopback needs a
token (`--http-token`) or `--http-ingress` (only Home Assistant's ingress proxy may connect).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlparse

from ..errors import SettingsError

DEFAULT_HTTP_HOST = "127.0.0.1"
# The Supervisor's ingress proxy: the only peer an add-on's ingress port hears from
INGRESS_PEERS = ("172.30.32.2",)
MAX_UPLOAD_MB = 1024  # a voice's files together (.pth up to ~0.5 GB, an index up to ~0.5 GB)
EXAMPLES = "10211, http://127.0.0.1:10211, http://0.0.0.0:10211 (with --http-token)"


@dataclass(frozen=True)
class HttpSettings:
    """Where the studio listens and who may use it."""

    host: str
    port: int
    token: str | None = None
    # peers allowed to connect (None: any that reaches the address); ingress: the proxy only
    peers: tuple[str, ...] | None = None
    max_upload_bytes: int = MAX_UPLOAD_MB * 1024 * 1024

    @property
    def loopback(self) -> bool:
        return _loopback(self.host)

    @property
    def shown(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_http(
    uri: str, token: str | None, ingress: bool, max_upload_mb: int = MAX_UPLOAD_MB
) -> HttpSettings:
    """`SettingsError` (naming the flag and the value) for a listener the server must not open."""

    def refuse(why: str) -> SettingsError:
        return SettingsError(f"--http-uri {uri!r}: {why}; use e.g. {EXAMPLES}")

    text = uri.strip()
    if text.isdigit():
        text = f"http://:{text}"
    if "://" not in text:
        raise refuse("no scheme")
    parsed = urlparse(text)
    if parsed.scheme not in ("http", "tcp"):
        raise refuse(f"unknown scheme {parsed.scheme!r} (the studio speaks plain HTTP)")
    if parsed.path not in ("", "/"):
        raise refuse("no path is served but /")
    try:
        port = parsed.port
    except ValueError:
        raise refuse("the port is not a number from 0 to 65535") from None
    if port is None:
        raise refuse("no port")
    host = parsed.hostname or DEFAULT_HTTP_HOST
    if token is not None and len(token) < 16:
        raise SettingsError(
            "--http-token: use at least 16 characters (e.g. `openssl rand -hex 16`)"
        )
    if not _loopback(host) and token is None and not ingress:
        raise refuse(
            f"{host} is reachable from other machines, and the studio writes files on this "
            "host: add --http-token TOKEN, or --http-ingress in the Home Assistant add-on"
        )
    if max_upload_mb < 1:
        raise SettingsError(f"--http-max-upload-mb {max_upload_mb}: must be at least 1")
    return HttpSettings(
        host=host,
        port=port,
        token=token,
        peers=INGRESS_PEERS if ingress else None,
        max_upload_bytes=max_upload_mb * 1024 * 1024,
    )
