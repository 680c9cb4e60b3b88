"""Where the server listens: `--uri` parsed at start-up and its socket bound before any model
loads, so a typo or a port in use is one `Cannot start:` line within a second, not a traceback
after the models have loaded.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from ..config.settings import SettingsError

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


@dataclass
class Listener:
    """A bound, listening socket for a tcp or unix endpoint (None for stdio)."""

    endpoint: Endpoint
    sock: socket.socket | None

    @property
    def port(self) -> int | None:
        """The real TCP port (the URI may have asked for port 0)."""
        if self.sock is None or self.endpoint.scheme != "tcp":
            return None
        return int(self.sock.getsockname()[1])

    @property
    def shown(self) -> str:
        """The URI with the real port, for the log."""
        if self.port is None:
            return self.endpoint.uri
        return f"{self.endpoint.uri.rsplit(':', 1)[0]}:{self.port}"

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        if self.endpoint.scheme == "unix":
            with contextlib.suppress(OSError):
                Path(self.endpoint.path).unlink()


def bind(endpoint: Endpoint) -> Listener:
    """Bind and listen now; `SettingsError` when the address cannot be used."""
    if endpoint.scheme == "stdio":
        return Listener(endpoint, None)
    try:
        if endpoint.scheme == "unix":
            Path(endpoint.path).unlink(missing_ok=True)  # a stale socket of an earlier run
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(endpoint.path)
                sock.listen(100)
            except OSError:
                sock.close()
                raise
        else:
            family = socket.getaddrinfo(
                endpoint.host, endpoint.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )[0][0]
            sock = socket.create_server((endpoint.host, endpoint.port), family=family, backlog=100)
    except socket.gaierror as err:
        raise SettingsError(f"--uri {endpoint.uri!r}: unknown host ({err.strerror})") from None
    except OSError as err:
        why = os.strerror(err.errno) if err.errno else str(err)
        raise SettingsError(
            f"cannot listen on {endpoint.uri}: {why}"
            + (" (is another server running there?)" if err.errno == errno.EADDRINUSE else "")
        ) from None
    sock.setblocking(False)
    return Listener(endpoint, sock)
