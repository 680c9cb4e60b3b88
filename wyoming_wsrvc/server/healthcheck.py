"""Health check: a real describe → info round trip (a bare port probe stays green on a wedged loop).

Usage: ``python -m wyoming_wsrvc.healthcheck [--uri tcp://127.0.0.1:10210] [--timeout 10]``;
exit status 0 when the server answered with at least one installed TTS voice.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from wyoming.client import AsyncClient
from wyoming.info import Describe, Info

from ..config.settings import DEFAULT_PORT

_LOGGER = logging.getLogger(__name__)


async def check(uri: str, seconds: float) -> bool:
    async with asyncio.timeout(seconds), AsyncClient.from_uri(uri) as client:
        await client.write_event(Describe().event())
        while (event := await client.read_event()) is not None:
            if Info.is_type(event.type):
                info = Info.from_event(event)
                return any(program.installed and program.voices for program in info.tts)
    return False


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m wyoming_wsrvc.healthcheck")
    parser.add_argument("--uri", default=f"tcp://127.0.0.1:{DEFAULT_PORT}")
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    try:
        healthy = asyncio.run(check(args.uri, args.timeout))
    except (OSError, TimeoutError) as err:
        _LOGGER.error("Unhealthy: %s", err)
        return 1
    if not healthy:
        _LOGGER.error("Unhealthy: no installed TTS voice in info")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
