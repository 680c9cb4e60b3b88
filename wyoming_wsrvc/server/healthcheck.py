"""Health check: a real describe → info round trip (a bare port probe stays green on a wedged loop).

Usage: ``python -m wyoming_wsrvc.server.healthcheck [--uri URI] [--timeout 10]``; exit status 0
when the server answered with at least one installed TTS voice.

Without `--uri` it asks the server where it listens: the running server process's own `--uri`
(its command line, after `$WYOMING_WSRVC_ARGS` from its environment, as the server reads them),
a wildcard host asked on loopback; with no server process found, tcp://127.0.0.1:10210. So a
container's HEALTHCHECK follows whatever address the container was started with.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shlex
import sys
from pathlib import Path

from wyoming.client import AsyncClient
from wyoming.info import Describe, Info

from ..config.settings import ARGS_ENV, DEFAULT_PORT
from ..config.uri import parse_uri
from ..errors import SettingsError

_LOGGER = logging.getLogger(__name__)


async def check(uri: str, seconds: float) -> bool:
    async with asyncio.timeout(seconds), AsyncClient.from_uri(uri) as client:
        await client.write_event(Describe().event())
        while (event := await client.read_event()) is not None:
            if Info.is_type(event.type):
                info = Info.from_event(event)
                return any(program.installed and program.voices for program in info.tts)
    return False


DEFAULT_CHECK_URI = f"tcp://127.0.0.1:{DEFAULT_PORT}"
WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104 - asked on loopback


def _server_args(cmdline: list[str]) -> list[str] | None:
    """The flags of a wyoming-wsrvc server command line (`python -m wyoming_wsrvc …` or the
    `wyoming-wsrvc` script), None for any other process."""
    for i, part in enumerate(cmdline):
        if part == "-m" and i + 1 < len(cmdline) and cmdline[i + 1] == "wyoming_wsrvc":
            return cmdline[i + 2 :]
        if Path(part).name == "wyoming-wsrvc":
            return cmdline[i + 1 :]
    return None


def server_uri(proc: Path = Path("/proc")) -> str:
    """Where the running server listens, asked on loopback (see the module's doc)."""
    for pid in sorted((p for p in proc.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)):
        try:
            cmdline = (pid / "cmdline").read_bytes().decode(errors="replace").split("\0")
            args = _server_args([part for part in cmdline if part])
            if args is None or pid.name == str(os.getpid()):
                continue
            environ = (pid / "environ").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        env = dict(item.split("=", 1) for item in environ if "=" in item)
        flags = argparse.ArgumentParser(add_help=False)
        flags.add_argument("--uri")
        uri: str | None = flags.parse_known_args(shlex.split(env.get(ARGS_ENV, "")) + args)[0].uri
        if uri is None:
            return DEFAULT_CHECK_URI
        try:
            endpoint = parse_uri(uri)
        except SettingsError:
            return DEFAULT_CHECK_URI
        if endpoint.scheme != "tcp":
            return uri
        host = WILDCARDS.get(endpoint.host, endpoint.host)
        return f"tcp://{f'[{host}]' if ':' in host else host}:{endpoint.port}"
    return DEFAULT_CHECK_URI


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m wyoming_wsrvc.server.healthcheck")
    parser.add_argument("--uri", help="the server's address (default: the running server's own)")
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    uri = args.uri or server_uri()
    try:
        healthy = asyncio.run(check(uri, args.timeout))
    except (OSError, TimeoutError) as err:
        _LOGGER.error("Unhealthy: %s: %s", uri, err)
        return 1
    if not healthy:
        _LOGGER.error("Unhealthy: no installed TTS voice in info")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
