"""Zeroconf (mDNS) advertisement as `_wyoming._tcp.local.`, so Home Assistant finds the server.

`wyoming.zeroconf.HomeAssistantZeroconf` cannot unregister; this talks to `zeroconf` directly so
the service is withdrawn on shutdown. The advertised address is a real interface address, never
the bind address `0.0.0.0`.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import uuid
from dataclasses import dataclass

from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from .. import __version__

_LOGGER = logging.getLogger(__name__)

SERVICE_TYPE = "_wyoming._tcp.local."
MDNS_ADDRESS = "224.0.0.251"


def default_name() -> str:
    """The MAC address as 12 hex digits, as the wyoming package does."""
    return f"{uuid.getnode():012x}"


def advertised_host(bind_host: str | None) -> str:
    """The address to advertise: the bind address if it is a real one, else the outgoing one."""
    if bind_host:
        try:
            address = ipaddress.ip_address(bind_host)
        except ValueError:
            address = None
        if address is not None and not address.is_unspecified and address.version == 4:
            return bind_host
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.setblocking(False)
        probe.connect((MDNS_ADDRESS, 1))  # UDP: nothing is sent
        return str(probe.getsockname()[0])
    except OSError:
        return "127.0.0.1"
    finally:
        probe.close()


@dataclass(frozen=True)
class Advertisement:
    name: str
    host: str
    port: int

    @property
    def service_name(self) -> str:
        return f"{self.name}.{SERVICE_TYPE}"

    def service_info(self) -> AsyncServiceInfo:
        return AsyncServiceInfo(
            SERVICE_TYPE,
            self.service_name,
            addresses=[socket.inet_aton(self.host)],
            port=self.port,
            properties={"program": "wsrvc", "version": __version__},
            server=f"{socket.gethostname().split('.')[0] or 'wsrvc'}.local.",
        )


class Discovery:
    """Registers one service on start and withdraws it on close."""

    def __init__(self, advertisement: Advertisement, interfaces: list[str] | None = None) -> None:
        self.advertisement = advertisement
        self._interfaces = interfaces
        self._zeroconf: AsyncZeroconf | None = None
        self._info: AsyncServiceInfo | None = None

    async def start(self) -> None:
        if self._interfaces is None:
            self._zeroconf = AsyncZeroconf(ip_version=IPVersion.V4Only)
        else:
            self._zeroconf = AsyncZeroconf(interfaces=self._interfaces, ip_version=IPVersion.V4Only)
        self._info = self.advertisement.service_info()
        await self._zeroconf.async_register_service(self._info)
        _LOGGER.info(
            "Zeroconf: advertising %s at %s:%d",
            self.advertisement.service_name,
            self.advertisement.host,
            self.advertisement.port,
        )

    async def close(self) -> None:
        if self._zeroconf is None:
            return
        try:
            if self._info is not None:
                await self._zeroconf.async_unregister_service(self._info)
                _LOGGER.info("Zeroconf: withdrew %s", self.advertisement.service_name)
        finally:
            await self._zeroconf.async_close()
            self._zeroconf = None
            self._info = None
