"""The console in a REAL headless browser (Debian's chromium driven by Playwright) against
a running chatlane with the fake Discord and a slow echo agent: log in, see the
conversation appear, watch its live answer grow, Stop it (and see it stop in Discord),
start a new session, page through 1,000 sessions made in the store beforehand.

CHATLANE_SCREENSHOTS=1 saves the main views to docs/images/ (done once, committed).
Without chromium this skips, except in CI (CI=true), where it fails.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import pytest

from bots.testing import ChatlaneProcess, eventually
from bots.testing.fake_discord import FakeDiscord
from core.conversation.lanes import STOPPED_TEXT
from core.turn import STOPPED_MARK
from tests.bots.console.support import ENV, TOKEN, fill_store

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SESSIONS = 1000
SHOTS = Path(__file__).resolve().parents[3] / "docs" / "images"


def _need_browser() -> None:
    missing = None
    if not os.path.exists(CHROMIUM):
        missing = "chromium is not installed (apt-get install chromium; .ci/run does)"
    else:
        try:
            import playwright.async_api  # noqa: F401
        except ImportError:
            missing = "the playwright package is not installed (pip install -e '.[test]')"
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(missing)
        pytest.skip(missing)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    server = await FakeDiscord().start()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
async def chatlane(tmp_path: Path, fake: FakeDiscord) -> AsyncIterator[ChatlaneProcess]:
    await fill_store(tmp_path / "state", SESSIONS)
    config = tmp_path / "chatlane.toml"
    config.write_text(
        f'[store]\npath = "{tmp_path / "state"}"\n[agent]\necho_delay_ms = 2500\nmodels = ["small", "big"]\n'
        "[http]\nport = 0\nconsole = true\n"
        f'[discord]\nenabled = true\napi_base_url = "{fake.api_base}"\ngateway_url = "{fake.gateway_url}"\n'
        "guild_ready_timeout_s = 0.05\nsync_commands = false\n",
        encoding="utf-8",
    )
    async with await ChatlaneProcess.start(config, tmp_path / "run.log", env=ENV) as child:
        await eventually(lambda: fake.connections >= 1, timeout=20)
        yield child


async def test_an_operator_watches_stops_and_resets_a_discord_conversation(
    chatlane: ChatlaneProcess, fake: FakeDiscord
) -> None:
    _need_browser()
    from playwright.async_api import async_playwright, expect

    shots = os.environ.get("CHATLANE_SCREENSHOTS") == "1"
    key = f"agent:main:discord:{fake.alice_id}:{fake.channel_id}"
    root = chatlane.url
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = await browser.new_page(
                viewport={"width": 1200, "height": 800}, timezone_id="Europe/Berlin"
            )
            page.set_default_timeout(15_000)
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

            # Log in: the list shows up; the conversation appears once alice talks.
            await page.goto(f"{root}/console")
            assert page.url.endswith("/console/login")
            if shots:
                await page.screenshot(path=str(SHOTS / "console-login.png"))
            await page.fill("#token", TOKEN)
            await page.fill("#operator", "ann")
            await page.press("#operator", "Enter")  # the keyboard is enough
            await page.wait_for_url(f"{root}/console")
            await fake.send_message("first words", mention=True)
            await eventually(lambda: any("(turn 1" in t for t in fake.shown_in(fake.channel_id)), timeout=15)
            await page.goto(f"{root}/console?platform=discord")
            link = page.get_by_role("link", name=key)
            await link.wait_for()
            # Times are localized by the page's script (the browser's zone, not UTC).
            assert "UTC" not in await page.locator("td time").first.inner_text()
            if shots:
                await page.screenshot(path=str(SHOTS / "console-conversations.png"))
            await link.click()
            await page.wait_for_url(f"{root}/console/c/{quote(key, safe='')}")

            # The live answer grows: the first piece, then (2.5 s later) the rest.
            live = page.locator("#live")
            await fake.send_message("watch me grow", mention=True)
            await expect(live).to_contain_text("echo: watch me grow")
            assert "(turn" not in await live.inner_text()  # not done yet: it is growing
            await fake.send_message("stop me", mention=True)  # queued behind it
            # Grown to its end (kept below once the next answer starts streaming).
            await expect(page.locator("#live-last")).to_contain_text("echo: watch me grow\n(turn 2")

            # The next message is pending in the durable inbox until its turn's commit.
            await page.reload()
            pending = page.locator("section", has=page.locator("#p-h"))
            await expect(pending).to_contain_text("stop me")
            if shots:
                await page.screenshot(path=str(SHOTS / "console-live.png"), full_page=True)

            # Stop: a turn mid-answer stops, and Discord shows it stopped.
            await expect(live).to_contain_text("echo: stop me")
            await page.get_by_role("button", name="Stop the answer").click()
            await page.locator(".notice").wait_for()
            # Discord shows the turn stopped: its draft marked, or (not posted yet) the stop reply.
            await eventually(
                lambda: any(
                    t == STOPPED_TEXT or ("echo: stop me" in t and STOPPED_MARK in t)
                    for t in fake.shown_in(fake.channel_id)
                ),
                timeout=10,
            )
            assert not any("echo: stop me" in t and "(turn 3" in t for t in fake.shown_in(fake.channel_id))

            # New session: the conversation's session changes.
            session_row = page.locator("tr", has=page.locator("th", has_text="Session")).first
            before = await session_row.inner_text()
            await page.get_by_role("button", name="New session").click()
            await page.locator(".notice").wait_for()
            await eventually(lambda: _session_changed(chatlane, key), timeout=10)
            await page.reload()
            assert await session_row.inner_text() != before

            # Change model: the conversation's model is the one picked.
            await page.select_option("#model", "big")
            await page.get_by_role("button", name="Change model").click()
            await page.locator(".notice").wait_for()
            model_row = page.locator("tr", has=page.locator("th", has_text="Model")).first
            await expect(model_row).to_contain_text("big")

            # Send a notice: the bot says it in the Discord channel.
            await page.fill("#notice-text", "Maintenance at noon <b>today</b>")
            await page.get_by_role("button", name="Send", exact=True).click()
            await page.locator(".notice").wait_for()
            await eventually(
                lambda: "Maintenance at noon <b>today</b>" in fake.shown_in(fake.channel_id), timeout=10
            )

            # Health: the Discord adapter, the store, the turn chart.
            await page.goto(f"{root}/console/health")
            assert await page.locator("svg.chart").count() == 1
            assert "reachable" in await page.locator("table.facts").inner_text()
            if shots:
                await page.screenshot(path=str(SHOTS / "console-health.png"), full_page=True)

            # Page through every session: 1,000 made in the store + alice's.
            await page.goto(f"{root}/console")
            seen: set[str] = set()
            for _ in range(SESSIONS // 100 + 3):
                seen.update(await page.locator("tbody td:first-child code").all_inner_texts())
                following = page.get_by_role("link", name="Next page")
                last_page = await following.count() == 0
                if last_page:
                    break
                await following.click()
                await page.wait_for_load_state()
            assert len(seen) == SESSIONS + 1
            assert key in seen
            assert errors == []  # no CSP violation, no script error
        finally:
            await browser.close()


def _session_changed(chatlane: ChatlaneProcess, key: str) -> bool:
    return f"session of {key} reset to" in chatlane.stderr()


async def test_the_pages_read_without_javascript(chatlane: ChatlaneProcess, fake: FakeDiscord) -> None:
    _need_browser()
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            context = await browser.new_context(java_script_enabled=False)
            page = await context.new_page()
            page.set_default_timeout(15_000)
            await page.goto(f"{chatlane.url}/console/login")
            await page.fill("#token", TOKEN)
            await page.click("button[type=submit]")
            await page.wait_for_url(f"{chatlane.url}/console")
            # Without the script, times read in UTC.
            assert "UTC" in await page.locator("td time").first.inner_text()
            assert await page.locator("tbody tr").count() == 100
            await asyncio.sleep(0)  # nothing else to wait for: the page is whole as served
        finally:
            await browser.close()
