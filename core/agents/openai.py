"""An agent backed by any OpenAI-compatible chat-completions server.

OpenAI, Ollama, vLLM, llama.cpp server and LM Studio all speak this protocol; the
official `openai` client talks to them given `agent.openai.base_url`. Each turn sends
the system prompt, the transcript tail the gateway read (`TurnInput.history`) and the
turn's new user message(s), and streams the reply back piece by piece, then the tokens
it cost (`Usage`, asked for with `stream_options.include_usage` unless
`agent.openai.stream_usage = false`). A server that answers a streamed request with one
plain JSON completion is understood too.

Every upstream problem (timeout, refused connection, 429, 5xx, a rejected key, an empty
reply) becomes `AgentError` with one clear log line; the gateway then answers the
person with its plain failure message and keeps their message in memory. The client's
own retries (`max_retries`, with backoff) run before that.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import openai
import pydantic
from openai import AsyncOpenAI
from openai.types import CompletionUsage
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam, ChatCompletionUserMessageParam

from core.agents.base import Piece, TurnInput
from core.agents.showing import inline_text, placeholder
from core.config import AgentSettings
from core.model import AgentError, ChatMessage, Usage

SUMMARY_PROMPT = "You summarise conversations for a chat assistant that will continue them."
SUMMARY_REQUEST = (
    "Summarise the conversation above in a few sentences: the facts, names, decisions and "
    "open questions the assistant needs to go on. Reply with the summary only."
)
NO_KEY = "not-needed"
"""Sent when no key is configured: local servers ignore it, the client insists on one."""
BACKFILL_INTRO = (
    "Earlier messages in this conversation, from before you were addressed "
    "(read for context; each starts with its author's name and time):"
)


class OpenAIAgent:
    name = "openai"

    def __init__(self, settings: AgentSettings, api_key: str | None, *, max_text_chars: int = 20_000) -> None:
        self.settings = settings
        self.max_text_chars = max_text_chars
        o = settings.openai
        self._client = AsyncOpenAI(
            base_url=o.base_url,
            api_key=api_key or NO_KEY,
            timeout=o.timeout,
            max_retries=o.max_retries,
        )
        self._options: dict[str, Any] = {}
        if o.temperature is not None:
            self._options["temperature"] = o.temperature
        if o.max_tokens is not None:
            self._options["max_tokens"] = o.max_tokens

    def messages(self, turn: TurnInput) -> list[ChatCompletionMessageParam]:
        """What the model is shown: system prompt, transcript tail, then the new message(s)."""
        out: list[ChatCompletionMessageParam] = []
        if self.settings.system_prompt:
            out.append({"role": "system", "content": self.settings.system_prompt})
        introduced = False
        for m in [*turn.history, *turn.new_messages]:
            if m.backfill and not introduced:
                out.append({"role": "system", "content": BACKFILL_INTRO})
                introduced = True
            out.append(self._message(m, turn.blobs))
        return out

    async def summarize(self, records: Sequence[ChatMessage]) -> str:
        """One non-streamed request: the records, then the request to summarise them."""
        o = self.settings.openai
        messages: list[ChatCompletionMessageParam] = [{"role": "system", "content": SUMMARY_PROMPT}]
        messages.extend(_message(m, m.content) for m in records)
        messages.append({"role": "user", "content": SUMMARY_REQUEST})
        try:
            done = await self._client.chat.completions.create(
                model=o.model, messages=messages, **self._options
            )
        except openai.OpenAIError as exc:
            raise AgentError(f"{o.base_url} (model {o.model}): summary failed: {type(exc).__name__}") from exc
        text = done.choices[0].message.content if done.choices else None
        if not isinstance(text, str) or not text.strip():
            raise AgentError(f"{o.base_url} (model {o.model}): empty summary")
        return text

    def _message(self, m: ChatMessage, blobs: Mapping[str, bytes]) -> ChatCompletionMessageParam:
        text = backfill_line(m) if m.backfill and m.role == "user" else m.content
        if m.role != "user" or not m.attachments:
            return _message(m, text)
        texts: list[str] = [text] if text else []
        images: list[Any] = []
        for ref in m.attachments:
            data = blobs.get(ref.sha256)
            if data is None:
                texts.append(placeholder(ref))
            elif ref.kind == "text":
                texts.append(inline_text(ref, data, self.max_text_chars))
            elif self.settings.openai.vision:
                url = f"data:{ref.mime};base64,{base64.b64encode(data).decode('ascii')}"
                images.append({"type": "image_url", "image_url": {"url": url}})
            else:
                texts.append(placeholder(ref))
        joined = "\n\n".join(texts)
        if not images:
            return {"role": "user", "content": joined}
        parts: list[Any] = [{"type": "text", "text": joined}] if joined else []
        message: ChatCompletionUserMessageParam = {"role": "user", "content": [*parts, *images]}
        return message

    async def stream(self, turn: TurnInput) -> AsyncIterator[Piece]:
        """The answer as the server streams it, then its `Usage` when the server reports one.

        A server that ignores `stream: true` and answers one JSON `chat.completion` (some
        proxies and older local servers do) is read as that one answer, not as an empty
        stream."""
        o = self.settings.openai
        model = turn.model or o.model
        where = f"{o.base_url} (model {model})"
        answered = False
        usage: Usage | None = None
        extra: dict[str, Any] = {"stream_options": {"include_usage": True}} if o.stream_usage else {}
        try:
            stream = await self._client.chat.completions.create(
                model=model, messages=self.messages(turn), stream=True, **extra, **self._options
            )
            async with stream:
                if _is_plain_json(stream.response.headers.get("content-type", "")):
                    done = _completion(await stream.response.aread(), where)
                    text = done.choices[0].message.content if done.choices else None
                    if text:
                        answered = True
                        yield text
                    usage = _usage(done.usage)
                else:
                    async for chunk in stream:
                        if chunk.choices and (piece := chunk.choices[0].delta.content):
                            answered = True
                            yield piece
                        usage = _usage(chunk.usage) or usage
        # The AgentError carries the whole story; the gateway logs it as the failure's one line.
        except openai.APITimeoutError as exc:
            raise AgentError(
                f"{where}: no answer within {o.timeout}s (after {o.max_retries} retries)"
            ) from exc
        except openai.APIStatusError as exc:
            hint = _status_hint(exc.status_code)
            raise AgentError(
                f"{where}: HTTP {exc.status_code} {hint}: {exc.message}".replace("  ", " ")
            ) from exc
        except openai.APIConnectionError as exc:
            raise AgentError(f"{where}: cannot connect: {exc.__cause__ or exc}") from exc
        except openai.OpenAIError as exc:  # e.g. an error event in the middle of a stream
            raise AgentError(f"{where}: {type(exc).__name__}: {exc}") from exc
        except httpx.HTTPError as exc:  # reading a plain JSON answer's body failed
            raise AgentError(f"{where}: the answer could not be read: {type(exc).__name__}") from exc
        if not answered:
            raise AgentError(f"{where}: the model returned an empty reply")
        if usage is not None:
            yield usage

    async def close(self) -> None:
        await self._client.close()


def _message(m: ChatMessage, text: str) -> ChatCompletionMessageParam:
    if m.role == "assistant":
        return {"role": "assistant", "content": text}
    if m.role == "system":
        return {"role": "system", "content": text}
    return {"role": "user", "content": text}


def backfill_line(m: ChatMessage) -> str:
    """An earlier message of the thread as the model sees it: "alice (2026-12-01 10:02 UTC): text"."""
    when = f" ({datetime.fromtimestamp(m.at, UTC):%Y-%m-%d %H:%M} UTC)" if m.at > 0 else ""
    return f"{m.author or 'someone'}{when}: {m.content}"


def _is_plain_json(content_type: str) -> bool:
    """A JSON body where an event stream was asked for (the server did not stream)."""
    return content_type.split(";")[0].strip().lower() == "application/json"


def _completion(raw: bytes, where: str) -> ChatCompletion:
    try:
        return ChatCompletion.model_validate_json(raw)
    except pydantic.ValidationError as exc:
        raise AgentError(
            f"{where}: asked for a stream, got a JSON body that is not a chat completion "
            f"({exc.error_count()} problems); does the server stream (stream: true)?"
        ) from exc


def _usage(reported: CompletionUsage | None) -> Usage | None:
    if reported is None:
        return None
    return Usage(reported.prompt_tokens, reported.completion_tokens)


def _status_hint(status: int) -> str:
    if status in (401, 403):
        return "(is the API key right? see agent.openai.api_key_env)"
    if status == 404:
        return "(is agent.openai.model served at agent.openai.base_url?)"
    if status == 429:
        return "(rate limited)"
    if status >= 500:
        return "(upstream server error)"
    return ""
