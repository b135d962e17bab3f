"""Conversation commands, defined once: `/new` (`/reset`), `/stop`, `/model [NAME]`, `/status`.

A `Command` says what a user can ask of their conversation, whoever carries it: the
texts they read, what it does through the gateway, and how long a platform that must
answer within seconds waits before saying "I'll do it after the current answer". The
`Commands` registry (`Gateway.commands`) finds a command in a message's text and answers
a command for the platforms that need a text at once; adapters only map their native
form onto a command's name:

    Discord slash command /new     -> gateway.commands.answer(key, "new", "")
    Slack `/chatlane model big`    -> gateway.commands.answer(key, "model", "big")
    a message "/stop" (any adapter) -> Gateway.submit -> commands.find -> Command.act
    the terminal's /status         -> gateway.command(key, "status", "", responder)

Resets and `/model` are lane items, in order with the messages sent before them; `/stop`
and `/status` act at once (they are about what runs now). Every command is open to whoever
the adapter's gate admits for messages in that place (`who`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Literal

from core.config import SessionSettings
from core.conversation import Pending
from core.model import (
    Closed,
    Inbound,
    Reply,
    Responder,
    SessionKey,
    SessionStatus,
    StoreError,
    parse_key,
)
from core.turn import DEFAULT_MODEL_COMMAND, FutureResponder

if TYPE_CHECKING:
    from core.door.gateway import Gateway

log = logging.getLogger("chatlane.commands")

COMMAND_WAIT_S = 2.0
"""Discord wants an interaction answered, Slack a slash command acknowledged, within 3 s."""

# The texts a user reads, the same on every platform.
NOT_HERE_TEXT = "I'm not set up to answer here."
RESET_QUEUED_TEXT = "I'll start a new conversation as soon as I've answered what's before it."
RESET_FAILED_TEXT = "Sorry, I couldn't start a new conversation just now. Please try again."
MODEL_QUEUED_TEXT = "I'll switch the model as soon as I've answered what's before it."
MODEL_FAILED_TEXT = "Sorry, I couldn't change the model just now. Please try again."
STOPPED_HERE_TEXT = "Stopped the answer in progress."
STOP_SENT_TEXT = (
    "Asked to stop the answer in progress (nothing was running here; another process may run it)."
)
STOP_FAILED_TEXT = "Sorry, I couldn't pass on the stop just now. Please try again."
STATUS_FAILED_TEXT = "Sorry, I couldn't look up this conversation just now. Please try again."
STATUS_TEXT = "Conversation `{key}`\nSession `{session_id}`: {turns} turns\n{activity}"
NO_SESSION_TEXT = "Conversation `{key}`\nNo session yet: the first message starts one.\n{activity}"
BUSY_TEXT = "Answering now; {waiting} more waiting."
IDLE_TEXT = "Not answering now; {waiting} waiting."
USAGE_TEXT = "Usage: {prefix} {choices}"
OUTSIDE_THREADS_TEXT = " (That was the conversation outside threads; in a thread, say `{word}` there.)"

Who = Literal["admitted"]
"""Who may use a command: "admitted" is whoever the adapter's gate (allowlists, DM policy:
core/door/access.py) lets send messages in that place; commands add no gate of their own."""

Act = Callable[["Gateway", SessionKey, Inbound, str, Responder], Awaitable[None]]
"""What a command does through the gateway; its confirmation (a `notice`, or a `failure`)
goes to the responder, at once or when its lane item runs."""


@dataclasses.dataclass(frozen=True, slots=True)
class Command:
    """One conversation command, as every platform offers it."""

    name: str
    """The name adapters use (Discord's slash command, Slack's `/chatlane NAME`)."""
    about: str
    """One line for menus and help (Discord's command list, the terminal's /help)."""
    act: Act
    words: Callable[[SessionSettings], tuple[str, ...]]
    """The words that make a message this command (from `[session]`; empty: not by text)."""
    failed_text: str
    """Shown when it could not be done (the store or the shutdown refused it)."""
    queued_text: str | None = None
    """Shown when the lane did not confirm within `wait_s`; None: it answers at once."""
    wait_s: float = COMMAND_WAIT_S
    arg: str = ""
    """The name of its optional argument ("" when it takes none); the rest of the text."""
    arg_about: str = ""
    aliases: tuple[str, ...] = ()
    private: bool = False
    """Answered only to the asker even when the whole channel shares the conversation."""
    who: Who = "admitted"
    thread_note: bool = False
    """Asked where the platform cannot say the thread (Slack slash commands), its answer
    says how to reach a thread's own conversation (what it did cannot be seen otherwise)."""
    in_text: Callable[[Gateway, SessionKey], bool] | None = None
    """When a message is taken as this command at all (None: always)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Answer:
    """A command's text for a platform that must answer now, and whether only the asker sees it."""

    text: str
    private: bool


# ------------------------------------------------------------------ what each one does
async def _reset(gateway: Gateway, key: SessionKey, inbound: Inbound, arg: str, responder: Responder) -> None:
    await gateway.enqueue(key, Pending(inbound, responder, reset=True))


async def _model(gateway: Gateway, key: SessionKey, inbound: Inbound, arg: str, responder: Responder) -> None:
    # The runner reads the name from the item's text: give it the canonical form.
    text = f"{model_word(gateway.config.session)} {arg}".strip()
    command = dataclasses.replace(inbound, text=text)
    await gateway.enqueue(key, Pending(command, responder, model_command=True))


async def _stop(gateway: Gateway, key: SessionKey, inbound: Inbound, arg: str, responder: Responder) -> None:
    await responder.send(Reply(await gateway.stop_text(key), "notice", key))


async def _status(
    gateway: Gateway, key: SessionKey, inbound: Inbound, arg: str, responder: Responder
) -> None:
    try:
        status = await gateway.status(key)
    except StoreError as exc:
        log.error("/status of %s failed: the store failed: %s", key, exc)
        await responder.send(Reply(STATUS_FAILED_TEXT, "failure", key))
        return
    entry = status.entry
    sid, turns = (entry.session_id, entry.turns) if entry is not None else ("", 0)
    await responder.send(Reply(describe_status(status), "notice", key, sid, turns))


def describe_status(status: SessionStatus) -> str:
    """What `/status` says: the key, its session and turns, and what its lane is doing.

    Reads only `SessionStatus`, so what the durable inbox adds there shows up here."""
    template = BUSY_TEXT if status.running else IDLE_TEXT
    activity = template.format(waiting=status.waiting)
    if status.entry is None:
        return NO_SESSION_TEXT.format(key=status.key, activity=activity)
    entry = status.entry
    return STATUS_TEXT.format(
        key=status.key, session_id=entry.session_id, turns=entry.turns, activity=activity
    )


def model_word(session: SessionSettings) -> str:
    return session.model_command or DEFAULT_MODEL_COMMAND


def _has_models(gateway: Gateway, key: SessionKey) -> bool:
    # A message "/model" to an agent without choices is an ordinary message (for its agent).
    return bool(gateway.router.settings(parse_key(key).agent).models)


NEW = Command(
    "new",
    "Start a new conversation (forget this one)",
    _reset,
    lambda s: s.reset_commands,
    RESET_FAILED_TEXT,
    RESET_QUEUED_TEXT,
    aliases=("reset",),
    thread_note=True,
)
STOP = Command(
    "stop",
    "Stop the answer in progress",
    _stop,
    lambda s: s.stop_commands,
    STOP_FAILED_TEXT,
    thread_note=True,
)
MODEL = Command(
    "model",
    "Show or switch this conversation's model",
    _model,
    lambda s: (s.model_command,) if s.model_command else (),
    MODEL_FAILED_TEXT,
    MODEL_QUEUED_TEXT,
    arg="name",
    arg_about="the model to use from now on (leave out to see the choices)",
    in_text=_has_models,
)
STATUS = Command(
    "status",
    "Show this conversation's session, turns and what is running or waiting",
    _status,
    lambda s: (s.status_command,) if s.status_command else (),
    STATUS_FAILED_TEXT,
    private=True,
)
COMMANDS: tuple[Command, ...] = (NEW, STOP, MODEL, STATUS)
"""The registry: every conversation command, in the order menus and help show them."""


class Commands:
    """The registry as one gateway uses it: finds commands in text, answers them in time."""

    def __init__(self, gateway: Gateway, commands: tuple[Command, ...] = COMMANDS) -> None:
        self.gateway = gateway
        self.all = commands
        self._by_name = {n: c for c in commands for n in (c.name, *c.aliases)}

    def get(self, name: str) -> Command | None:
        """The command called `name` (or one of its aliases), any case."""
        return self._by_name.get(name.strip().lower())

    def names(self) -> list[str]:
        """Every name a platform offers (aliases included), in registry order."""
        return [n for c in self.all for n in (c.name, *c.aliases)]

    def usage(self, prefix: str) -> str:
        choices = " | ".join(
            f"{n} [{c.arg.upper()}]" if c.arg else n for c in self.all for n in (c.name, *c.aliases)
        )
        return USAGE_TEXT.format(prefix=prefix, choices=choices)

    def find(self, key: SessionKey, text: str) -> tuple[Command, str] | None:
        """The command a message's text asks for, with its argument, or None (a message).

        A command without an argument must be the whole text ("/new please" is a message);
        one with an argument is its first word. Words compare without case."""
        words = text.strip().split(maxsplit=1)
        if not words:
            return None
        session = self.gateway.config.session
        first = words[0].lower()
        for command in self.all:
            said = [w.lower() for w in command.words(session)]
            if command.arg:
                if first not in said:
                    continue
                arg = words[1].strip() if len(words) > 1 else ""
            elif text.strip().lower() in said:
                arg = ""
            else:
                continue
            if command.in_text is None or command.in_text(self.gateway, key):
                return command, arg
        return None

    def word(self, command: Command) -> str:
        """How to say `command` in a message here (the first configured word)."""
        words = command.words(self.gateway.config.session)
        return words[0] if words else f"/{command.name}"

    def help_lines(self) -> list[str]:
        """One line per command that a message can say here: its word and what it does."""
        session = self.gateway.config.session
        return [f"  {self.word(c):<9} {c.about}" for c in self.all if c.words(session)]

    async def answer(
        self, key: SessionKey, name: str, arg: str = "", *, outside_threads: bool = False
    ) -> Answer:
        """Do the command `name` and return its text within its `wait_s` (platforms that
        must answer in seconds: Discord interactions, Slack slash commands).

        A lane item not confirmed by then still runs, in order; the text says it will.
        Never raises for the store or a shutdown: the command's failure text says so (the
        log has why). `outside_threads`: the platform could not say which thread it was
        asked in (Slack slash commands), so the text says how to reach a thread's own."""
        command = self.get(name)
        if command is None:
            raise ValueError(f"no conversation command {name!r}")
        responder = FutureResponder()
        try:
            await self.gateway.command(key, command.name, arg, responder)
            reply = await asyncio.wait_for(asyncio.shield(responder.reply), command.wait_s)
            text = reply.text
        except TimeoutError:
            text = command.queued_text or command.failed_text
        except (Closed, StoreError, ValueError) as exc:
            log.error("/%s for %s failed: %s", command.name, key, exc)
            text = command.failed_text
        if outside_threads and command.thread_note and self.gateway.config.session.threads:
            text += OUTSIDE_THREADS_TEXT.format(word=self.word(command))
        shared = self.gateway.config.session.scope == "channel"
        return Answer(text, private=command.private or not shared)
