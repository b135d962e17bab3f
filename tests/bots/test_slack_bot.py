"""The Slack adapter: real slack-bolt / slack-sdk against a fake Slack on 127.0.0.1.

Most tests run over both transports (Socket Mode and the signed HTTP Events API): the
behaviour is the same, only the delivery differs. "Nothing happened" is proven with a
sentinel: a later message whose answer has the expected turn number, and the count of
messages handed to the gateway once it arrived (`submitted`), so no test sleeps and hopes.
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from bots.launcher import load_config
from bots.runtime import Runtime, StartupError
from bots.slack.service import create
from bots.testing import FixedAgent, eventually
from bots.testing.fake_slack import (
    BOT_USER,
    DM,
    GENERAL,
    HUMAN,
    ApiCall,
    FakeSlack,
    Fault,
    event_callback,
    mention_twin,
    message_event,
    post,
    signed_headers,
)
from core.config import Secrets
from core.model.messages import Inbound
from core.turn.chunking import chunk_message, join_chunks
from tests.support.slack import ENV, SECRET, Transport, mention, running, submitted

TURN = re.compile(r"turn (\d+) of session ([0-9a-f]{8})")


def turn_of(call: ApiCall) -> tuple[int, str]:
    """(turn number, session id prefix) from an echo reply."""
    found = TURN.search(str(call.args["text"]))
    assert found is not None, call.args["text"]
    return int(found[1]), found[2]


@pytest.fixture(params=["socket", "http"])
def transport(request: pytest.FixtureRequest) -> Transport:
    mode: Transport = request.param
    return mode


async def test_mention_is_answered_in_its_thread(tmp_path: Path, transport: Transport) -> None:
    async with running(tmp_path, transport) as bot:
        event = mention("hello there")
        assert await bot.deliver(event)
        [reply] = await bot.fake.wait_for_posts(1)
        assert reply.args["channel"] == GENERAL
        assert reply.args["thread_ts"] == event["ts"]
        assert str(reply.args["text"]).startswith("echo: hello there\n")
        assert reply.token == "xoxb-test"
        assert turn_of(reply)[0] == 1
        if transport == "socket":  # the app token, through api_base_url
            assert [c.token for c in bot.fake.calls_of("apps.connections.open")] == ["xapp-test"]


async def test_a_mention_and_its_message_twin_give_one_turn(tmp_path: Path, transport: Transport) -> None:
    async with running(tmp_path, transport) as bot:
        event = mention("hi")
        assert await bot.deliver(mention_twin(event))
        assert await bot.deliver(event)
        assert await bot.deliver(mention("sentinel", thread_ts=event["ts"]))
        replies = await bot.fake.wait_for_posts(2)
        assert [turn_of(r)[0] for r in replies] == [1, 2]
        assert submitted(bot) == 2


async def test_http_requests_unsigned_wrongly_signed_or_stale_get_401(tmp_path: Path) -> None:
    async with running(tmp_path, "http") as bot:
        body = json.dumps(event_callback(mention("forged")))
        unsigned = {"Content-Type": "application/json"}
        wrong = signed_headers("not-the-secret", body)
        stale = signed_headers(SECRET, body, timestamp=int(time.time()) - 600)
        for headers in (unsigned, wrong, stale):
            status, _ = await post(bot.http, bot.service.url, body, headers)
            assert status == 401
        assert (await bot.runtime.store.list()).entries == []
        assert await bot.deliver(mention("real"))
        [reply] = await bot.fake.wait_for_posts(1)
        assert str(reply.args["text"]).startswith("echo: real")
        assert turn_of(reply)[0] == 1


async def test_direct_message_is_answered_in_the_dm(tmp_path: Path, transport: Transport) -> None:
    async with running(tmp_path, transport) as bot:
        assert await bot.deliver(message_event("hello in private", channel=DM))
        [reply] = await bot.fake.wait_for_posts(1)
        assert reply.args["channel"] == DM
        assert "thread_ts" not in reply.args
        assert str(reply.args["text"]).startswith("echo: hello in private")


async def test_direct_messages_disabled_start_nothing(tmp_path: Path, transport: Transport) -> None:
    async with running(tmp_path, transport, slack='dm_policy = "disabled"') as bot:
        assert await bot.deliver(message_event("let me in", channel=DM))
        assert await bot.deliver(mention("sentinel"))
        await bot.fake.wait_for_posts(1)
        assert submitted(bot) == 1
        assert [p.args["channel"] for p in bot.fake.posts] == [GENERAL]
        assert len((await bot.runtime.store.list()).entries) == 1


async def test_followups_in_a_thread_queue_into_one_session_in_order(
    tmp_path: Path, transport: Transport
) -> None:
    """Three messages in one thread (two sent while the first turn still runs, without
    a mention): one session, three replies in order, the last one turn 3; each message
    carries the ack reaction while it waits or is answered."""
    async with running(tmp_path, transport, delay_ms=200, slack='ack_reaction = "eyes"') as bot:
        root = mention("first")
        assert await bot.deliver(root)
        followups = [message_event(t, thread_ts=root["ts"]) for t in ("second", "third")]
        for event in followups:
            assert await bot.deliver(event)
        assert bot.fake.posts == []  # all three arrived while turn 1 was running
        replies = await bot.fake.wait_for_posts(3)
        assert [r.args["thread_ts"] for r in replies] == [root["ts"]] * 3
        assert [str(r.args["text"]).split("\n")[0] for r in replies] == [
            "echo: first",
            "echo: second",
            "echo: third",
        ]
        turns = [turn_of(r) for r in replies]
        assert [t for t, _ in turns] == [1, 2, 3]
        assert len({s for _, s in turns}) == 1
        stamps = {e["ts"] for e in (root, *followups)}
        removed = await bot.fake.wait_for(
            lambda: c if len(c := bot.fake.calls_of("reactions.remove")) == 3 else None
        )
        assert {c.args["timestamp"] for c in removed} == stamps
        assert {c.args["timestamp"] for c in bot.fake.calls_of("reactions.add")} == stamps
        assert all(c.args["name"] == "eyes" for c in bot.fake.calls_of("reactions.add"))


async def test_two_threads_in_one_channel_are_two_sessions(tmp_path: Path, transport: Transport) -> None:
    async with running(tmp_path, transport) as bot:
        one, two = mention("topic one"), mention("topic two")
        assert await bot.deliver(one)
        assert await bot.deliver(two)
        replies = await bot.fake.wait_for_posts(2)
        assert {r.args["thread_ts"] for r in replies} == {one["ts"], two["ts"]}
        assert [turn_of(r)[0] for r in replies] == [1, 1]
        assert turn_of(replies[0])[1] != turn_of(replies[1])[1]
        keys = sorted(e.key for e in (await bot.runtime.store.list()).entries)
        assert keys == sorted(f"agent:main:slack:{HUMAN}:{GENERAL}:{e['ts']}" for e in (one, two))


async def test_an_event_delivered_three_times_gives_one_turn(tmp_path: Path, transport: Transport) -> None:
    async with running(tmp_path, transport) as bot:
        event = mention("only once")
        acked = [await bot.deliver(event, event_id="Ev0SAME", retry=n) for n in range(3)]
        assert acked == [True, True, True]
        assert await bot.deliver(mention("sentinel", thread_ts=event["ts"]))
        replies = await bot.fake.wait_for_posts(2)
        assert [turn_of(r)[0] for r in replies] == [1, 2]
        assert submitted(bot) == 2


async def test_a_long_reply_is_split_into_balanced_chunks(tmp_path: Path, transport: Transport) -> None:
    code = "```python\n" + "\n".join(f"print({i})  # a line of code" for i in range(200)) + "\n```\n"
    prose = " ".join(f"word{i}" for i in range(2000))
    text = (prose[:3000] + "\n" + code + prose)[:11_000]
    async with running(tmp_path, transport, agent=FixedAgent(text)) as bot:
        assert len(text) == 11_000
        event = mention("tell me everything")
        assert await bot.deliver(event)
        expected = chunk_message(text, 4_000)
        replies = await bot.fake.wait_for_posts(len(expected))
        sent = [str(r.args["text"]) for r in replies]
        assert all(len(s) <= 4_000 for s in sent)
        assert all(sum(line.lstrip().startswith("```") for line in s.split("\n")) % 2 == 0 for s in sent)
        assert sent == [c.text for c in expected]
        assert join_chunks(expected) == text
        assert {r.args["thread_ts"] for r in replies} == {event["ts"]}


async def test_new_in_a_thread_starts_a_new_session_and_keeps_the_old(
    tmp_path: Path, transport: Transport
) -> None:
    async with running(tmp_path, transport) as bot:
        root = mention("remember me")
        assert await bot.deliver(root)
        [first] = await bot.fake.wait_for_posts(1)
        [old] = (await bot.runtime.store.list()).entries
        assert await bot.deliver(mention("/new", thread_ts=root["ts"]))
        await bot.fake.wait_for_posts(2)
        assert bot.fake.posts[1].args["text"] == "Started a new conversation."
        assert await bot.deliver(message_event("after reset", thread_ts=root["ts"]))
        replies = await bot.fake.wait_for_posts(3)
        assert turn_of(replies[2])[0] == 1
        assert turn_of(replies[2])[1] != turn_of(first)[1]
        kept = await bot.runtime.store.tail(old.session_id, 10)
        assert [(m.role, m.content[:17]) for m in kept] == [
            ("user", "remember me"),
            ("assistant", "echo: remember me"),
        ]


async def test_not_in_channel_is_logged_and_other_conversations_go_on(
    tmp_path: Path, transport: Transport, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(tmp_path, transport) as bot:
        bot.fake.fail(Fault("chat.postMessage", "not_in_channel", channel="C0SECRET"))
        assert await bot.deliver(mention("hello?", channel="C0SECRET"))
        await bot.fake.wait_for(lambda: next((c for c in bot.fake.calls if c.error), None))
        assert await bot.deliver(mention("still there?"))
        [ok] = await bot.fake.wait_for_posts(1)
        assert ok.args["channel"] == GENERAL
        assert await bot.deliver(mention("invited now", channel="C0SECRET"))
        [again] = await bot.fake.wait_for_posts(1, channel="C0SECRET")
        assert turn_of(again)[0] == 1  # a new thread; the failed one still counted its turn
        failures = [r for r in caplog.records if r.levelno == logging.ERROR and "not_in_channel" in r.message]
        assert len(failures) == 1
        assert "C0SECRET" in failures[0].message


async def test_a_rate_limited_post_is_retried(tmp_path: Path) -> None:
    """Transport-independent (it is the Web API client), so Socket Mode only."""
    async with running(tmp_path, "socket") as bot:
        bot.fake.fail(Fault("chat.postMessage", "ratelimited", status=429, retry_after=0))
        assert await bot.deliver(mention("busy?"))
        [reply] = await bot.fake.wait_for_posts(1)
        assert str(reply.args["text"]).startswith("echo: busy?")
        assert [c.error for c in bot.fake.calls_of("chat.postMessage")] == ["ratelimited", None]


@pytest.mark.parametrize(
    ("mode", "secrets", "problem"),
    [
        ("socket", {"SLACK_APP_TOKEN": "xapp-test"}, "SLACK_BOT_TOKEN"),
        ("socket", {"SLACK_BOT_TOKEN": "xoxp-user", "SLACK_APP_TOKEN": "xapp-test"}, "start with 'xoxb-'"),
        ("socket", {"SLACK_BOT_TOKEN": "xoxb-test"}, "SLACK_APP_TOKEN"),
        ("socket", {"SLACK_BOT_TOKEN": "xoxb-test", "SLACK_APP_TOKEN": "xoxb-test"}, "start with 'xapp-'"),
        ("http", {"SLACK_BOT_TOKEN": "xoxb-test"}, "SLACK_SIGNING_SECRET"),
        ("http", {"SLACK_BOT_TOKEN": "xoxb-revoked", "SLACK_SIGNING_SECRET": SECRET}, "invalid_auth"),
    ],
)
async def test_missing_or_wrong_tokens_are_startup_errors(
    tmp_path: Path, mode: Transport, secrets: dict[str, str], problem: str
) -> None:
    fake = await FakeSlack().start()
    config = tmp_path / "chatlane.toml"
    config.write_text(
        f'[store]\npath = "{tmp_path}"\n[http]\nenabled = false\n'
        f'[slack]\nenabled = true\nmode = "{mode}"\napi_base_url = "{fake.api_base}"\nport = 0\n',
        encoding="utf-8",
    )
    loaded = load_config(config, env=ENV)
    loaded = loaded.model_copy(
        update={"secrets": Secrets(by_var={k: SecretStr(v) for k, v in secrets.items()})}
    )
    runtime = Runtime.build(loaded)
    service = create(runtime)
    try:
        with pytest.raises(StartupError, match=re.escape(problem)):
            await service.start()
    finally:
        await service.stop()
        await runtime.close()
        await fake.close()


@pytest.mark.parametrize("require_mention", [True, False])
async def test_channel_messages_without_a_mention_need_require_mention_off(
    tmp_path: Path, transport: Transport, require_mention: bool
) -> None:
    setting = f"require_mention = {str(require_mention).lower()}"
    async with running(tmp_path, transport, slack=setting) as bot:
        plain, sentinel = message_event("just chatting"), mention("sentinel")
        assert await bot.deliver(plain)
        assert await bot.deliver(sentinel)
        await bot.fake.wait_for_posts(1, thread_ts=sentinel["ts"])
        if require_mention:
            assert submitted(bot) == 1
        else:
            [reply] = await bot.fake.wait_for_posts(1, thread_ts=plain["ts"])
            assert str(reply.args["text"]).startswith("echo: just chatting")


async def test_own_other_bots_and_housekeeping_messages_are_ignored(
    tmp_path: Path, transport: Transport
) -> None:
    async with running(tmp_path, transport) as bot:
        ignored = [
            message_event("my own words", channel=DM, user=BOT_USER),
            message_event("beep", channel=DM, user=None, subtype="bot_message", bot_id="B0OTHER"),
            message_event("edited", channel=DM, subtype="message_changed"),
            message_event("joined", channel=DM, subtype="channel_join"),
            message_event("gone", channel=DM, subtype="message_deleted"),
        ]
        for event in ignored:
            assert await bot.deliver(event)
        assert await bot.deliver(message_event("sentinel", channel=DM))
        [reply] = await bot.fake.wait_for_posts(1)
        assert str(reply.args["text"]).startswith("echo: sentinel")
        assert turn_of(reply)[0] == 1
        assert submitted(bot) == 1


async def test_allow_bots_answers_other_bots(tmp_path: Path) -> None:
    async with running(tmp_path, "socket", slack="allow_bots = true") as bot:
        event = message_event("beep", channel=DM, user=None, subtype="bot_message", bot_id="B0OTHER")
        assert await bot.deliver(event)
        [reply] = await bot.fake.wait_for_posts(1)
        assert str(reply.args["text"]).startswith("echo: beep")


async def test_allowlists_gate_out_without_creating_sessions(tmp_path: Path, transport: Transport) -> None:
    slack = f'allow_channels = ["{GENERAL}"]\nallow_users = ["{HUMAN}"]'
    async with running(tmp_path, transport, slack=slack) as bot:
        assert await bot.deliver(mention("elsewhere", channel="C0OTHER"))
        assert await bot.deliver(mention("who am I", user="U0STRANGER"))
        assert await bot.deliver(message_event("private", channel="D0STRANGER", user="U0STRANGER"))
        assert await bot.deliver(mention("sentinel"))
        await bot.fake.wait_for_posts(1)
        assert submitted(bot) == 1
        [entry] = (await bot.runtime.store.list()).entries
        assert f":{HUMAN}:{GENERAL}:" in entry.key


async def test_thread_replies_need_a_thread_the_bot_is_in(tmp_path: Path, transport: Transport) -> None:
    async with running(tmp_path, transport) as bot:
        assert await bot.deliver(message_event("not for you", thread_ts="1700000000.000001"))
        assert await bot.deliver(mention("sentinel"))
        await bot.fake.wait_for_posts(1)
        assert submitted(bot) == 1
        assert len((await bot.runtime.store.list()).entries) == 1


async def test_thread_replies_stay_addressed_after_a_restart(tmp_path: Path) -> None:
    """The bot's memory of its threads is lost on restart; the store still knows them."""
    async with running(tmp_path, "socket") as bot:
        root = mention("before restart")
        assert await bot.deliver(root)
        await bot.fake.wait_for_posts(1)
        await bot.service.stop()
        bot.fake.ws_connected.clear()
        bot.service = create(bot.runtime)
        await bot.service.start()
        assert await bot.deliver(message_event("after restart", thread_ts=root["ts"]))
        replies = await bot.fake.wait_for_posts(2)
        assert turn_of(replies[1])[0] == 2


async def test_slash_command_new_reset_status(tmp_path: Path, transport: Transport) -> None:
    async with running(tmp_path, transport, slack='slash_command = "/chatlane"') as bot:
        assert await bot.deliver(message_event("hello", channel=DM))
        [first] = await bot.fake.wait_for_posts(1)
        status = await bot.command("status", channel=DM)
        assert re.search(rf"Session `{turn_of(first)[1]}\w*`: 1 turns", status), status
        assert (await bot.command("new", channel=DM)).startswith("Started a new conversation.")
        assert await bot.deliver(message_event("again", channel=DM))
        replies = await bot.fake.wait_for_posts(2)
        assert turn_of(replies[1])[0] == 1
        assert turn_of(replies[1])[1] != turn_of(first)[1]
        assert (await bot.command("dance", channel=DM)).startswith("Usage: /chatlane")


async def test_merged_replies_are_not_sent(tmp_path: Path) -> None:
    """collect mode: two messages answered in one turn get one reply, not two."""
    extra = '[queue]\nmode = "collect"'
    async with running(tmp_path, "socket", delay_ms=200, extra=extra) as bot:
        assert await bot.deliver(message_event("one", channel=DM))
        # "one" is being answered before the others arrive (on a loaded machine its turn may
        # start after the next delivery): the others are collected behind it.
        await eventually(lambda: bot.runtime.gateway.turns.streaming)
        for text in ("two", "three"):
            assert await bot.deliver(message_event(text, channel=DM))
        await bot.fake.wait_for_posts(2)
        assert await bot.deliver(message_event("sentinel", channel=DM))
        await bot.fake.wait_for(lambda: "sentinel" in str(bot.fake.posts[-1].args["text"]) or None)
        assert [str(r.args["text"]).split("\n")[0] for r in bot.fake.posts] == [
            "echo: one",
            "echo: two / three",
            "echo: sentinel",
        ]


def test_inbound_of_a_top_level_mention_is_keyed_by_its_own_ts() -> None:
    """Slack ts values fit the key grammar as thread ids."""
    from core.model.keys import build_key

    inbound = Inbound("slack", HUMAN, GENERAL, "hi", "1700000000.000100", thread="1700000000.000100")
    key = build_key("main", inbound.platform, inbound.user, inbound.channel, inbound.thread)
    assert key.endswith(":1700000000.000100")


async def test_the_documented_setup_starts_without_the_token_unused_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: Bolt read SLACK_BOT_TOKEN from the environment (the documented variable)
    and, given our client too, warned "`token` will be unused" on every start."""
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test")
    with caplog.at_level(logging.INFO):
        async with running(tmp_path, "socket") as bot:
            assert await bot.deliver(mention("hello"))
            [reply] = await bot.fake.wait_for_posts(1)
    assert reply.token == "xoxb-test"  # the token of our client is the one used
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [w for w in warnings if "will be unused" in w or "will be ignored" in w], warnings


async def test_messages_sent_as_the_bot_connects_are_taken_in_the_order_sent(tmp_path: Path) -> None:
    """Bolt authorised each of its first events with an auth.test of its own, all at
    once: when the first one's answer came last, a later message overtook it (seen under
    load: r3 answered as turn 1). The app is now authorised from the identity fetched at
    start, so nothing between the socket and the listener waits on the network."""
    async with running(tmp_path, "socket", delay_ms=100) as bot:
        bot.fake.delays["auth.test"] = [0.6, 0.3, 0.0]  # the first asker hears last
        thread = message_event("a thread of ours", user=HUMAN)["ts"]
        for word in ("first", "second", "third"):
            await bot.fake.push("events_api", event_callback(mention(word, thread_ts=thread)))
        replies = await bot.fake.wait_for_posts(3)
    assert [str(r.args["text"]).split("\n")[0] for r in replies] == [
        "echo: first",
        "echo: second",
        "echo: third",
    ]
    assert [t for t, _ in map(turn_of, replies)] == [1, 2, 3]
    assert len(bot.fake.calls_of("auth.test")) == 1, "only the one at start"
