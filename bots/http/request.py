"""Reading a chat-completions request: every malformed input is an `ApiError` (a 4xx).

Requests are untrusted: JSON nested too deep for the parser, lone surrogates that no
store can write as UTF-8, wildcard or empty user names are refused here, before
anything reaches the gateway, so a refused request never creates a session.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bots.http.content import ContentError, read_content
from bots.http.errors import ApiError
from core.model import FileSource


@dataclass(frozen=True, slots=True)
class ChatRequest:
    text: str
    """The new input: the last user message's text."""
    stream: bool
    user: str | None
    """The body's `user` (a session of its own per user), None when absent."""
    model: str | None = None
    """The body's `model` (an agent id), None when absent or empty."""
    files: tuple[FileSource, ...] = ()
    """Images and files of the last user message (content parts), for the gateway to fetch."""
    include_usage: bool = False
    """`stream_options.include_usage`: end the stream with a chunk that carries `usage`."""


def decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}", code="invalid_json") from None
    except RecursionError:
        raise ApiError(400, "request body is nested too deeply", code="invalid_json") from None


def _utf8(value: str, what: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(
            400, f"{what} is not valid Unicode (a lone surrogate such as \\ud800)", code="invalid_unicode"
        ) from None
    return value


def parse(body: Any) -> ChatRequest:
    """The request's new input, stream flag and user; ApiError if malformed."""
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object", code="invalid_type")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty array", code="invalid_type")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "'stream' must be true or false", code="invalid_type")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise ApiError(400, "'model' must be a string", code="invalid_type")
    _refuse_unsupported(body)
    include_usage = _include_usage(body.get("stream_options"), stream)
    text, files = _last_user_message(messages)
    return ChatRequest(text, stream, _user(body.get("user")), model or None, files, include_usage)


def _unsupported(field: str, why: str) -> ApiError:
    return ApiError(400, f"'{field}' is not supported here: {why}", code="unsupported_parameter", param=field)


def _refuse_unsupported(body: dict[str, Any]) -> None:
    """A request asks for something this API does not do: a clear 400 naming the field,
    never an answer that silently ignores it (a client would count on it)."""
    n = body.get("n")
    if n is not None and n != 1:
        raise _unsupported("n", "one answer per request (leave out 'n' or send 1)")
    for field in ("tools", "functions"):
        if body.get(field):  # an empty list asks for nothing
            raise _unsupported(field, "the agent answers with text; tool calls are not offered")
    for field in ("tool_choice", "function_call"):
        if body.get(field) not in (None, "none", "auto"):
            raise _unsupported(field, "no tools are offered")
    if body.get("logprobs") or body.get("top_logprobs"):
        raise _unsupported("logprobs", "the agent's answer carries no log probabilities")
    fmt = body.get("response_format")
    if fmt is not None and not (isinstance(fmt, dict) and fmt.get("type") == "text"):
        raise _unsupported("response_format", "answers are plain text (type 'text')")
    modalities = body.get("modalities")
    if modalities is not None and modalities != ["text"]:
        raise _unsupported("modalities", "answers are text only")


def _include_usage(options: Any, stream: bool) -> bool:
    if options is None:
        return False
    if not isinstance(options, dict):
        raise ApiError(400, "'stream_options' must be an object", code="invalid_type", param="stream_options")
    if not stream:
        only = "'stream_options' is only allowed with \"stream\": true"
        raise ApiError(400, only, code="invalid_value", param="stream_options")
    include = options.get("include_usage", False)
    if not isinstance(include, bool):
        wrong = "'stream_options.include_usage' must be true or false"
        raise ApiError(400, wrong, code="invalid_type", param="stream_options")
    return include


def _user(user: Any) -> str | None:
    if user is None:
        return None
    if not isinstance(user, str):
        raise ApiError(400, "'user' must be a string", code="invalid_type")
    if not user.strip():
        raise ApiError(
            400, "'user' must not be empty (leave it out for a one-off request)", code="invalid_user"
        )
    if user == "*":
        raise ApiError(400, "'user' must name one user; '*' is not a user name", code="invalid_user")
    return _utf8(user, "'user'")


def _last_user_message(messages: list[Any]) -> tuple[str, tuple[FileSource, ...]]:
    for m in reversed(messages):
        if not isinstance(m, dict):
            raise ApiError(
                400, "each message must be an object with 'role' and 'content'", code="invalid_type"
            )
        if m.get("role") == "user":
            try:
                text, files = read_content(m.get("content"))
            except ContentError as exc:
                raise ApiError(400, str(exc), code=exc.code) from None
            if not text.strip() and not files:
                raise ApiError(400, "the last user message is empty", code="empty_message")
            return _utf8(text, "the last user message"), files
    raise ApiError(400, "'messages' has no message with role 'user'", code="no_user_message")
