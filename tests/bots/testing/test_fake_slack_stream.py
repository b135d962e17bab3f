"""The fake Slack takes from the streaming methods and assistant.threads.setStatus what
Slack's reference documents, and refuses the rest (real slack-sdk calls)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.testing.fake_slack import GENERAL, HUMAN, TEAM, FakeSlack

THREAD = "1700000000.000001"
CARD = {"type": "task_update", "id": "call_1", "title": "lookup", "status": "in_progress"}


@pytest.fixture
async def client() -> AsyncIterator[tuple[FakeSlack, AsyncWebClient]]:
    fake = await FakeSlack().start()
    try:
        yield fake, AsyncWebClient(token="xoxb-test", base_url=fake.api_base)
    finally:
        await fake.close()


async def refused(call: Any) -> str:
    with pytest.raises(SlackApiError) as caught:
        await call
    return str(caught.value.response["error"])


async def start(web: AsyncWebClient, **kw: Any) -> str:
    kw.setdefault("chunks", [CARD])
    started = await web.chat_startStream(
        channel=GENERAL, thread_ts=THREAD, recipient_user_id=HUMAN, recipient_team_id=TEAM, **kw
    )
    return str(started["ts"])


async def test_plan_and_task_chunks_build_the_message(client: tuple[FakeSlack, AsyncWebClient]) -> None:
    fake, web = client
    ts = await start(web, task_display_mode="plan", chunks=[{"type": "plan_update", "title": "Using"}, CARD])
    await web.chat_appendStream(channel=GENERAL, ts=ts, chunks=[{"type": "markdown_text", "text": "hi"}])
    done = {**CARD, "status": "complete", "output": "3 lines"}
    await web.chat_stopStream(channel=GENERAL, ts=ts, chunks=[{"type": "plan_update", "title": "Used"}, done])
    [message] = fake.messages
    assert (message.text, message.plan_title, message.task_display_mode) == ("hi", "Used", "plan")
    assert message.tasks == {"call_1": done} and not message.streaming


@pytest.mark.parametrize(
    "chunk",
    [
        {**CARD, "status": "done"},
        {**CARD, "details": "x" * 257},
        {**CARD, "colour": "red"},
        {"type": "task_update", "id": "call_1", "status": "pending"},
        {"type": "plan_update", "title": ""},
        {"type": "image", "url": "https://example.com/a.png"},
        {**CARD, "sources": [{"type": "url", "url": "https://example.com"}]},
    ],
)
async def test_a_chunk_slack_would_refuse_is_refused(
    client: tuple[FakeSlack, AsyncWebClient], chunk: dict[str, Any]
) -> None:
    fake, web = client
    assert await refused(start(web, chunks=[chunk])) == "invalid_arguments"
    assert not fake.messages


async def test_a_stream_sends_its_text_one_way(client: tuple[FakeSlack, AsyncWebClient]) -> None:
    _, web = client
    ts = await start(web)
    mixed = web.chat_appendStream(channel=GENERAL, ts=ts, markdown_text="more")
    assert await refused(mixed) == "streaming_mode_mismatch"
    by_argument = await start(web, chunks=None, markdown_text="hello")
    assert await refused(web.chat_appendStream(channel=GENERAL, ts=by_argument, chunks=[CARD])) == (
        "streaming_mode_mismatch"
    )
    assert await refused(start(web, task_display_mode="list")) == "invalid_arguments"


async def test_set_status_takes_a_status_and_at_most_ten_loading_messages(
    client: tuple[FakeSlack, AsyncWebClient],
) -> None:
    fake, web = client
    await web.assistant_threads_setStatus(channel_id=GENERAL, thread_ts=THREAD, status="is busy")
    await web.assistant_threads_setStatus(channel_id=GENERAL, thread_ts=THREAD, status="")
    many = [f"step {n}" for n in range(11)]
    call = web.assistant_threads_setStatus(
        channel_id=GENERAL, thread_ts=THREAD, status="x", loading_messages=many
    )
    assert await refused(call) == "invalid_arguments"
    assert await refused(web.api_call("assistant.threads.setStatus", json={"channel_id": GENERAL})) == (
        "invalid_arguments"
    )
    assert [c.error for c in fake.calls_of("assistant.threads.setStatus")] == [
        None,
        None,
        "invalid_arguments",
        "invalid_arguments",
    ]
