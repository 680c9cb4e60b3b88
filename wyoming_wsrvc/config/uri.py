"""`--uri` and profile `uri:` values parsed: the scheme, host and port, or socket path, checked
once at start-up (errors name the value and give examples)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlparse

from ..errors import SettingsError

EXAMPLES = "tcp://0.0.0.0:10210, tcp://127.0.0.1:10210, unix:///run/wsrvc.sock or stdio://"


@dataclass(frozen=True)
class Endpoint:
    """A parsed `--uri`: `tcp` with host and port, `unix` with a path, or `stdio`."""

    uri: str
    scheme: Literal["tcp", "unix", "stdio"]
    host: str = ""
    port: int = 0
    path: str = ""


def parse_uri(uri: str) -> Endpoint:
    """Raise `SettingsError` (naming the flag, the value and examples) for a URI the server
    cannot listen on."""

    def refuse(why: str) -> SettingsError:
        return SettingsError(f"--uri {uri!r}: {why}; use e.g. {EXAMPLES}")

    if "://" not in uri:
        raise refuse("no scheme")
    parsed = urlparse(uri)
    if parsed.scheme == "stdio":
        return Endpoint(uri, "stdio")
    if parsed.scheme == "unix":
        if not parsed.path:
            raise refuse("no socket path")
        return Endpoint(uri, "unix", path=parsed.path)
    if parsed.scheme != "tcp":
        raise refuse(f"unknown scheme {parsed.scheme!r}")
    try:
        port = parsed.port
    except ValueError:
        raise refuse("the port is not a number from 0 to 65535") from None
    if not parsed.hostname:
        raise refuse("no host")
    if port is None:
        raise refuse("no port")
    return Endpoint(uri, "tcp", host=parsed.hostname, port=port)
