"""`[metrics]`: liveness, readiness and a token-guarded /metrics on a listener of its own,
for any set of bots (a Discord-only bot here: no HTTP API at all)."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import pytest

from bots.health import HealthService
from bots.http.service import HttpService
from bots.launcher import load_config
from bots.runtime import Runtime, StartupError
from bots.testing import ChatlaneProcess, RedisServer, eventually
from bots.testing.fake_discord import FakeDiscord

METRICS_AT = re.compile(r"metrics: running \(/livez /readyz /metrics on (http://127\.0\.0\.1:\d+)")
SCRAPE = "scrape-secret-1"


async def _get(http: aiohttp.ClientSession, url: str, token: str = "") -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.get(url, headers=headers) as resp:
        return resp.status, await resp.text()


async def test_a_discord_only_bot_has_liveness_readiness_and_guarded_metrics(tmp_path: Path) -> None:
    """Before: health and metrics existed only inside the HTTP API."""
    fake = await FakeDiscord().start()
    config = tmp_path / "chatlane.toml"
    config.write_text(
        '[store]\npath = "state"\n[http]\nenabled = false\n'
        "[metrics]\nenabled = true\nport = 0\n"
        f'[discord]\nenabled = true\ntoken_env = "DTOKEN"\napi_base_url = "{fake.api_base}"\n'
        f'gateway_url = "{fake.gateway_url}"\nguild_ready_timeout_s = 0.05\n',
        encoding="utf-8",
    )
    env = {"DTOKEN": fake.token, "CHATLANE_METRICS_TOKEN": SCRAPE}
    process = await ChatlaneProcess.start(config, tmp_path / "run.log", env=env)
    try:
        found = METRICS_AT.search(process.stderr())
        assert found is not None, process.stderr()
        root = found.group(1)
        await fake.send_message("hello", mention=True)
        await fake.wait_for_sent(fake.channel_id, timeout=20)
        async with aiohttp.ClientSession() as http:
            assert await _get(http, f"{root}/livez") == (200, '{"status": "ok"}')
            assert (await _get(http, f"{root}/healthz"))[0] == 200
            status, body = await _get(http, f"{root}/readyz")
            assert status == 200, body
            assert '"discord": "ok"' in body and '"store": "ok"' in body
            assert (await _get(http, f"{root}/metrics"))[0] == 401  # no scrape token
            assert (await _get(http, f"{root}/metrics", "wrong"))[0] == 401

            async def turn_over() -> str:
                # The streamed post is seen before its turn ends (commit, then deliver): the
                # turn's metrics settle a moment after it.
                status, text = await _get(http, f"{root}/metrics", SCRAPE)
                assert status == 200
                done = "chatlane_running_turns 0.0" in text
                return text if done and "_count{agent=" in text else ""

            text = await eventually(turn_over, timeout=20)
        assert 'chatlane_model_latency_seconds_count{agent="main",platform="discord"} 1.0' in text
        assert 'chatlane_model_errors_total{agent="main",platform="discord"} 0.0' in text  # bound once
    finally:
        await process.terminate()
        await fake.close()


async def _runtime(tmp_path: Path, extra: str = "", store: str = 'path = "state"') -> Runtime:
    """A runtime whose `[metrics]` section holds `extra`; `store`: the `[store]` lines."""
    config = tmp_path / "chatlane.toml"
    config.write_text(f"[store]\n{store}\n[http]\nport = 0\n[metrics]\nenabled = true\nport = 0\n{extra}")
    return Runtime.build(load_config(config, env={}))


async def test_readyz_names_what_is_not_ready(tmp_path: Path) -> None:
    runtime = await _runtime(tmp_path)
    api = HttpService(runtime)
    health = HealthService(runtime, [api])
    await health.start()
    try:
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{health.port}/readyz"
            status, body = await _get(http, url)
            assert status == 503
            assert '"http": "not started"' in body
            await api.start()
            health.started.add(api.name)
            status, body = await _get(http, url)
            assert status == 200, body
            assert (await _get(http, f"http://127.0.0.1:{health.port}/livez"))[0] == 200
    finally:
        await api.stop()
        await health.stop()
        await runtime.close()


async def test_readyz_says_the_store_is_unreachable_while_livez_stays_ok(
    tmp_path: Path, private_redis_server: RedisServer
) -> None:
    server = private_redis_server
    runtime = await _runtime(tmp_path, store=f'backend = "redis"\nurl = "{server.url}"')
    health = HealthService(runtime, [])
    await health.start()
    try:
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{health.port}"
            assert (await _get(http, f"{url}/readyz"))[0] == 200
            server.stop()
            status, body = await _get(http, f"{url}/readyz")
            assert status == 503
            assert '"store": "unreachable' in body or '"store": "no answer' in body
            assert (await _get(http, f"{url}/livez"))[0] == 200
    finally:
        await health.stop()
        await runtime.close()


async def test_metrics_off_loopback_without_a_scrape_token_refuses_to_start(tmp_path: Path) -> None:
    runtime = await _runtime(tmp_path, 'host = "0.0.0.0"\n')
    try:
        with pytest.raises(StartupError, match="CHATLANE_METRICS_TOKEN"):
            await HealthService(runtime, []).start()
    finally:
        await runtime.close()
