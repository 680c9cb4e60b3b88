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

from ..config.uri import Endpoint
from ..errors import SettingsError


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
