"""Access: the HTTP token, secrets kept out of logs and replies, private state files, and
Slack/Discord allowlists that threads, edits and bot messages cannot get around."""

from __future__ import annotations

import asyncio
import json
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from bots.testing import ChatlaneProcess, run_cli, write_config
from bots.testing.fake_discord import JSON, FakeDiscord, user_obj
from bots.testing.fake_slack import DM, GENERAL, HUMAN, FakeSlack, message_event
from core.model.messages import Inbound
from core.turn.responders import FutureResponder
from tests.support.discord import StartBot
from tests.support.http import COMPLETIONS, body, serve
from tests.support.slack import Bot, mention, running, submitted

SECRETS = {
    "CHATLANE_HTTP_TOKEN": "httptok-7f3a9c1e5b20",
    "OPENAI_API_KEY": "sk-live-5e8d2a7c4b91",
    "SLACK_BOT_TOKEN": "xoxb-slk-4c9e1a7f3d",
    "SLACK_SIGNING_SECRET": "signsec-8b2d6f0a3e17",
    "CHATLANE_DISCORD_TOKEN": "disc-9a8b7c6d5e4f",
}


# ------------------------------------------------------------------ HTTP token
def test_the_api_refuses_to_listen_off_loopback_without_a_token(tmp_path: Path) -> None:
    config = write_config(tmp_path, 'host = "0.0.0.0"')  # lands in [http]
    done = run_cli("run", "--config", str(config), env={"CHATLANE_HTTP_TOKEN": None})
    assert done.returncode == 1, done.stderr
    assert "refusing to listen on '0.0.0.0' without a token" in done.stderr
    assert "Traceback" not in done.stderr


async def test_without_the_right_token_nothing_but_healthz_is_served(tmp_path: Path) -> None:
    token = SECRETS["CHATLANE_HTTP_TOKEN"]
    async with serve(tmp_path, env={"CHATLANE_HTTP_TOKEN": token}) as api:
        for given in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token}):
            status, payload, _ = await api.post(body("hi", user="eve"), given)
            assert status == 401 and token not in json.dumps(payload)
        for path in ("/v1/models", "/metrics"):
            async with api.http.get(api.url(path)) as resp:
                assert resp.status == 401
        async with api.http.get(api.url("/healthz")) as resp:
            assert resp.status == 200
        assert (await api.runtime.store.list()).entries == [], "a refused request made no session"
        status, _, _ = await api.post(body("hi", user="ann"), {"Authorization": f"Bearer {token}"})
        assert status == 200


async def test_a_non_utf8_authorization_header_is_a_401(tmp_path: Path) -> None:
    """Found by this suite: it was a 400 "invalid_session_key" quoting the codec error
    (fixed in bots/openai_http.py by its owner, f783f05)."""
    async with serve(tmp_path, env={"CHATLANE_HTTP_TOKEN": SECRETS["CHATLANE_HTTP_TOKEN"]}) as api:
        payload = json.dumps(body("hi")).encode()
        reader, writer = await asyncio.open_connection("127.0.0.1", api.service.port)
        writer.write(
            b"POST " + COMPLETIONS.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Authorization: Bearer \xff\xfe\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload
        )
        async with asyncio.timeout(10):
            raw = await reader.read()
        writer.close()
        assert raw.startswith(b"HTTP/1.1 401"), raw[:200]


async def test_an_api_client_cannot_join_another_platforms_conversation(tmp_path: Path) -> None:
    async with serve(tmp_path) as api:
        responder = FutureResponder()
        said = Inbound("discord", "111", "222", "my secret plan", "m1", is_direct=True, mentioned_bot=True)
        await api.runtime.gateway.submit(said, responder)
        async with asyncio.timeout(10):
            await responder.reply
        status, payload, _ = await api.post(
            body("what did I say?"), {"X-Session-Key": "agent:main:discord:111:222"}
        )
        assert "my secret plan" not in json.dumps(payload)
        assert status == 403
        assert payload["error"]["code"] == "foreign_platform_key"


# ------------------------------------------------------------------ secrets
async def _leaky_upstream(request: web.Request) -> web.Response:
    """An LLM server that echoes the API key in its error, as some providers do."""
    key = request.headers.get("Authorization", "")
    error = {"message": f"Incorrect API key provided: {key}", "type": "invalid_request_error"}
    return web.json_response({"error": error}, status=401)


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", _leaky_upstream)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    await runner.cleanup()


@pytest.mark.slow
async def test_no_secret_reaches_a_real_processs_logs_or_any_reply(
    tmp_path: Path, upstream: str, fake: FakeDiscord
) -> None:
    """A real `chatlane run --log-level DEBUG` with HTTP, Slack, Discord and an OpenAI
    agent whose server echoes the API key in its error: wrong tokens, a failing agent
    and a Discord turn later, neither stderr nor any reply holds a configured secret."""
    slack = await FakeSlack(bot_tokens=(SECRETS["SLACK_BOT_TOKEN"],)).start()
    fake.token = SECRETS["CHATLANE_DISCORD_TOKEN"]
    config = write_config(
        tmp_path,
        f'[agent]\nbackend = "openai"\n[agent.openai]\nbase_url = "{upstream}"\nmax_retries = 0\n'
        f'[slack]\nenabled = true\nmode = "http"\nport = 0\napi_base_url = "{slack.api_base}"\n'
        f'[discord]\nenabled = true\ntoken_env = "CHATLANE_DISCORD_TOKEN"\n'
        f'api_base_url = "{fake.api_base}"\ngateway_url = "{fake.gateway_url}"\n'
        "guild_ready_timeout_s = 0.05\nsync_commands = false\n",
    )
    log = tmp_path / "stderr.log"
    log.touch()
    replies: list[str] = []
    try:
        child = await ChatlaneProcess.start(config, log, env=SECRETS, options=("--log-level", "DEBUG"))
        try:
            async with aiohttp.ClientSession() as http:
                token = SECRETS["CHATLANE_HTTP_TOKEN"]
                for auth in (f"Bearer {token}x", f"Bearer {token[:-1]}", token, f"Bearer {token}"):
                    async with http.post(
                        child.url + COMPLETIONS, json=body("hi", user="ann"), headers={"Authorization": auth}
                    ) as resp:
                        replies.append(await resp.text())
                        assert resp.status == (502 if auth == f"Bearer {token}" else 401)
            await fake.send_message("hello", mention=True)
            sent = await fake.wait_for_sent(fake.channel_id, timeout=20)
            replies += [str(m["content"]) for m in sent]
        finally:
            assert await child.terminate() == 0
    finally:
        await slack.close()
    stderr = log.read_text(encoding="utf-8", errors="replace")
    assert "Incorrect API key provided: Bearer [redacted]" in stderr, "the leak was exercised"
    for name, secret in SECRETS.items():
        assert secret not in stderr, f"{name} in stderr"
        assert all(secret not in reply for reply in replies), f"{name} in a reply"
    assert len(replies) == 5


async def test_state_files_are_0600_and_folders_0700(tmp_path: Path) -> None:
    async with serve(tmp_path) as api:
        for user in ("ann", "bob"):
            assert (await api.post(body("hi", user=user)))[0] == 200
    state = tmp_path / "state"
    found = list(state.rglob("*"))
    assert any(p.suffix == ".jsonl" for p in found) and any(p.suffix == ".turn" for p in found)
    for path in [state, *found]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))


# ------------------------------------------------------------------ Slack
async def _slack_sentinel(bot: Bot, expected_turns: int) -> None:
    """A message from an allowed person, answered: everything delivered before it was
    handled (Bolt hands events over in order), so `submitted` is final."""
    assert await bot.deliver(mention("sentinel"))
    await bot.fake.wait_for_posts(1, timeout=10)
    assert submitted(bot) == expected_turns


async def test_slack_allowlists_hold_against_threads_edits_and_bots(tmp_path: Path) -> None:
    slack = f'allow_channels = ["{GENERAL}"]\nallow_users = ["{HUMAN}"]\ndm_policy = "allowlist"'
    async with running(tmp_path, "http", slack=slack) as bot:
        root = mention("start a thread")
        # Someone else replies in a thread of an allowed channel, mentioning the bot.
        assert await bot.deliver(mention("me too", user="U0EVE", thread_ts=root["ts"]))
        # A thread in a channel that is not allowed, started by an allowed person.
        assert await bot.deliver(mention("elsewhere", channel="C0OTHER", thread_ts="1.000001"))
        # An edit that adds a mention to an old message.
        edited = {"type": "message", "text": "<@U0BOT> now", "user": HUMAN, "ts": "1.000002"}
        assert await bot.deliver(
            message_event("", subtype="message_changed", message=edited, user=None, hidden=True)
        )
        # Bots: a mention, and a reply in a thread the bot is in.
        assert await bot.deliver(mention("beep", user=None, bot_id="B0OTHER", subtype="bot_message"))
        assert await bot.deliver(
            message_event("boop", user=None, bot_id="B0OTHER", thread_ts=root["ts"], subtype="bot_message")
        )
        # A DM from someone not on the list, and one claiming to be a channel message.
        assert await bot.deliver(message_event("psst", channel="D0EVE", user="U0EVE"))
        assert await bot.deliver(message_event("psst", channel="D0EVE", user="U0EVE", channel_type="channel"))
        await _slack_sentinel(bot, 1)
        entries = (await bot.runtime.store.list()).entries
        assert [e.key.split(":")[3] for e in entries] == [HUMAN]


async def test_slack_disabled_dms_stay_closed_even_in_a_dm_thread(tmp_path: Path) -> None:
    async with running(tmp_path, "socket", slack='dm_policy = "disabled"') as bot:
        assert await bot.deliver(message_event("hi", channel=DM))
        assert await bot.deliver(message_event("hi", channel=DM, thread_ts="1.000003"))
        assert await bot.deliver(mention("hi", channel=DM))
        await _slack_sentinel(bot, 1)


# ------------------------------------------------------------------ Discord
async def test_discord_allowlists_hold_against_threads_edits_webhooks_and_replies(
    start_bot: StartBot, fake: FakeDiscord
) -> None:
    bot = await start_bot(
        f'allow_channels = ["{fake.other_channel_id}"]\nallow_users = ["{fake.alice_id}"]\n'
        'dm_policy = "allowlist"'
    )
    # The thread's parent (general) is not allowed, though the thread mentions the bot.
    await fake.send_message("in the thread", mention=True, channel=fake.thread_id)
    # Bob is not on the list: in an allowed channel, by reply to the bot, by DM.
    await fake.send_message("me", mention=True, user=fake.bob_id, channel=fake.other_channel_id)
    await fake.send_message("dm", dm=True, user=fake.bob_id)
    # A webhook and a bot posing with alice's name, mentioning the bot.
    hook = fake.message_payload(
        f"<@{fake.bot_id}> hook",
        author=user_obj(fake.alice_id, "alice"),
        channel_id=fake.other_channel_id,
        in_guild=True,
        mentions=[fake.bot_user()],
    )
    await fake.dispatch("MESSAGE_CREATE", hook | {"webhook_id": "123456789012345678"})
    await fake.send_message(
        "beep", mention=True, channel=fake.other_channel_id, author=user_obj("4242", "b", bot=True)
    )
    # An edit that adds a mention to a message the bot already passed over: a first
    # sentinel proves the original was handled before the edit arrives.
    plain = await fake.send_message("no mention", channel=fake.other_channel_id)
    await fake.send_message("sentinel one", mention=True, channel=fake.other_channel_id)
    await fake.wait_for_sent(fake.other_channel_id, timeout=10)
    await fake.dispatch("MESSAGE_UPDATE", _edited(fake, plain))
    await fake.send_message("sentinel two", mention=True, channel=fake.other_channel_id)
    sent = await fake.wait_for_sent(fake.other_channel_id, 2, timeout=10)
    assert [str(m["content"]).split("\n")[0] for m in sent] == ["echo: sentinel one", "echo: sentinel two"]
    assert fake.sent_to(fake.thread_id) == [] and fake.sent_to(fake.dm_ids[fake.bob_id]) == []
    assert await bot.sessions() == [f"agent:main:discord:{fake.alice_id}:{fake.other_channel_id}"]


def _edited(fake: FakeDiscord, message: JSON) -> JSON:
    """A MESSAGE_UPDATE payload: `message` edited to mention the bot."""
    return message | {
        "content": f"<@{fake.bot_id}> edited",
        "mentions": [fake.bot_user()],
        "edited_timestamp": message["timestamp"],
    }


async def test_discord_an_edit_right_after_a_message_does_not_change_what_is_answered(
    start_bot: StartBot, fake: FakeDiscord
) -> None:
    bot = await start_bot()
    plain = await fake.send_message("no mention")
    await fake.dispatch("MESSAGE_UPDATE", _edited(fake, plain))
    await fake.send_message("sentinel", mention=True)
    sent = await fake.wait_for_sent(fake.channel_id, timeout=10)
    await asyncio.sleep(0.2)  # a late answer to the edit would show up here
    assert [str(m["content"]).split("\n")[0] for m in fake.sent_to(fake.channel_id)] == ["echo: sentinel"]
    assert len(sent) >= 1 and len(await bot.sessions()) == 1


async def test_discord_disabled_dms_refuse_even_allowed_users(start_bot: StartBot, fake: FakeDiscord) -> None:
    bot = await start_bot(f'allow_users = ["{fake.alice_id}"]\ndm_policy = "disabled"')
    await fake.send_message("dm", dm=True)
    await fake.send_message("sentinel", mention=True)
    await fake.wait_for_sent(fake.channel_id, timeout=10)
    assert fake.sent_to(fake.dm_ids[fake.alice_id]) == []
    assert await bot.sessions() == [f"agent:main:discord:{fake.alice_id}:{fake.channel_id}"]
