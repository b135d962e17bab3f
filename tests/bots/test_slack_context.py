"""Slack: thread/DM history on a session's first turn, and files, through real slack-bolt."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bots.slack.history import token_may_go_to
from bots.testing.fake_slack import BOT_ID, BOT_USER, DM, GENERAL, Fault, message_event
from core.agents.openai import BACKFILL_INTRO
from tests.bots.test_slack_bot import transport, turn_of
from tests.fakes.fake_llm import FakeLLM
from tests.fakes.files import log_text, png
from tests.support.llm import model_agent, untimed
from tests.support.slack import Transport, mention, running

__all__ = ["transport"]  # fixture used here


async def test_first_mention_in_a_thread_gives_the_model_its_root_and_the_last_20_of_30_once(
    tmp_path: Path, transport: Transport, llm: FakeLLM
) -> None:
    async with running(tmp_path, transport, agent=model_agent(llm)) as bot:
        root, *_ = bot.fake.seed(GENERAL, ["thread start"])
        bot.fake.seed(GENERAL, [f"earlier {i}" for i in range(1, 30)], thread_ts=root["ts"])
        first = bot.fake.remember(mention("what did we decide?", thread_ts=root["ts"]))
        assert await bot.deliver(first)
        await bot.fake.wait_for_posts(1)
        shown = [untimed(m["content"]) for m in llm.calls[0].messages]
        intro = shown.index(BACKFILL_INTRO)
        # The root says what the thread is about: always kept (before: cut off with 1-9).
        assert shown[intro + 1] == "human: thread start"
        assert shown[intro + 2 : intro + 22] == [f"human: earlier {i}" for i in range(10, 30)]
        assert shown[intro + 22 :] == ["what did we decide?"]

        assert await bot.deliver(bot.fake.remember(mention("and then?", thread_ts=root["ts"])))
        await bot.fake.wait_for_posts(2)
        again = [untimed(m["content"]) for m in llm.calls[1].messages]
        assert again.count("human: earlier 29") == 1
        assert len(bot.fake.calls_of("conversations.replies")) == 1


async def test_a_first_dm_reads_the_dm_history_by_display_name_with_the_bots_own_as_the_assistant(
    tmp_path: Path, llm: FakeLLM
) -> None:
    async with running(tmp_path, "socket", agent=model_agent(llm)) as bot:
        bot.fake.seed(DM, ["remind me about the report"])
        bot.fake.seed(DM, ["(a guest)"], user="U0GUEST")  # users.info does not know them
        bot.fake.remember(
            {
                "type": "message",
                "channel": DM,
                "text": "Sure.",
                "user": BOT_USER,
                "bot_id": BOT_ID,
                "ts": "1.5",
            }
        )
        bot.fake.channel_history[DM].sort(key=lambda m: float(m["ts"]))
        assert await bot.deliver(bot.fake.remember(message_event("so?", channel=DM)))
        await bot.fake.wait_for_posts(1)
        shown = [(m["role"], untimed(m["content"])) for m in llm.calls[0].messages]
        assert ("assistant", "Sure.") in shown
        assert ("user", "human: remind me about the report") in shown
        assert ("user", "U0GUEST: (a guest)") in shown
        assert bot.fake.calls_of("conversations.history")
        assert not bot.fake.calls_of("conversations.replies")


async def test_a_top_level_channel_mention_reads_no_history(tmp_path: Path) -> None:
    async with running(tmp_path, "socket") as bot:
        bot.fake.seed(GENERAL, ["unrelated chatter"])
        assert await bot.deliver(mention("hi"))
        [reply] = await bot.fake.wait_for_posts(1)
        assert "earlier messages" not in str(reply.args["text"])
        assert not bot.fake.calls_of("conversations.history")


async def test_missing_history_scope_is_logged_and_the_turn_is_answered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(tmp_path, "socket") as bot:
        root, *_ = bot.fake.seed(GENERAL, ["start"])
        bot.fake.fail(Fault("conversations.replies", "missing_scope"))
        with caplog.at_level(logging.WARNING, logger="chatlane.slack"):
            assert await bot.deliver(mention("hi", thread_ts=root["ts"]))
            [reply] = await bot.fake.wait_for_posts(1)
        assert str(reply.args["text"]).startswith("echo: hi\n")
        assert turn_of(reply)[0] == 1
        assert any("channels:history" in r.getMessage() for r in caplog.records)


async def test_history_backfill_zero_reads_nothing(tmp_path: Path) -> None:
    async with running(tmp_path, "socket", slack="history_backfill = 0") as bot:
        root, *_ = bot.fake.seed(GENERAL, ["start"])
        assert await bot.deliver(mention("hi", thread_ts=root["ts"]))
        await bot.fake.wait_for_posts(1)
        assert not bot.fake.calls_of("conversations.replies")


# ------------------------------------------------------------------ files


async def test_an_image_file_reaches_the_model_as_an_image_part(
    tmp_path: Path, transport: Transport, llm: FakeLLM
) -> None:
    async with running(tmp_path, transport, agent=model_agent(llm, vision=True)) as bot:
        picture = png(320, 200)
        event = mention("what is this?", subtype="file_share", files=[bot.fake.file("cat.png", picture)])
        assert await bot.deliver(event)
        await bot.fake.wait_for_posts(1)
        parts = llm.calls[0].messages[-1]["content"]
        assert parts[0] == {"type": "text", "text": "what is this?"}
        assert parts[1]["image_url"]["url"] == "data:image/png;base64," + base64.b64encode(picture).decode()
        assert [token for _, token in bot.fake.downloads] == ["xoxb-test"]


async def test_a_file_only_message_is_answered_with_what_the_echo_received(tmp_path: Path) -> None:
    async with running(tmp_path, "socket") as bot:
        files = [bot.fake.file("log.txt", log_text()), bot.fake.file("cat.png", png())]
        assert await bot.deliver(message_event("", channel=DM, subtype="file_share", files=files))
        [reply] = await bot.fake.wait_for_posts(1)
        assert str(reply.args["text"]).startswith(
            "echo: [file: log.txt, 1,204 lines] [image: cat.png 640x480]\n"
        )


@pytest.mark.parametrize("login_redirect", [False, True], ids=["403", "redirect to sign-in"])
async def test_a_file_the_fake_refuses_without_the_token_gets_one_line_and_the_turn_goes_on(
    tmp_path: Path, login_redirect: bool
) -> None:
    async with running(tmp_path, "socket") as bot:
        bot.fake.file_tokens = ("xoxb-some-other-app",)
        bot.fake.login_redirect = login_redirect  # never read as the file (an HTML "text" file)
        files = [bot.fake.file("secret.txt", b"classified\n")]
        assert await bot.deliver(mention("summarise", subtype="file_share", files=files))
        [reply] = await bot.fake.wait_for_posts(1)
        text = str(reply.args["text"])
        assert text.startswith("I couldn't read secret.txt: the download was refused\n\necho: summarise\n")
        assert [token for _, token in bot.fake.downloads] == ["xoxb-test"]


async def test_a_file_url_off_slack_never_gets_the_bot_token(tmp_path: Path) -> None:
    async with running(tmp_path, "socket") as bot:
        off_slack = bot.fake.file("leak.txt", b"x\n")
        off_slack["url_private"] = off_slack["url_private_download"] = off_slack["url_private"].replace(
            "127.0.0.1", "localhost"
        )
        assert await bot.deliver(mention("read", subtype="file_share", files=[off_slack]))
        [reply] = await bot.fake.wait_for_posts(1)
        assert str(reply.args["text"]).startswith("I couldn't read leak.txt: it is not stored on Slack\n\n")
        assert bot.fake.downloads == []


def test_the_bot_token_goes_to_slack_hosts_and_the_configured_api_host_only() -> None:
    api = "https://slack.com/api/"
    assert token_may_go_to("https://files.slack.com/files-pri/T-F/x.png", api)
    assert not token_may_go_to("https://files.slack.com.evil.example/x.png", api)
    assert not token_may_go_to("https://evilslack.com/x.png", api)
    assert token_may_go_to("http://127.0.0.1:9/files-pri/x", "http://127.0.0.1:9/api/")
    assert token_may_go_to("https://files.slack.com:443/x.png", api)


@pytest.mark.parametrize(
    ("url", "api"),
    [
        ("http://files.slack.com/files-pri/T-F/x.png", "https://slack.com/api/"),  # plain http
        ("https://files.slack.com:8443/x.png", "https://slack.com/api/"),  # another port
        ("http://slack.com/api/../files/x", "https://slack.com/api/"),  # the API host over http
        ("http://127.0.0.1:10/files-pri/x", "http://127.0.0.1:9/api/"),  # another port on the API host
        ("https://127.0.0.1:9/files-pri/x", "http://127.0.0.1:9/api/"),  # another scheme
        ("https://proxy.example:8443/x", "https://proxy.example/api/"),
        ("https://files.slack.com:99999/x", "https://slack.com/api/"),  # unparsable port
        ("https:///x", "https://slack.com/api/"),
    ],
)
def test_the_bot_token_never_leaves_slacks_https_origin_or_the_configured_apis(url: str, api: str) -> None:
    """Scheme, host AND port are compared (issue 29: http and another port got the token)."""
    assert not token_may_go_to(url, api)


@given(
    scheme=st.sampled_from(["http", "https", "ftp"]),
    host=st.sampled_from(["slack.com", "files.slack.com", "127.0.0.1", "evil.example"]),
    port=st.one_of(st.none(), st.integers(1, 65535)),
)
def test_the_token_goes_only_where_origin_rules_allow(scheme: str, host: str, port: int | None) -> None:
    url = f"{scheme}://{host}{'' if port is None else f':{port}'}/f"
    effective = port if port is not None else {"http": 80, "https": 443}.get(scheme)
    on_slack = scheme == "https" and effective == 443 and host.endswith("slack.com")
    assert token_may_go_to(url, "https://slack.com/api/") == on_slack
    fake = scheme == "http" and host == "127.0.0.1" and effective == 9
    assert token_may_go_to(url, "http://127.0.0.1:9/api/") == (fake or on_slack)
