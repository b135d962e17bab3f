"""The console's security from outside: a real `chatlane run` with `[http] console = true`
and a token, driven by a plain HTTP client (what a browser or an attacker's page sends)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest

from bots.http.console.auth import COOKIE, CSP
from bots.http.service import refusal
from bots.testing import ChatlaneProcess
from bots.testing.process import write_config
from tests.bots.console.support import CSRF, ENV, EVIL_KEY, EVIL_USER, TOKEN, fill_store, login

pytestmark = pytest.mark.slow


@pytest.fixture
async def chatlane(tmp_path: Path) -> AsyncIterator[ChatlaneProcess]:
    await fill_store(tmp_path / "state", 3, extra=(EVIL_KEY,))
    config = write_config(tmp_path, "console = true\n")
    async with await ChatlaneProcess.start(config, tmp_path / "run.log", env=ENV) as child:
        yield child


async def test_the_console_is_off_unless_configured(tmp_path: Path) -> None:
    config = write_config(tmp_path, "")
    async with (
        await ChatlaneProcess.start(config, tmp_path / "run.log", env=ENV) as child,
        aiohttp.ClientSession() as http,
        http.get(f"{child.url}/console") as resp,
    ):
        assert resp.status == 404


def test_a_public_bind_without_a_token_refuses_to_start() -> None:
    # The console lives on the API's listener: the API's rule covers it.
    assert refusal("0.0.0.0", token_set=False, token_env="CHATLANE_HTTP_TOKEN") is not None
    assert refusal("127.0.0.1", token_set=False, token_env="CHATLANE_HTTP_TOKEN") is None


async def test_without_a_session_every_page_leads_to_the_login_form(chatlane: ChatlaneProcess) -> None:
    root = chatlane.url
    async with aiohttp.ClientSession() as http:
        for path in ("/console", "/console/health", f"/console/c/{quote(EVIL_KEY, safe='')}"):
            async with http.get(root + path, allow_redirects=False) as resp:
                assert resp.status == 303, path
                assert resp.headers["Location"] == "/console/login"
        async with http.get(root + "/console/c/agent%3Amain%3Ahttp%3Ax%3Aapi/live") as resp:
            assert resp.status == 401
        async with http.post(
            f"{root}/console/login", data={"token": "wrong", "operator": "x"}, allow_redirects=False
        ) as resp:
            assert resp.status == 401
            assert COOKIE not in resp.cookies
            assert TOKEN not in await resp.text()
        # The API token as a cookie or in the URL is not a session.
        async with http.get(
            f"{root}/console?token={TOKEN}", headers={"Cookie": f"{COOKIE}={TOKEN}"}, allow_redirects=False
        ) as resp:
            assert resp.status == 303


async def test_the_session_cookie_is_strict_http_only_and_holds_no_token(chatlane: ChatlaneProcess) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{chatlane.url}/console/login", data={"token": TOKEN, "operator": "ann"}, allow_redirects=False
        ) as resp:
            cookie = resp.cookies[COOKIE]
        assert cookie["httponly"] is True
        assert cookie["samesite"] == "Strict"
        assert cookie["path"] == "/console"
        assert TOKEN not in cookie.value
        tampered = cookie.value[:-1] + ("0" if cookie.value[-1] != "0" else "1")
        async with http.get(
            f"{chatlane.url}/console", headers={"Cookie": f"{COOKIE}={tampered}"}, allow_redirects=False
        ) as resp:
            assert resp.status == 303


async def test_a_forged_cross_site_post_is_refused(chatlane: ChatlaneProcess) -> None:
    root = chatlane.url
    key = quote("agent:main:http:user-00001:api", safe="")
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        await login(http, root)
        async with http.get(f"{root}/console/c/{key}") as resp:
            m = CSRF.search(await resp.text())
            assert m is not None
            csrf = m.group(1)
        forged = [
            ({"csrf": csrf}, {"Origin": "https://evil.example"}),  # right token, other origin
            ({"csrf": csrf}, {"Sec-Fetch-Site": "cross-site"}),
            ({}, {"Origin": root}),  # no CSRF token (a form on another site cannot know it)
            ({"csrf": "0" * 64}, {"Origin": root}),
        ]
        for form, headers in forged:
            async with http.post(
                f"{root}/console/c/{key}/new", data=form, headers=headers, allow_redirects=False
            ) as resp:
                assert resp.status == 403, (form, headers)
        async with http.post(
            f"{root}/console/login", data={"token": TOKEN}, headers={"Sec-Fetch-Site": "cross-site"}
        ) as resp:
            assert resp.status == 403
        # The same action from the page itself goes through.
        async with http.post(
            f"{root}/console/c/{key}/new",
            data={"csrf": csrf},
            headers={"Origin": root},
            allow_redirects=False,
        ) as resp:
            assert resp.status == 303
    assert "operator tester asked new" in chatlane.stderr()
    assert chatlane.stderr().count("console: refused a POST") >= len(forged)


async def test_a_key_with_html_in_it_is_shown_escaped_and_headers_are_strict(
    chatlane: ChatlaneProcess,
) -> None:
    root = chatlane.url
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        await login(http, root)
        pages = [
            "/console",
            "/console/health",
            f"/console/c/{quote(EVIL_KEY, safe='')}",
            "/console/static/console.js",
        ]
        bodies = {}
        for path in pages:
            async with http.get(root + path) as resp:
                bodies[path] = await resp.text()
                assert resp.headers["Content-Security-Policy"] == CSP, path
                assert "script-src 'self'" in CSP and "frame-ancestors 'none'" in CSP
                assert resp.headers["Cache-Control"] == "no-store", path
                assert resp.headers["X-Content-Type-Options"] == "nosniff", path
        listing = bodies["/console"]
        assert EVIL_USER not in listing
        assert "&lt;img src=x onerror=alert(1)&gt;" in listing
        assert "<script>" not in listing and "onerror=alert(1)>" not in listing
        assert EVIL_USER not in bodies[f"/console/c/{quote(EVIL_KEY, safe='')}"]  # a 404 page, escaped
        assert TOKEN not in "".join(bodies.values())
