"""OpenAI fidelity of the HTTP API, seen by the official `openai` client: `usage` (from
the model when it reports it), `stream_options.include_usage`, and a clear 400 naming the
field for what the API does not do (`n` > 1, tools, ...)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest

from bots.http.service import SESSION_HEADER
from tests.fakes.fake_llm import FakeLLM, usage_of
from tests.support.http import serve


def _openai_agent(llm: FakeLLM) -> str:
    return (
        'backend = "openai"\nsystem_prompt = "be brief"\n'
        f'[agent.openai]\nbase_url = "{llm.base_url}"\nmodel = "m"\nmax_retries = 0\ntimeout = 10\n'
    )


def _expected_usage(llm: FakeLLM) -> dict[str, int]:
    """What the fake reported for its last call."""
    call = llm.calls[-1]
    return usage_of(call.messages, f"reply to: {call.messages[-1]['content']}")


async def test_a_json_answer_carries_the_usage_the_model_reported(tmp_path: Path, llm: FakeLLM) -> None:
    async with serve(tmp_path, agent_toml=_openai_agent(llm)) as s, s.client() as client:
        done = await client.chat.completions.create(
            model="main", messages=[{"role": "user", "content": "count these words"}], user="u"
        )
    assert done.usage is not None
    assert done.usage.prompt_tokens == _expected_usage(llm)["prompt_tokens"] > 0
    assert done.usage.completion_tokens == _expected_usage(llm)["completion_tokens"] > 0
    assert done.usage.total_tokens == _expected_usage(llm)["total_tokens"]


async def test_include_usage_ends_the_stream_with_a_usage_chunk(tmp_path: Path, llm: FakeLLM) -> None:
    async with serve(tmp_path, agent_toml=_openai_agent(llm)) as s, s.client() as client:
        stream = await client.chat.completions.create(
            model="main",
            messages=[{"role": "user", "content": "hi there"}],
            user="u",
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.total_tokens == _expected_usage(llm)["total_tokens"] > 0
    assert all(c.usage is None for c in chunks[:-1])
    text = "".join(c.choices[0].delta.content or "" for c in chunks[:-1])
    assert text == "reply to: hi there"


async def test_without_include_usage_no_usage_chunk_is_sent(tmp_path: Path, llm: FakeLLM) -> None:
    async with serve(tmp_path, agent_toml=_openai_agent(llm)) as s, s.client() as client:
        stream = await client.chat.completions.create(
            model="main", messages=[{"role": "user", "content": "hi"}], user="u", stream=True
        )
        chunks = [chunk async for chunk in stream]
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


async def test_an_agent_that_reports_no_usage_answers_without_it(tmp_path: Path) -> None:
    """The echo agent (text only) keeps working: no `usage` in JSON, a null usage chunk."""
    async with serve(tmp_path) as s, s.client() as client:
        done = await client.chat.completions.create(
            model="main", messages=[{"role": "user", "content": "hi"}], user="u"
        )
        stream = await client.chat.completions.create(
            model="main",
            messages=[{"role": "user", "content": "again"}],
            user="u",
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    assert (done.choices[0].message.content or "").startswith("echo: hi")
    assert done.usage is None
    assert chunks[-1].choices == [] and chunks[-1].usage is None


UNSUPPORTED: list[tuple[str, dict[str, Any]]] = [
    ("n", {"n": 2}),
    ("tools", {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}),
    ("tool_choice", {"tool_choice": "required"}),
    ("logprobs", {"logprobs": True}),
    ("response_format", {"response_format": {"type": "json_object"}}),
]


@pytest.mark.parametrize(("field", "extra"), [pytest.param(f, e, id=f) for f, e in UNSUPPORTED])
async def test_what_the_api_does_not_do_is_a_400_naming_the_field(
    tmp_path: Path, field: str, extra: dict[str, Any]
) -> None:
    async with serve(tmp_path) as s, s.client() as client:
        with pytest.raises(openai.BadRequestError) as refused:
            await client.chat.completions.create(
                model="main", messages=[{"role": "user", "content": "hi"}], user="u", **extra
            )
        assert await s.entries() == []
    assert refused.value.param == field
    assert f"'{field}'" in refused.value.message
    assert refused.value.code == "unsupported_parameter"


async def test_n_of_one_and_empty_tools_are_fine(tmp_path: Path) -> None:
    async with serve(tmp_path) as s, s.client() as client:
        done = await client.chat.completions.create(
            model="main", messages=[{"role": "user", "content": "hi"}], user="u", n=1, tools=[]
        )
    assert (done.choices[0].message.content or "").startswith("echo: hi")


async def test_a_stateless_client_keeps_one_conversation_with_the_key_it_chose(tmp_path: Path) -> None:
    """What docs/http-api.md tells a client that resends the whole history: every answer
    names its session in the header, and a key of your own (or `user`) keeps the session."""
    key = "agent:main:http:client-7:api"
    history: list[Any] = []
    async with serve(tmp_path) as s, s.client() as client:
        for text in ("one", "two", "three"):
            history.append({"role": "user", "content": text})
            raw = await client.chat.completions.with_raw_response.create(
                model="main", messages=history, extra_headers={SESSION_HEADER: key}
            )
            assert raw.headers[SESSION_HEADER] == key
            history.append({"role": "assistant", "content": raw.parse().choices[0].message.content})
        streamed = await client.chat.completions.with_raw_response.create(
            model="main", messages=[{"role": "user", "content": "x"}], stream=True
        )
        assert streamed.headers[SESSION_HEADER].startswith("agent:main:http:anon-")
        async for _ in streamed.parse():
            pass
        records = await s.transcript(key)
    assert "turn 3" in (history[-1]["content"] or "")
    assert [r.content for r in records if r.role == "user"] == ["one", "two", "three"]


async def test_a_failed_answer_still_names_its_session(tmp_path: Path) -> None:
    """The failed message is in that session's memory: the 502 says which session it is."""
    async with (
        FakeLLM(fail_first=1) as llm,
        serve(tmp_path, agent_toml=_openai_agent(llm)) as s,
        s.client() as client,
    ):
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(
                model="main", messages=[{"role": "user", "content": "lost?"}], user="g"
            )
    assert caught.value.status_code == 502
    assert caught.value.response.headers[SESSION_HEADER] == "agent:main:http:g:api"
