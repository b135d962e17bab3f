"""What travels between an adapter and the gateway: a message in, replies out, transcript
records, and the `Responder` an adapter answers through.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from core.model.events import AgentEvent
from core.model.keys import SessionKey

Role = Literal["system", "user", "assistant"]


class FileSource(Protocol):
    """A file attached to an incoming message, not yet read (see core/attachments.py).

    Adapters build these without any I/O; the gateway reads them inside the turn, under
    the caps of `[attachments]`. Implementations must not show secrets in `repr`.
    """

    @property
    def name(self) -> str: ...

    @property
    def declared_size(self) -> int | None:
        """The size the platform announced, if any (checked before downloading)."""
        ...

    async def fetch(self, max_bytes: int) -> bytes:
        """The bytes; `FileTooLarge` past `max_bytes`, `FileUnavailable` when unreadable."""
        ...


class FileTooLarge(Exception):
    """A file is larger than the configured cap."""


class FileUnavailable(Exception):
    """A file could not be read; the message is a short reason fit for a person."""


@dataclass(frozen=True, slots=True)
class Inbound:
    """One message from a person, stripped of everything platform-specific."""

    platform: str
    user: str
    channel: str
    text: str
    message_id: str
    thread: str | None = None
    is_direct: bool = False
    mentioned_bot: bool = False
    display_name: str = ""
    space: str | None = None
    """Discord guild / Slack team the message was sent in (None in a DM or over HTTP)."""
    parent_channel: str | None = None
    """For a Discord thread: the channel it belongs to (bindings match it)."""
    roles: tuple[str, ...] = ()
    """The sender's role ids (Discord)."""
    agent: str | None = None
    """An agent asked for by name (the HTTP API's `model`); overrides `[[bindings]]`."""
    attachments: tuple[FileSource, ...] = ()
    """Files on the message, read by the gateway during the turn."""
    origin: str = ""
    """Who spoke, when not a person: `operator` (a proactive send or a schedule); kept on
    its transcript record so later turns can tell."""
    sender: str = ""
    """Who `[limits]` counts this message against, when not `user` (HTTP: the API token of
    an anonymous request)."""


@dataclass(frozen=True, slots=True)
class ReplyTarget:
    """Where the answer to a message goes, in a form any process can store and read back:
    a process that never saw the platform event answers through it (the durable inbox,
    schedules, approvals). Adapters turn a target back into a `Responder`.

    `reply_to` is the platform message answered (None for a proactive message);
    `answer_ids` the bot messages an answer is streaming into, in order, once any exists
    (a resumed answer rewrites them in place: an answer past a platform's message limit
    spans several); `extra` holds what else an adapter needs (a Slack team, a Discord
    guild), as strings.

    Stored form: `answer_ids` as a list, and its first id as `answer_id` too, which is
    all that a record written before answers had several messages holds (still read).
    """

    platform: str
    channel: str
    thread: str | None = None
    reply_to: str | None = None
    answer_ids: tuple[str, ...] = ()
    extra: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "platform": self.platform,
            "channel": self.channel,
            "thread": self.thread,
            "reply_to": self.reply_to,
            "answer_id": self.answer_ids[0] if self.answer_ids else None,
            "extra": dict(self.extra),
        }
        if self.answer_ids:
            out["answer_ids"] = list(self.answer_ids)
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, object]) -> ReplyTarget:
        """ValueError when `obj` is not a stored target (a corrupt record)."""
        platform, channel = obj.get("platform"), obj.get("channel")
        if not isinstance(platform, str) or not isinstance(channel, str):
            raise ValueError("a reply target needs a platform and a channel")

        def text(name: str) -> str | None:
            value = obj.get(name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"reply target {name} must be a string")
            return value

        extra = obj.get("extra") or {}
        if not isinstance(extra, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in extra.items()
        ):
            raise ValueError("reply target extra must map strings to strings")
        return cls(
            platform,
            channel,
            text("thread"),
            text("reply_to"),
            answer_ids_of(obj.get("answer_ids"), text("answer_id")),
            tuple(sorted(extra.items())),
        )


def answer_ids_of(many: object, one: str | None) -> tuple[str, ...]:
    """The answer messages a stored record names: its `answer_ids` list, or (a record
    written before answers had several messages) its one `answer_id`. ValueError for
    anything else (a corrupt record)."""
    if many is None:
        return (one,) if one else ()
    if not isinstance(many, list) or not all(isinstance(i, str) and i for i in many):
        raise ValueError("answer ids must be a list of strings")
    return tuple(many)


ReplyKind = Literal["answer", "merged", "failure", "dropped", "notice", "shutdown", "limited", "stopped"]
"""`answer`: the turn's reply. `merged`: this message was answered together with later
ones (collect/interrupt modes) and `text` is that shared answer. `failure`: the agent
or the store failed; `text` is a plain message for a person. `dropped`: the queue was
full and this message will not be answered. `notice`: a command's confirmation (e.g. a
reset). `shutdown`: the process is stopping and nothing of this message was stored, so
it is safe to send again. `limited`: the sender is over `[limits]`; nothing was stored;
`text` is the "slow down" notice for the first such message of a window and empty for
the others (send nothing then). `stopped`: someone sent `/stop` while this message was
being answered; its turn was cancelled (the message stays in memory, marked interrupted)."""

CancelReason = Literal["interrupted", "stopped", "shutdown", "retry", "disowned"]
"""Why a running turn was cancelled: a newer message (interrupt mode), `/stop`, shutdown,
or `retry`: its commit was fenced out, nothing was stored, and the same message is
answered again from the start (what was shown of the answer is void, not cut off)."""


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens one answer cost, as the model reported them (an agent may yield one; see
    core/agents/base.py). Fields are the OpenAI `usage` object's."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens, self.completion_tokens + other.completion_tokens
        )


@dataclass(frozen=True, slots=True)
class Reply:
    text: str
    kind: ReplyKind
    session_key: SessionKey
    session_id: str = ""
    turn: int = 0
    usage: Usage | None = None
    """What the answer cost, when the agent reported it (None: not reported)."""


AttachmentKind = Literal["image", "text"]


@dataclass(frozen=True, slots=True)
class AttachmentRef:
    """What a transcript keeps of a file: a reference; the bytes live in the store's blobs."""

    name: str
    mime: str
    """Sniffed from the bytes, never taken from the name or the sender."""
    size: int
    sha256: str
    kind: AttachmentKind
    width: int = 0
    height: int = 0
    lines: int = 0


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One transcript record."""

    role: Role
    content: str
    at: float = 0.0
    message_id: str = ""
    interrupted: bool = False
    summary: bool = False
    """A compaction summary: it stands for the records before it, except the last `keeps`."""
    keeps: int = 0
    """For a summary: how many records just before it are still sent verbatim after it."""
    attachments: tuple[AttachmentRef, ...] = ()
    author: str = ""
    """Who wrote it, by display name (backfilled records; empty for the session's own)."""
    backfill: bool = False
    """Read from the channel or thread when the session began, not said to the bot."""
    tool: str = ""
    """A tool call of the assistant (its name): `content` is its short line (what was
    called with which redacted arguments, and how it ended), `tool_arguments` the
    redacted JSON arguments."""
    tool_arguments: str = ""
    origin: str = ""
    """Not a person's message nor an answer to one: `operator` for a proactive send or a
    schedule (a `user` record: the operator's prompt; an `assistant` record: a notice)."""


class Closed(Exception):
    """The gateway is shutting down and takes no new messages."""


AnswerNote = Callable[[tuple[str, ...]], Awaitable[None]]
"""Given by core to a responder (`Responder.track_answer`): called with the ids of every
platform message the streamed answer shows in, in order, each time that list changes (a
message posted or deleted), and awaited before the answer goes on, so the ids are stored
with the message's inbox item before anything more is shown."""


class Responder(Protocol):
    """How the gateway talks back to the adapter for one inbound message.

    Every method must swallow and log its own platform errors: a failed send never
    breaks the lane of other messages.
    """

    async def send(self, reply: Reply) -> None: ...

    async def on_queued(self) -> None:
        """The message waits behind a running turn of its conversation."""
        ...

    def working(self) -> AbstractAsyncContextManager[None]:
        """Held for the whole turn that answers this message (typing indicator)."""
        ...

    async def on_delta(self, text: str) -> None:
        """A streamed piece of the answer, before the whole `answer` reply."""
        ...

    async def on_cancelled(self, reason: CancelReason) -> None:
        """The turn streaming into this responder was cancelled: whatever it showed of the
        answer will not be completed and must be marked as cut off (never left looking
        finished). A reply for the message still follows (`stopped`, `merged`, ...)."""
        ...

    async def on_event(self, event: AgentEvent) -> None:
        """Something the agent did besides text (a tool started or finished, an approval
        waiting): shown as one status line of the answer, edited in place."""
        ...

    def track_answer(self, note: AnswerNote) -> None:
        """From now on, report the platform messages the answer streams into through
        `note`: the moment a platform call posts (or deletes) one and before the next call
        of the answer, so a process that resumes the answer after a crash rewrites exactly
        those messages, in order, instead of posting a second copy. A responder that posts
        nothing until the end (or cannot edit what it posted) never calls it."""
        ...


@runtime_checkable
class HistorySource(Protocol):
    """What a responder offers when its conversation has earlier messages to read.

    The gateway calls it inside the turn lock, only on the first turn of a session, so a
    thread is read once per session however many processes share the store.
    """

    async def fetch_history(self) -> Sequence[ChatMessage]:
        """Earlier messages (oldest first, marked `backfill`), up to the adapter's limit.

        Raises nothing: a missing permission or an error is logged and gives `[]`.
        """
        ...
