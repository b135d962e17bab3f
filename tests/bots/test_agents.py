"""Several agents end to end: plugin agents answering through the HTTP API and the Discord
fake, bindings choosing agents (and system prompts, as a fake OpenAI-compatible server
records them), `/model` across a restart and a second process, and compaction as the
model sees it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from bots.discord.service import create as create_discord
from bots.launcher import load_config
from bots.runtime import Runtime
from bots.testing.fake_discord import FakeDiscord
from bots.testing.fake_llm import FakeLLM
from bots.testing.fake_slack import BOT_USER, DM, GENERAL, TEAM, message_event
from bots.testing.process import ChatlaneProcess, write_config
from core.turn.compaction import COMPACTED_NOTE
from tests.fakes.plugin_agents import ENTRY_POINT
from tests.support.http import body, serve
from tests.support.slack import running

PLUGIN = "tests.fakes.plugin_agents:make_shouting"
TOKEN_ENV = "CHATLANE_TEST_DISCORD_TOKEN"


# ------------------------------------------------------------------ HTTP


async def test_plugin_agents_answer_over_http_chosen_by_model(tmp_path: Path, installed_plugin: Path) -> None:
    extra = (
        f'[agents.loud]\nbackend = "python"\nfactory = "{PLUGIN}"\n[agents.loud.options]\ngreeting = "YO"\n'
        f'[agents.reg]\nbackend = "{ENTRY_POINT}"\n'
    )
    async with serve(tmp_path, extra=extra) as s, s.client() as client:
        models = sorted(m.id for m in (await client.models.list()).data)
        loud = await client.chat.completions.create(
            model="loud", messages=[{"role": "user", "content": "hello you"}], user="alice"
        )
        stream = await client.chat.completions.create(
            model="reg", messages=[{"role": "user", "content": "ping"}], user="alice", stream=True
        )
        pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        echo = await client.chat.completions.create(
            model="main", messages=[{"role": "user", "content": "plain"}], user="alice"
        )
        with pytest.raises(Exception, match="model_not_found"):
            await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
        keys = sorted(e.key for e in await s.entries())
    assert models == ["loud", "main", "reg"]
    assert (
        loud.model == "loud" and loud.choices[0].message.content == "YO HELLO YOU (turn 1, 0 earlier records)"
    )
    assert "".join(pieces) == "registered agent heard: ping" and len(pieces) >= 2
    assert (echo.choices[0].message.content or "").startswith("echo: plain")
    # Each agent has its own memory of alice: the agent id is part of the key.
    assert keys == [
        "agent:loud:http:alice:api",
        "agent:main:http:alice:api",
        "agent:reg:http:alice:api",
    ]


async def test_a_session_key_header_must_agree_with_the_model(tmp_path: Path) -> None:
    extra = '[agents.other]\nbackend = "echo"\n'
    async with serve(tmp_path, extra=extra) as s, aiohttp.ClientSession() as http:
        headers = {"X-Session-Key": "agent:other:http:zed:api"}
        ok = await http.post(
            s.url("/v1/chat/completions"), json=body("hi") | {"model": "other"}, headers=headers
        )
        clash = await http.post(
            s.url("/v1/chat/completions"), json=body("hi") | {"model": "main"}, headers=headers
        )
        ok_json, clash_json = await ok.json(), await clash.json()
    assert ok.status == 200 and ok_json["model"] == "other"
    assert clash.status == 400 and clash_json["error"]["code"] == "model_mismatch"


# ------------------------------------------------------------------ Discord


@dataclass
class DiscordBot:
    runtime: Runtime
    fake: FakeDiscord


@contextlib.asynccontextmanager
async def discord_bot(tmp_path: Path, fake: FakeDiscord, toml: str) -> AsyncIterator[DiscordBot]:
    path = tmp_path / "chatlane.toml"
    path.write_text(
        '[store]\npath = "state"\n[http]\nenabled = false\n'
        f'[discord]\nenabled = true\ntoken_env = "{TOKEN_ENV}"\napi_base_url = "{fake.api_base}"\n'
        f'gateway_url = "{fake.gateway_url}"\nguild_ready_timeout_s = 0.05\nready_timeout_s = 10\n{toml}\n',
        encoding="utf-8",
    )
    runtime = Runtime.build(load_config(path, env={TOKEN_ENV: fake.token}))
    service = create_discord(runtime)
    await service.start()
    try:
        yield DiscordBot(runtime, fake)
    finally:
        await runtime.gateway.close(timeout=5)
        await service.stop()
        await runtime.close()


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    f = await FakeDiscord().start()
    yield f
    await f.close()


async def test_a_plugin_agent_bound_to_a_channel_answers_on_discord(
    tmp_path: Path, fake: FakeDiscord, installed_plugin: Path
) -> None:
    toml = (
        f'[agents.loud]\nbackend = "python"\nfactory = "{PLUGIN}"\n'
        f'[agents.reg]\nbackend = "{ENTRY_POINT}"\n'
        f'[[bindings]]\nagent = "loud"\nchannel = "{fake.channel_id}"\n'
        f'[[bindings]]\nagent = "reg"\nchannel = "{fake.other_channel_id}"\n'
    )
    async with discord_bot(tmp_path, fake, toml):
        await fake.send_message("hello loud", mention=True)
        await fake.send_message("hello registered", mention=True, channel=fake.other_channel_id)
        loud = await fake.wait_for_sent(fake.channel_id)
        reg = await fake.wait_for_sent(fake.other_channel_id)
    assert loud[0]["content"] == "HI HELLO LOUD (turn 1, 0 earlier records)"
    assert reg[0]["content"] == "registered agent heard: hello registered"


async def test_bindings_give_one_user_two_sessions_with_their_own_system_prompts(
    tmp_path: Path, fake: FakeDiscord
) -> None:
    async with FakeLLM() as llm:
        toml = (
            f'[agents.general]\nbackend = "openai"\nsystem_prompt = "You are GENERAL."\n'
            f'[agents.general.openai]\nbase_url = "{llm.base_url}"\nmax_retries = 0\n'
            f'[agents.other]\nbackend = "openai"\nsystem_prompt = "You are OTHER."\n'
            f'[agents.other.openai]\nbase_url = "{llm.base_url}"\nmax_retries = 0\n'
            f'[[bindings]]\nagent = "general"\nguild = "{fake.guild_id}"\nchannel = "{fake.channel_id}"\n'
            f'[[bindings]]\nagent = "other"\nplatform = "discord"\n'
        )
        async with discord_bot(tmp_path, fake, toml) as bot:
            await fake.send_message("in general", mention=True)
            await fake.wait_for_sent(fake.channel_id)
            await fake.send_message("in other", mention=True, channel=fake.other_channel_id)
            await fake.wait_for_sent(fake.other_channel_id)
            await fake.send_message("in the thread", mention=True, channel=fake.thread_id)
            await fake.wait_for_sent(fake.thread_id)
            await fake.send_message("general again", mention=True)
            await fake.wait_for_sent(fake.channel_id, n=2)
            keys = sorted(e.key for e in (await bot.runtime.store.list()).entries)
        calls = [(c.messages[0]["content"], c.messages[-1]["content"]) for c in llm.calls]
        last = llm.calls[-1].messages
    alice = fake.alice_id
    assert keys == sorted(
        [
            f"agent:general:discord:{alice}:{fake.channel_id}",
            f"agent:general:discord:{alice}:{fake.thread_id}",
            f"agent:other:discord:{alice}:{fake.other_channel_id}",
        ]
    )
    assert calls == [
        ("You are GENERAL.", "in general"),
        ("You are OTHER.", "in other"),
        ("You are GENERAL.", "in the thread"),  # the thread follows its parent's binding
        ("You are GENERAL.", "general again"),
    ]
    # The general channel's session remembers its own turn only.
    assert [m["content"] for m in last[1:]] == ["in general", "reply to: in general", "general again"]


# ------------------------------------------------------------------ /model


async def test_model_switches_one_conversation_and_reaches_the_upstream_request(tmp_path: Path) -> None:
    async with FakeLLM() as llm:
        agent = (
            f'backend = "openai"\nmodels = ["fake-model", "fake-large"]\n'
            f'[agent.openai]\nbase_url = "{llm.base_url}"\nmodel = "fake-model"\nmax_retries = 0\n'
        )
        async with serve(tmp_path, agent_toml=agent) as s, s.client() as client:

            async def say(user: str, text: str) -> str:
                done = await client.chat.completions.create(
                    model="main", messages=[{"role": "user", "content": text}], user=user
                )
                return done.choices[0].message.content or ""

            shown = await say("alice", "/model")
            switched = await say("alice", "/model fake-large")
            refused = await say("alice", "/model gpt-9")
            await say("alice", "hello")
            await say("bob", "hello")
    assert shown == (
        "This conversation uses fake-model (the default). Choices: fake-model, fake-large. "
        "Switch with `/model NAME`."
    )
    assert switched == "This conversation now uses fake-large."
    assert refused == "gpt-9 is not one of the choices here: fake-model, fake-large."
    assert [c.body["model"] for c in llm.calls] == ["fake-large", "fake-model"]  # alice, then bob
    assert all("/model" not in m["content"] for c in llm.calls for m in c.messages)


async def test_model_choice_survives_a_restart_and_holds_in_a_second_process(tmp_path: Path) -> None:
    """Two `chatlane run` processes share one store; the choice made through one is used
    by the other, and by a third started after both stopped; /new keeps it."""
    config = write_config(tmp_path, '[agent]\nmodels = ["small", "big"]\n')

    async def ask(port: int, user: str, text: str) -> str:
        async with aiohttp.ClientSession() as http:
            resp = await http.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body(text, user))
            assert resp.status == 200, await resp.text()
            return str((await resp.json())["choices"][0]["message"]["content"])

    first = await ChatlaneProcess.start(config, tmp_path / "a.log")
    second = await ChatlaneProcess.start(config, tmp_path / "b.log")
    try:
        assert await ask(first.port, "alice", "/model big") == "This conversation now uses big."
        in_second = await ask(second.port, "alice", "hello")
        bob_in_second = await ask(second.port, "bob", "hello")
        refused = await ask(second.port, "alice", "/model huge")
        still = await ask(first.port, "alice", "again")
    finally:
        assert await first.terminate() == 0
        assert await second.terminate() == 0
    assert in_second.endswith("; model big)"), in_second
    assert "model" not in bob_in_second
    assert refused.startswith("huge is not one of the choices")
    assert still.endswith("; model big)")

    third = await ChatlaneProcess.start(config, tmp_path / "c.log")
    try:
        after_restart = await ask(third.port, "alice", "after the restart")
        await ask(third.port, "alice", "/new")
        after_new = await ask(third.port, "alice", "fresh")
    finally:
        assert await third.terminate() == 0
    assert "turn 3" in after_restart and after_restart.endswith("; model big)")
    assert "turn 1" in after_new and after_new.endswith("; model big)")


# ------------------------------------------------------------------ compaction


async def test_compaction_sends_summary_and_recent_records_to_the_model(tmp_path: Path) -> None:
    async with FakeLLM() as llm:
        agent = (
            f'backend = "openai"\nsystem_prompt = "Be brief."\ncompact_after_tokens = 120\n'
            f'compact_keep_recent = 2\n[agent.openai]\nbase_url = "{llm.base_url}"\nmax_retries = 0\n'
        )
        async with serve(tmp_path, agent_toml=agent) as s, s.client() as client:
            answers = []
            for i in range(6):
                done = await client.chat.completions.create(
                    model="main",
                    messages=[{"role": "user", "content": f"message {i}: " + "words " * 20}],
                    user="alice",
                )
                answers.append(done.choices[0].message.content or "")
            records = await s.transcript("agent:main:http:alice:api")
    summaries = [r for r in records if r.summary]
    told = [a for a in answers if COMPACTED_NOTE in a]
    summary_calls = [c for c in llm.calls if not c.body.get("stream")]
    assert summaries and len(told) == len(summaries) == len(summary_calls)
    assert len(records) == 12 + len(summaries)  # every message and answer kept
    # The turn after the first summary: system prompt, summary, the 2 kept records, new message.
    i = next(n for n, a in enumerate(answers) if COMPACTED_NOTE in a)
    turn_calls = [c for c in llm.calls if c.body.get("stream")]
    assert i + 1 < len(turn_calls), "the first summary came too late to see it used"
    shown = turn_calls[i + 1].messages
    assert shown[0] == {"role": "system", "content": "Be brief."}
    assert shown[1] == {"role": "system", "content": summaries[0].content}
    assert [m["role"] for m in shown[2:4]] == ["user", "assistant"]  # the 2 kept records
    assert shown[-1]["content"].startswith(f"message {i + 1}:")
    assert summaries[0].content.startswith("reply to: Summarise the conversation above")


async def test_commands_asked_for_as_a_stream_end_their_stream(tmp_path: Path) -> None:
    """`/model` and `/new` are answered whole; a streaming client still gets one chunk and
    the end of the stream (it used to wait for more forever)."""
    async with serve(tmp_path, agent_toml='models = ["a", "b"]\n') as s, s.client() as client:
        texts = []
        for text in ("/model b", "/new", "/model"):
            stream = await client.chat.completions.create(
                model="main", messages=[{"role": "user", "content": text}], user="ann", stream=True
            )
            async with asyncio.timeout(5):
                texts.append("".join([c.choices[0].delta.content or "" async for c in stream if c.choices]))
    assert texts == [
        "This conversation now uses b.",
        "Started a new conversation.",
        "This conversation uses b. Choices: a, b. Switch with `/model NAME`.",  # /new kept it
    ]


# ------------------------------------------------------------------ Slack


async def test_a_slack_team_binding_chooses_the_agent_and_dms_fall_through_to_the_default(
    tmp_path: Path,
) -> None:
    extra = (
        f'[agents.loud]\nbackend = "python"\nfactory = "{PLUGIN}"\n'
        f'[[bindings]]\nagent = "loud"\nteam = "{TEAM}"\nchannel = "{GENERAL}"\n'
    )
    async with running(tmp_path, "socket", extra=extra) as bot:
        assert await bot.deliver(message_event(f"<@{BOT_USER}> hello", kind="app_mention"))
        [loud] = await bot.fake.wait_for_posts(1)
        assert await bot.deliver(message_event("hello", channel=DM))
        posts = await bot.fake.wait_for_posts(2)
        keys = sorted(e.key for e in (await bot.runtime.store.list()).entries)
    assert loud.args["text"] == "HI HELLO (turn 1, 0 earlier records)"
    assert str(posts[1].args["text"]).startswith("echo: hello")
    assert keys[0].startswith("agent:loud:slack:") and keys[1].startswith("agent:main:slack:")


async def test_model_on_discord_is_per_channel_conversation(tmp_path: Path, fake: FakeDiscord) -> None:
    async with discord_bot(tmp_path, fake, '[agent]\nmodels = ["small", "big"]\n'):
        await fake.send_message("/model big", mention=True)
        [switched] = await fake.wait_for_sent(fake.channel_id)
        await fake.send_message("hello", mention=True)
        await fake.send_message("hello", mention=True, channel=fake.other_channel_id)
        answers = await fake.wait_for_sent(fake.channel_id, n=2)
        other = await fake.wait_for_sent(fake.other_channel_id)
    assert switched["content"] == "This conversation now uses big."
    assert str(answers[1]["content"]).endswith("; model big)")
    assert "model" not in str(other[0]["content"])


async def test_the_model_slash_command_shows_switches_and_refuses(tmp_path: Path, fake: FakeDiscord) -> None:
    async with discord_bot(tmp_path, fake, '[agent]\nmodels = ["small", "big"]\n[agents.plain]\n'):
        texts = []
        for options in ({}, {"name": "big"}, {"name": "huge"}):
            interaction = await fake.send_interaction("model", options=options)
            callback = await fake.wait_for_call("POST", rf"/interactions/{interaction['id']}/.+/callback")
            texts.append((callback.json["data"]["content"], callback.json["data"].get("flags")))
        await fake.send_message("hello", mention=True)
        [answer] = await fake.wait_for_sent(fake.channel_id)
    assert [t for t, _ in texts] == [
        "This conversation uses small (the default). Choices: small, big. Switch with `/model NAME`.",
        "This conversation now uses big.",
        "huge is not one of the choices here: small, big.",
    ]
    assert all(flags == 64 for _, flags in texts)  # ephemeral: only the asker sees it
    assert str(answer["content"]).endswith("; model big)")


@pytest.mark.parametrize("transport", ["socket", "http"])
async def test_the_slack_slash_command_chooses_the_model_keeping_its_case(
    tmp_path: Path, transport: str
) -> None:
    extra = '[agents.pick]\nmodels = ["Small", "Big-1"]\n[[bindings]]\nagent = "pick"\nplatform = "slack"\n'
    async with running(tmp_path, transport, slack='slash_command = "/chatlane"', extra=extra) as bot:  # type: ignore[arg-type]
        shown = await bot.command("model", channel=DM)
        switched = await bot.command("model Big-1", channel=DM)
        refused = await bot.command("MODEL big-1", channel=DM)
        assert await bot.deliver(message_event("hello", channel=DM))
        [answer] = await bot.fake.wait_for_posts(1)
    assert shown.startswith("This conversation uses Small (the default)")
    assert switched == "This conversation now uses Big-1."
    assert refused.startswith("big-1 is not one of the choices")
    assert str(answer.args["text"]).endswith("; model Big-1)")
