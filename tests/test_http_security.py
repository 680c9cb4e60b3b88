"""Who may use the studio and the HTTP APIs, over real sockets: loopback by default, a token
for anything else (Bearer, or the page's cookie), only the ingress proxy in the add-on, no
request through a foreign `Host` (DNS rebinding) or from a foreign `Origin` (another web site
in the same browser), and every refusal a JSON error."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from wyoming_wsrvc.config.http_settings import HttpSettings, parse_http
from wyoming_wsrvc.config.voices import VoiceProfile
from wyoming_wsrvc.devtools.loopback import serving_studio
from wyoming_wsrvc.engine.pipeline import Pipeline
from wyoming_wsrvc.errors import SettingsError

from .conftest import FakeSpeech, eventually, server_context

TOKEN = "0123456789abcdef-token"  # noqa: S105 - a test token
Served = Callable[..., AbstractAsyncContextManager[tuple[int, aiohttp.ClientSession]]]


@pytest.fixture
def served(voices: dict[str, VoiceProfile]) -> Served:
    @asynccontextmanager
    async def start(**settings: Any) -> AsyncIterator[tuple[int, aiohttp.ClientSession]]:
        context = server_context(Pipeline(FakeSpeech()), voices, "alice")
        http = HttpSettings(host="127.0.0.1", port=0, **settings)
        async with (
            serving_studio(context, http) as (_, port),
            aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session,
        ):
            yield port, session

    return start


async def code_of(response: aiohttp.ClientResponse) -> str:
    assert response.content_type == "application/json"
    return str((await response.json())["error"]["code"])


def test_the_listener_is_loopback_unless_a_token_or_ingress_guards_it() -> None:
    assert parse_http("10211", None, False).host == "127.0.0.1"
    assert parse_http("http://:10211", None, False).host == "127.0.0.1"
    assert parse_http("http://localhost:10211", None, False).loopback
    with pytest.raises(SettingsError, match=r"reachable from other machines.*--http-token"):
        parse_http("http://0.0.0.0:10211", None, False)
    with pytest.raises(SettingsError, match="reachable from other machines"):
        parse_http("http://192.168.1.5:10211", None, False)
    assert parse_http("http://0.0.0.0:10211", TOKEN, False).token == TOKEN
    ingress = parse_http("http://0.0.0.0:8099", None, True)
    assert ingress.peers == ("172.30.32.2",)
    with pytest.raises(SettingsError, match="at least 16"):
        parse_http("http://0.0.0.0:10211", "short", False)
    with pytest.raises(SettingsError, match="no port"):
        parse_http("http://127.0.0.1", None, False)
    with pytest.raises(SettingsError, match="unknown scheme"):
        parse_http("https://127.0.0.1:1", None, False)


async def test_a_token_is_needed_for_every_request(served: Served) -> None:
    async with served(token=TOKEN) as (port, http):
        base = f"http://127.0.0.1:{port}"
        for path in ("api/voices", "v1/voices", "metrics"):
            async with http.get(f"{base}/{path}") as response:
                assert response.status == 401
                assert await code_of(response) == "unauthorized"
        headers = {"Authorization": "Bearer wrong-token-wrong-token"}
        async with http.get(f"{base}/api/voices", headers=headers) as response:
            assert response.status == 401
        async with http.post(
            f"{base}/v1/audio/speech", json={"input": "Hi.", "voice": "alice"}
        ) as response:
            assert response.status == 401
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with http.get(f"{base}/v1/voices", headers=headers) as response:
            assert response.status == 200
        # the page: without the token, the sign-in form; /?token=… keeps it as a cookie
        async with http.get(f"{base}/", allow_redirects=False) as response:
            assert response.status == 302
            assert response.headers["Location"] == "login"
        async with http.get(f"{base}/login") as response:
            assert 'name="token"' in await response.text()
        async with http.post(f"{base}/login", data={"token": "nope"}) as response:
            assert response.status == 401
        assert not http.cookie_jar.filter_cookies(URL(base))
        async with http.get(f"{base}/?token={TOKEN}", allow_redirects=False) as response:
            assert response.status == 302
            assert response.headers["Location"] == "./"  # the token leaves the address bar
            assert "HttpOnly" in response.headers["Set-Cookie"]
        async with http.get(f"{base}/api/voices") as response:  # the cookie is enough now
            assert response.status == 200
    async with served(token=TOKEN) as (port, http):
        base = f"http://127.0.0.1:{port}"
        async with http.post(f"{base}/login", data={"token": TOKEN}) as response:
            assert response.status == 200  # followed the redirect to the page
            assert "Voice studio" in await response.text()


async def test_only_the_ingress_proxy_may_connect_in_the_add_on(served: Served) -> None:
    async with served(peers=("172.30.32.2",)) as (port, http):
        for path in ("", "api/voices", "v1/voices", "metrics", "static/studio.js"):
            async with http.get(f"http://127.0.0.1:{port}/{path}") as response:
                assert response.status == 403
                assert await code_of(response) == "forbidden"


async def test_no_foreign_host_or_origin_reaches_a_loopback_studio(served: Served) -> None:
    async with served() as (port, http):
        base = f"http://127.0.0.1:{port}"
        # a web page served as evil.example whose name now points at 127.0.0.1
        async with http.get(
            f"{base}/api/voices", headers={"Host": f"evil.example:{port}"}
        ) as response:
            assert response.status == 403
        async with http.get(f"{base}/api/voices", headers={"Host": f"localhost:{port}"}) as ok:
            assert ok.status == 200
        # another site open in the same browser posts to the studio
        body = {"input": "Hi.", "voice": "alice", "response_format": "wav"}
        evil = {"Origin": "http://evil.example"}
        async with http.post(f"{base}/v1/audio/speech", json=body, headers=evil) as response:
            assert response.status == 403
            assert "cross-origin" in (await response.json())["error"]["message"]
        async with http.delete(f"{base}/api/voices/alice", headers=evil) as response:
            assert response.status == 403
        own = {"Origin": base}
        async with http.post(f"{base}/v1/audio/speech", json=body, headers=own) as response:
            assert response.status == 200
            assert (await response.read())[:4] == b"RIFF"


async def test_bad_requests_get_json_errors(served: Served) -> None:
    async with served() as (port, http):
        base = f"http://127.0.0.1:{port}"
        async with http.get(f"{base}/api/nothing-here") as response:
            assert response.status == 404
            assert await code_of(response) == "not-found"
        async with http.get(f"{base}/v1/audio/speech") as response:
            assert response.status == 405
        async with http.post(f"{base}/api/speak", data=b"[1, 2") as response:
            assert response.status == 400
            assert await code_of(response) == "invalid-request"
        async with http.post(
            f"{base}/api/speak", json={"voice": "alice", "text": "x" * (2 * 1024 * 1024)}
        ) as response:
            assert response.status == 413
        # voices the server cannot change (no voices folder of the user's): refused, not written
        async with http.delete(f"{base}/api/voices/alice") as response:
            assert response.status == 409
            assert await code_of(response) == "read-only"


async def test_the_page_speaks_a_served_voice_unchanged(served: Served, tmp_path: Path) -> None:
    """The studio's speak with no changes is the served voice itself (its profile read back
    from its document is the same profile)."""
    async with (
        served() as (port, http),
        http.post(
            f"http://127.0.0.1:{port}/api/speak", json={"voice": "alice", "text": "Hello there."}
        ) as response,
    ):
        assert response.status == 200
        assert response.headers["X-Sample-Rate"] == "24000"
        assert len(await response.read()) > 0


async def test_a_listener_that_goes_away_stops_its_work(voices: dict[str, VoiceProfile]) -> None:
    speech = FakeSpeech(delay=0.3)
    context = server_context(Pipeline(speech), voices, "alice")
    text = " ".join(f"Sentence number {n} is here." for n in range(12))
    async with serving_studio(context) as (_, port), aiohttp.ClientSession() as http:
        response = await http.post(
            f"http://127.0.0.1:{port}/v1/audio/speech",
            json={"input": text, "voice": "alice", "response_format": "pcm"},
        )
        await response.content.readany()  # the first audio
        response.close()  # gone
        await eventually(context.scheduler.decoder.idle, within=10)
        spoken = len(speech.calls)
        assert spoken < 12
        async with http.post(
            f"http://127.0.0.1:{port}/v1/audio/speech",
            json={"input": "Still here.", "voice": "alice", "response_format": "wav"},
        ) as again:
            assert again.status == 200
            assert len(await again.read()) > 44
