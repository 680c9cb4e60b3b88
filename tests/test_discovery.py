"""Zeroconf registration: service type, name, port, address and properties; withdrawn on close."""

from __future__ import annotations

import socket

from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from wyoming_wsrvc.server.discovery import SERVICE_TYPE, Advertisement, Discovery, advertised_host


def test_never_advertises_the_bind_address() -> None:
    assert advertised_host("0.0.0.0") != "0.0.0.0"
    assert advertised_host(None) != "0.0.0.0"
    assert advertised_host("127.0.0.1") == "127.0.0.1"


async def test_registration_is_visible_and_withdrawn() -> None:
    advert = Advertisement(name="wsrvc-test", host="127.0.0.1", port=10234)
    discovery = Discovery(advert, interfaces=["127.0.0.1"])
    await discovery.start()
    browser = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    try:
        assert discovery._zeroconf is not None
        registry = discovery._zeroconf.zeroconf.registry
        info = registry.async_get_info_name(advert.service_name)
        assert info is not None
        assert info.type == SERVICE_TYPE == "_wyoming._tcp.local."
        assert info.name == "wsrvc-test._wyoming._tcp.local."
        assert info.port == 10234
        assert info.addresses == [socket.inet_aton("127.0.0.1")]
        assert info.properties[b"program"] == b"wsrvc"
        # A second zeroconf instance resolves it over mDNS on the loopback interface.
        found = AsyncServiceInfo(SERVICE_TYPE, advert.service_name)
        assert await found.async_request(browser.zeroconf, 3000)
        assert found.port == 10234
        assert found.parsed_addresses() == ["127.0.0.1"]
        zc = discovery._zeroconf.zeroconf
        await discovery.close()
        assert zc.registry.async_get_info_name(advert.service_name) is None
    finally:
        await browser.async_close()
