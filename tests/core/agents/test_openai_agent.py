"""OpenAIAgent: the real `openai` client against a fake OpenAI-compatible server."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pytest

from core.agents.base import TurnInput
from core.agents.openai import NO_KEY, OpenAIAgent
from core.config import AgentSettings, OpenAISettings
from core.model.errors import AgentError
from core.model.keys import SessionKey
from core.model.messages import ChatMessage, Usage
from tests.fakes.fake_llm import FakeLLM


def _settings(llm: FakeLLM, system_prompt: str = "be kind", **openai_options: Any) -> AgentSettings:
    options: dict[str, Any] = {"base_url": llm.base_url, "model": "m1", "max_retries": 0, "timeout": 10.0}
    openai = OpenAISettings.model_validate(options | openai_options)
    return AgentSettings(backend="openai", system_prompt=system_prompt, openai=openai)


def _turn(history: Sequence[ChatMessage] = (), *new: str) -> TurnInput:
    return TurnInput(
        SessionKey("agent:main:http:u:api"),
        "0" * 32,
        len(history) // 2 + 1,
        list(history),
        [ChatMessage("user", text) for text in new or ("hi",)],
    )


async def _answer(agent: OpenAIAgent, turn: TurnInput) -> list[str]:
    return [piece async for piece in agent.stream(turn) if isinstance(piece, str)]


async def _usage(agent: OpenAIAgent, turn: TurnInput) -> list[Usage]:
    return [piece async for piece in agent.stream(turn) if isinstance(piece, Usage)]


async def test_a_server_that_answers_plain_json_to_a_stream_request_is_understood() -> None:
    """Before: the SSE reader found no events in the JSON body: "empty reply"."""
    async with FakeLLM(plain_json=True) as llm:
        agent = OpenAIAgent(_settings(llm), None)
        try:
            pieces = [piece async for piece in agent.stream(_turn((), "hello world"))]
        finally:
            await agent.close()
    assert llm.calls[0].body["stream"] is True
    assert pieces == ["reply to: hello world", Usage(4, 4)]  # "be kind" + "hello world"; 4 words


async def test_reports_the_usage_the_server_streams_last(llm: FakeLLM) -> None:
    agent = OpenAIAgent(_settings(llm), None)
    try:
        usage = await _usage(agent, _turn((), "one two three"))
    finally:
        await agent.close()
    assert llm.calls[0].body["stream_options"] == {"include_usage": True}
    assert usage == [Usage(5, 5)]


async def test_stream_usage_false_does_not_ask_for_usage(llm: FakeLLM) -> None:
    agent = OpenAIAgent(_settings(llm, stream_usage=False), None)
    try:
        usage = await _usage(agent, _turn((), "one two three"))
    finally:
        await agent.close()
    assert "stream_options" not in llm.calls[0].body
    assert usage == []


async def test_a_plain_json_answer_without_text_is_an_empty_reply(llm: FakeLLM) -> None:
    llm.plain_json = True
    llm.reply = lambda messages: ""  # an answer without content
    agent = OpenAIAgent(_settings(llm), None)
    try:
        with pytest.raises(AgentError, match="empty reply"):
            await _answer(agent, _turn())
    finally:
        await agent.close()


async def test_streams_the_reply_in_pieces(llm: FakeLLM) -> None:
    agent = OpenAIAgent(_settings(llm), "k")
    try:
        pieces = await _answer(agent, _turn((), "hello world"))
    finally:
        await agent.close()
    assert len(pieces) > 1
    assert "".join(pieces) == "reply to: hello world"
    assert llm.calls[0].body["stream"] is True
    assert llm.calls[0].body["model"] == "m1"


async def test_shows_system_prompt_then_history_then_the_new_messages(llm: FakeLLM) -> None:
    history = [
        ChatMessage("user", "first"),
        ChatMessage("assistant", "answer one"),
        ChatMessage("user", "cut off", interrupted=True),
    ]
    agent = OpenAIAgent(_settings(llm), None)
    try:
        await _answer(agent, _turn(history, "second", "third"))
    finally:
        await agent.close()
    assert llm.calls[0].messages == [
        {"role": "system", "content": "be kind"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "answer one"},
        {"role": "user", "content": "cut off"},
        {"role": "user", "content": "second"},
        {"role": "user", "content": "third"},
    ]


async def test_empty_system_prompt_is_not_sent(llm: FakeLLM) -> None:
    agent = OpenAIAgent(_settings(llm, system_prompt=""), None)
    try:
        await _answer(agent, _turn())
    finally:
        await agent.close()
    assert llm.calls[0].messages == [{"role": "user", "content": "hi"}]


async def test_sends_the_key_or_a_placeholder_for_local_servers(llm: FakeLLM) -> None:
    for key, expected in (("sk-real", "Bearer sk-real"), (None, f"Bearer {NO_KEY}")):
        agent = OpenAIAgent(_settings(llm), key)
        try:
            await _answer(agent, _turn())
        finally:
            await agent.close()
        assert llm.calls[-1].authorization == expected


async def test_temperature_and_max_tokens_only_when_configured(llm: FakeLLM) -> None:
    for agent in (
        OpenAIAgent(_settings(llm), None),
        OpenAIAgent(_settings(llm, temperature=0.3, max_tokens=77), None),
    ):
        try:
            await _answer(agent, _turn())
        finally:
            await agent.close()
    unset, configured = (c.body for c in llm.calls)
    assert "temperature" not in unset
    assert "max_tokens" not in unset
    assert configured["temperature"] == 0.3
    assert configured["max_tokens"] == 77


@pytest.mark.parametrize(("status", "hint"), [(429, "rate limited"), (500, "server error"), (401, "API key")])
async def test_upstream_errors_become_one_agent_error_that_explains_them(
    status: int, hint: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The AgentError carries the details (the gateway logs it as the failure's one line)."""
    async with FakeLLM(fail_status=status, fail_first=1) as llm:
        agent = OpenAIAgent(_settings(llm), "sk-do-not-log")
        try:
            with caplog.at_level(logging.DEBUG, "chatlane"), pytest.raises(AgentError) as caught:
                await _answer(agent, _turn())
        finally:
            await agent.close()
    message = str(caught.value)
    assert f"HTTP {status}" in message and hint in message and llm.base_url in message
    assert "sk-do-not-log" not in message + caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # no second line


async def test_timeout_becomes_agent_error() -> None:
    async with FakeLLM(delay_s=2.0) as llm:
        agent = OpenAIAgent(_settings(llm, timeout=0.2), None)
        try:
            with pytest.raises(AgentError, match=r"no answer within 0\.2s"):
                await _answer(agent, _turn())
        finally:
            await agent.close()


async def test_unreachable_server_becomes_agent_error() -> None:
    llm = FakeLLM()
    await llm.start()
    await llm.stop()  # its port is now closed
    agent = OpenAIAgent(_settings(llm), None)
    try:
        with pytest.raises(AgentError, match="cannot connect"):
            await _answer(agent, _turn())
    finally:
        await agent.close()


async def test_retries_then_answers(caplog: pytest.LogCaptureFixture) -> None:
    """`max_retries` is the client's: a transient 503 is retried without an AgentError."""
    async with FakeLLM(fail_status=503, fail_first=1) as llm:
        agent = OpenAIAgent(_settings(llm, max_retries=1), None)
        try:
            assert "".join(await _answer(agent, _turn((), "again"))) == "reply to: again"
        finally:
            await agent.close()
    assert [c.failed for c in llm.calls] == [True, False]


async def test_an_empty_reply_is_a_failure() -> None:
    async with FakeLLM(reply=lambda messages: "") as llm:
        agent = OpenAIAgent(_settings(llm), None)
        try:
            with pytest.raises(AgentError, match="empty"):
                await _answer(agent, _turn())
        finally:
            await agent.close()
