"""Fixtures for the Slack adapter: real slack-bolt / slack-sdk against the local fake Slack.

running(tmp_path, transport)  chatlane's SlackService over Socket Mode or the HTTP Events API
Bot.deliver / Bot.command      an event or a slash command, delivered as Slack does
submitted(bot)                 how many messages the adapter handed to the gateway
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiohttp

from bots.launcher import load_config
from bots.runtime import Runtime
from bots.slack.service import SlackService, create
from bots.testing.fake_slack import (
    BOT_USER,
    GENERAL,
    FakeSlack,
    Json,
    event_callback,
    form_body,
    message_event,
    post,
    signed_headers,
    slash_command,
)
from core.agents.base import Agent

SECRET = "test-signing-secret"
ENV = {"SLACK_BOT_TOKEN": "xoxb-test", "SLACK_APP_TOKEN": "xapp-test", "SLACK_SIGNING_SECRET": SECRET}
Transport = Literal["socket", "http"]


@dataclass
class Bot:
    fake: FakeSlack
    runtime: Runtime
    service: SlackService
    http: aiohttp.ClientSession
    transport: Transport

    async def deliver(self, event: Json, *, event_id: str | None = None, retry: int = 0) -> bool:
        """Deliver `event` as Slack does over this transport; True once it was acked."""
        payload = event_callback(event, event_id)
        if self.transport == "socket":
            envelope = await self.fake.push("events_api", payload, retry_attempt=retry)
            return await self.fake.wait_for_ack(envelope) == {"envelope_id": envelope}
        body = json.dumps(payload)
        headers = signed_headers(SECRET, body)
        if retry:
            headers |= {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"}
        status, _ = await post(self.http, self.service.url, body, headers)
        return status == 200

    async def command(self, text: str, channel: str = GENERAL) -> str:
        """Run the slash command; the text of its (ephemeral) acknowledgement."""
        fields = slash_command("/chatlane", text, channel=channel)
        if self.transport == "socket":
            envelope = await self.fake.push("slash_commands", dict(fields))
            ack = await self.fake.wait_for_ack(envelope)
            return str(ack["payload"]["text"])
        body = form_body(fields)
        headers = signed_headers(SECRET, body, content_type="application/x-www-form-urlencoded")
        status, text_body = await post(self.http, self.service.url, body, headers)
        assert status == 200
        return text_body  # Bolt answers a text-only ack with a plain-text body


def submitted(bot: Bot) -> int:
    """Messages the adapter handed to the gateway. The gateway counts them as it takes
    them, and a later delivery's hand-off runs after every earlier one's, so once a
    sentinel's reply arrived this is final for everything delivered before it."""
    value = bot.runtime.metrics.registry.get_sample_value("chatlane_messages_in_total", {"platform": "slack"})
    return int(value or 0)


@asynccontextmanager
async def running(
    tmp_path: Path,
    transport: Transport,
    *,
    slack: str = "",
    extra: str = "",
    delay_ms: int = 0,
    agent: Agent | None = None,
    stream: str = "off",
) -> AsyncIterator[Bot]:
    """A running Slack bot. Streaming is off unless asked for: most tests are about
    delivery, and streamed answers have their own (tests/bots/test_slack_streaming.py)."""
    fake = await FakeSlack().start()
    config = tmp_path / "chatlane.toml"
    config.write_text(
        f'[agent]\necho_delay_ms = {delay_ms}\n[store]\npath = "{tmp_path / "state"}"\n'
        "[http]\nenabled = false\n"
        f'[slack]\nenabled = true\nmode = "{transport}"\napi_base_url = "{fake.api_base}"\nport = 0\n'
        f'stream = "{stream}"\n{slack}\n{extra}\n',
        encoding="utf-8",
    )
    runtime = Runtime.build(load_config(config, env=ENV), agent=agent)
    bot = Bot(fake, runtime, create(runtime), aiohttp.ClientSession(), transport)
    try:
        await bot.service.start()
        yield bot
    finally:
        await runtime.gateway.close(timeout=2)
        await bot.service.stop()  # the one running now (a test may restart it)
        await runtime.close()
        await bot.http.close()
        await fake.close()


def mention(text: str, **kw: Any) -> Json:
    """A message event that @-mentions the bot."""
    return message_event(f"<@{BOT_USER}> {text}", kind="app_mention", **kw)
