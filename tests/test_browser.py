"""The voice studio driven in a real browser: Debian's Chromium (`/usr/bin/chromium`), headless,
through Playwright (no browser download). Add a voice from a random-weight `.pth` in the real
format, hear it (the page's audio gets as many samples as a Wyoming client hears), change the
pitch and hear that too, save, see the voice in Wyoming Info, remove it.

Run by `.ci/run` (`-m browser`), which installs Chromium first. `WSRVC_SCREENSHOTS=DIR` keeps
screenshots of the page (the README's)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from wyoming_wsrvc.devtools.loopback import speak

from .conftest import eventually
from .studio_world import Studio, StudioWorld
from .test_hot_reload import info_voices

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
TEXT = "Hello! This is how I sound now."
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]


async def test_add_hear_tune_save_and_remove_a_voice_in_the_browser(
    studio: Studio, studio_world: StudioWorld, tmp_path: Path
) -> None:
    from playwright.async_api import Page, async_playwright

    assert CHROMIUM.exists(), "install Debian's chromium (apt-get install chromium)"
    shots = os.environ.get("WSRVC_SCREENSHOTS")

    async def shot(page: Page, name: str) -> None:
        if shots:
            Path(shots).mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(Path(shots) / f"{name}.png"), full_page=True)

    pth = studio_world.new_pth(tmp_path / "My Voice.pth", seed=41)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("dialog", lambda dialog: dialog.accept())
        await page.goto(studio.url("/"))
        await page.wait_for_selector("tr[data-voice=alice]")

        # add a voice: its .pth, its fields, speech as alice speaks
        await page.fill("#add input[name=name]", "web-voice")
        await page.fill("#add input[name=description]", "Web voice")
        await page.fill("#add input[name=languages]", "en, en_US")
        await page.select_option("#add select[name=source]", "like:alice")
        await page.set_input_files("#add input[name=model]", str(pth))
        await page.fill("#add input[name=pitch_shift]", "2")
        await page.click("#add-button")
        await page.wait_for_selector("tr[data-voice=web-voice]", timeout=120_000)
        assert "Added web-voice" in (await page.text_content("#add-status") or "")
        assert "web-voice" in await info_voices(studio.port)  # Wyoming sees it at once
        row = await page.text_content("tr[data-voice=web-voice]") or ""
        assert "v2 · HiFi-GAN · 40 kHz · contentvec" in row
        assert "RTF" in row  # measured at its warm-up

        # hear it: the page plays the stream; its audio has what a Wyoming client hears
        await page.fill("#text", TEXT)
        await page.click("#speak")
        take = await page.wait_for_selector("#takes li.take", timeout=60_000)
        assert take is not None
        samples = int(await take.get_attribute("data-samples") or 0)
        assert await take.get_attribute("data-rate") == "40000"
        assert float(await take.get_attribute("data-scheduled") or 0) == pytest.approx(
            samples / 40000, abs=1e-3
        )
        assert int(await take.get_attribute("data-first") or -1) > 0
        heard = await speak(studio.port, TEXT, "web-voice")
        assert samples == len(heard.audio) // 2 > 40000
        await shot(page, "studio-voices")

        # change the pitch, hear it again: two takes to compare
        await page.eval_on_selector(
            "#tune input[name=pitch_shift]",
            "e => { e.value = '5'; e.dispatchEvent(new Event('input')); }",
        )
        assert await page.text_content('output[data-for="pitch_shift"]') == "5"
        await page.click("#speak")
        await page.wait_for_function("document.querySelectorAll('#takes li.take').length == 2")
        newest = await page.get_attribute("#takes li.take", "data-settings")
        assert '"pitch_shift":5' in (newest or "")
        profile_file = next(studio.folder.glob("studio-*.yaml"))
        assert yaml.safe_load(profile_file.read_text())["rvc"]["pitch_shift"] == 2  # not saved
        await shot(page, "studio-tune")

        # save: the file and the voice Wyoming clients get change
        await page.click("#save")
        await page.wait_for_function(
            "document.querySelector('#tune-status').textContent.startsWith('Saved')"
        )
        assert yaml.safe_load(profile_file.read_text())["rvc"]["pitch_shift"] == 5
        rvc = studio.context.catalog.voices["web-voice"].rvc
        assert rvc is not None
        assert rvc.pitch_shift == 5
        assert "web-voice" in await info_voices(studio.port)

        # remove it
        await page.click("tr[data-voice=web-voice] button.remove")
        await page.wait_for_selector("tr[data-voice=web-voice]", state="detached")
        await eventually(lambda: "web-voice" not in studio.context.catalog.voices)
        assert "web-voice" not in await info_voices(studio.port)
        assert not profile_file.exists()
        assert not errors, errors
        await browser.close()


async def test_the_page_works_behind_an_ingress_path(studio: Studio) -> None:
    """Home Assistant serves an add-on's ingress page at /api/hassio_ingress/<token>/ and forwards
    each request without that prefix: a proxy that does the same, and the page through it."""
    from aiohttp import ClientSession, web
    from playwright.async_api import async_playwright

    prefix = "/api/hassio_ingress/abc123"

    async def forward(request: web.Request) -> web.StreamResponse:
        path = request.path_qs[len(prefix) :] or "/"
        async with (
            ClientSession() as session,
            session.request(
                request.method,
                studio.url(path),
                data=await request.read(),
                headers={
                    k: v for k, v in request.headers.items() if k.lower() in ("content-type",)
                },
            ) as upstream,
        ):
            response = web.StreamResponse(status=upstream.status)
            for key in ("Content-Type", "X-Sample-Rate", "Location"):
                if key in upstream.headers:
                    response.headers[key] = upstream.headers[key]
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            return response

    app = web.Application()
    app.router.add_route("*", prefix + "/{tail:.*}", forward)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
            page = await browser.new_page()
            await page.goto(f"http://127.0.0.1:{port}{prefix}/")
            await page.wait_for_selector("tr[data-voice=alice]")
            await page.click("tr[data-voice=alice] button.tune")
            await page.fill("#text", "Hello there.")
            await page.click("#speak")
            take = await page.wait_for_selector("#takes li.take", timeout=60_000)
            assert take is not None
            heard = await speak(studio.port, "Hello there.", "alice")
            assert int(await take.get_attribute("data-samples") or 0) == len(heard.audio) // 2
            await browser.close()
    finally:
        await runner.cleanup()
