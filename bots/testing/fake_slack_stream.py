"""What the fake Slack accepts from the native streaming methods and `assistant.threads.setStatus`.

The shapes are the ones Slack's reference documents (chat.startStream / appendStream /
stopStream, the task card block, assistant.threads.setStatus):

* `chunks` is a list of objects: `markdown_text` {text}, `task_update` {id, title, status
  (pending | in_progress | complete | error), details?, output? (at most 256 characters
  each), sources? (url objects)}, `plan_update` {title}, `blocks` {blocks}. Nothing else,
  and no unknown keys.
* `markdown_text` holds at most 12,000 characters; `task_display_mode` (startStream only)
  is `timeline` or `plan`; startStream needs `thread_ts`; appendStream needs something to
  append.
* A stream sends its text one way: a stream started with the `markdown_text` argument
  must go on with it, one started with chunks must go on with chunks
  (`streaming_mode_mismatch`).
* setStatus needs `channel_id`, `thread_ts` and `status` ("" clears it); at most 10
  `loading_messages`.

Slack names the error of a shape it refuses `invalid_arguments`, as here.
"""

from __future__ import annotations

import json
from typing import Any

Json = dict[str, Any]

TASK_CHUNKS = frozenset({"task_update", "plan_update"})
TASK_STATUSES = frozenset({"pending", "in_progress", "complete", "error"})
MARKDOWN_LIMIT = 12_000
TASK_FIELD_LIMIT = 256
LOADING_MESSAGES_LIMIT = 10
_FIELDS = {
    "markdown_text": ({"text"}, set()),
    "task_update": ({"id", "title", "status"}, {"details", "output", "sources"}),
    "plan_update": ({"title"}, set()),
    "blocks": ({"blocks"}, set()),
}
"""Each chunk type's required and optional keys (besides `type`)."""
INVALID = "invalid_arguments"


def chunks_of(args: Json) -> list[Json] | None:
    """The call's chunks as a list (form-encoded calls send them as JSON text); None when
    there are none, or when they are not a list of objects."""
    raw = args.get("chunks")
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return None
    if not isinstance(raw, list) or not all(isinstance(c, dict) for c in raw):
        return None
    return raw


def text_mode(args: Json) -> str | None:
    """How this call sends content: "markdown_text" (the argument), "chunks", or None."""
    if args.get("markdown_text"):
        return "markdown_text"
    return "chunks" if chunks_of(args) else None


def check_stream(method: str, args: Json, mode: str | None) -> str | None:
    """The error Slack answers this streaming call with (None: accepted). `mode`: how the
    stream sent its content so far (None: nothing yet, or a new stream)."""
    if not args.get("channel"):
        return INVALID
    if method == "chat.startStream":
        if not args.get("thread_ts"):
            return INVALID
        if args.get("task_display_mode", "timeline") not in ("timeline", "plan"):
            return INVALID
    markdown = args.get("markdown_text")
    if markdown is not None and (not isinstance(markdown, str) or len(markdown) > MARKDOWN_LIMIT):
        return INVALID
    if "chunks" in args:
        chunks = chunks_of(args)
        if chunks is None or any(_chunk_error(c) for c in chunks):
            return INVALID
    this = text_mode(args)
    if method == "chat.appendStream" and this is None:
        return INVALID  # nothing to append
    if mode is not None and this is not None and this != mode:
        return "streaming_mode_mismatch"
    return None


def _chunk_error(chunk: Json) -> bool:
    kind = chunk.get("type")
    if kind not in _FIELDS:
        return True
    required, optional = _FIELDS[kind]
    keys = set(chunk) - {"type"}
    if not required <= keys or keys - required - optional:
        return True
    if kind == "markdown_text":
        return not isinstance(chunk["text"], str) or len(chunk["text"]) > MARKDOWN_LIMIT
    if kind == "plan_update":
        return not _text(chunk["title"])
    if kind == "blocks":
        return not isinstance(chunk["blocks"], list)
    if not (_text(chunk["id"]) and _text(chunk["title"]) and chunk["status"] in TASK_STATUSES):
        return True
    for name in ("details", "output"):
        value = chunk.get(name)
        if value is not None and (not isinstance(value, str) or len(value) > TASK_FIELD_LIMIT):
            return True
    sources = chunk.get("sources")
    if sources is not None:
        if not isinstance(sources, list):
            return True
        return not all(
            isinstance(s, dict) and s.get("type") == "url" and _text(s.get("url")) and _text(s.get("text"))
            for s in sources
        )
    return False


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def check_status(args: Json) -> str | None:
    """The error Slack answers assistant.threads.setStatus with (None: accepted)."""
    if not args.get("channel_id") or not args.get("thread_ts"):
        return INVALID
    if not isinstance(args.get("status"), str):
        return INVALID
    loading = args.get("loading_messages")
    if loading is not None:
        if isinstance(loading, str):
            try:
                loading = json.loads(loading)
            except ValueError:
                return INVALID
        if not isinstance(loading, list) or len(loading) > LOADING_MESSAGES_LIMIT:
            return INVALID
        if not all(isinstance(m, str) for m in loading):
            return INVALID
    return None
