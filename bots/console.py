"""Terminal chat: `chatlane chat`. Session key `agent:<agent>:console:<user>:local`.

`chatlane chat` on a terminal is bots/terminal.py (readline, /help, /status, /new,
Ctrl-C); here, as `chatlane run`'s console or from a pipe, it reads one message per
line, prints each reply, and exits after the last reply at end of input: 0, or 1 if any
message was not answered. Answers print as they stream, piece
by piece; lines are taken while an answer prints (they queue in the conversation's
lane), so `/stop` stops the answer in progress, which then ends with "(stopped)".
`/help` is answered here, as on a terminal, and the conversation commands (`/status`,
`/new`, `/stop`, ...) by the gateway's command registry: none reaches the agent or is
stored as a turn (their answers print in order with the others).
Several such processes with one `--user` on one store are several writers of one
conversation: the store's reservation and turn lock keep them in one session with
turns that never overlap.

A line the process took but did not answer before it stopped stays in the durable
inbox; the next console process on the store answers it and prints the answer as a
`LateAnswer` (there is no one else to send it to; it is in the transcript either way).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import ClassVar, TextIO

from bots.runtime import Runtime
from core.config import AdapterSettings
from core.model import Inbound, Reply, ReplyTarget
from core.turn import FutureResponder, QuietResponder

log = logging.getLogger("chatlane.console")


class ConsoleSettings(AdapterSettings):
    """`[console]`: `chatlane run` reads stdin as one user."""

    section: ClassVar[str] = "console"
    enabled: bool = False
    user: str = "local"


_ids = itertools.count(1)
PLATFORM = "console"


async def _lines(stream: TextIO) -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    try:
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), stream)
    except ValueError:  # a regular file: reading it never blocks for long
        while line := await asyncio.to_thread(stream.readline):
            yield line
        return
    try:
        while line_bytes := await reader.readline():
            yield line_bytes.decode("utf-8", "replace")
    finally:
        transport.close()


HELP_COMMAND = "/help"
PIPED_HELP_INTRO = "One message per line; each answer prints as it is written."
Local = Callable[[], Awaitable[str]]
"""A line answered here (not by the agent), made when its turn to print comes."""


def local_answer(runtime: Runtime, text: str) -> Local | None:
    """The answer to a line the console answers itself (`/help`: the conversation commands
    of the registry); None: the line goes to the gateway (which answers `/status`, `/new`,
    `/stop` as commands, never as a turn)."""
    if text.strip() != HELP_COMMAND:
        return None

    async def show_help() -> str:
        return "\n".join([PIPED_HELP_INTRO, *runtime.gateway.commands.help_lines(), "  /help     this help"])

    return show_help


CUT_OFF_NOTES = {"stopped": "(stopped)", "merged": "(interrupted: see the answer below)"}
"""How an answer that stopped printing half-way ends, by the kind of its reply."""


async def chat(runtime: Runtime, user: str, stdin: TextIO = sys.stdin, out: TextIO = sys.stdout) -> int:
    interactive = stdin.isatty()
    if interactive:
        out.write(f"chatlane console as {user!r} (agent {runtime.gateway.router.default}); Ctrl-D quits\n")
        out.write("you> ")
        out.flush()
    answers: asyncio.Queue[FutureResponder | Local | None] = asyncio.Queue()
    printer = asyncio.create_task(_print_answers(answers, out, interactive), name="console printer")
    unanswered = 0
    try:
        async for raw in _lines(stdin):
            text = raw.rstrip("\r\n")
            if (local := local_answer(runtime, text)) is not None:
                answers.put_nowait(local)
            elif text.strip():
                answers.put_nowait(await _say(runtime, user, text))
            elif interactive:
                out.write("you> ")
                out.flush()
        answers.put_nowait(None)
        unanswered = await printer
    finally:
        printer.cancel()
        await asyncio.gather(printer, return_exceptions=True)
    if interactive:
        out.write("\n")
    return 1 if unanswered else 0  # scripts can tell that a message was not answered


async def _print_answers(
    answers: asyncio.Queue[FutureResponder | Local | None], out: TextIO, prompt: bool
) -> int:
    """Print each message's answer, in the order the messages were sent, as it streams;
    how many messages were not answered."""
    unanswered = 0
    while (responder := await answers.get()) is not None:
        if not isinstance(responder, FutureResponder):  # answered here: /help, /status
            out.write(await responder() + "\n")
            if prompt:
                out.write("you> ")
            out.flush()
            continue
        deltas = responder.deltas
        shown = ""
        while deltas is not None and (piece := await deltas.get()) is not None:
            out.write(piece)
            out.flush()
            shown += piece
        reply = await responder.reply
        unanswered += reply.kind not in ANSWERED
        if not shown:
            if reply.text:  # an empty `limited` reply: already told to slow down
                out.write(f"{reply.text}\n")
        elif reply.kind == "answer" and reply.text == shown:
            out.write("\n")
        else:  # cut off (stopped, interrupted) or failed after it began
            out.write(f"\n{CUT_OFF_NOTES.get(reply.kind, reply.text)}\n")
        if prompt:
            out.write("you> ")
        out.flush()
    return unanswered


ANSWERED = ("answer", "merged", "notice", "stopped")
"""Reply kinds that answer a message (the rest: failed, dropped, refused, shutting down)."""


def inbound_for(user: str, text: str) -> Inbound:
    """One line typed by `user`, as the gateway takes it.

    Not gated by core/access.py: the console is the local user at this machine's
    terminal, with no platform allowlists or mentions to judge.
    """
    return Inbound(
        platform=PLATFORM,
        user=user,
        channel="local",
        text=text,
        message_id=f"console-{os.getpid()}-{next(_ids)}",
        is_direct=True,
        mentioned_bot=True,
        display_name=user,
    )


def target_of(inbound: Inbound) -> ReplyTarget:
    """Where a console line's answer goes: the console of whichever process answers it."""
    return ReplyTarget(PLATFORM, inbound.channel, None, inbound.message_id)


LATE_ANSWER_NOTE = "(the answer to a message sent before a restart)"


class LateAnswer(QuietResponder):
    """Prints the answer to a line an earlier console process took (see the module doc)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    async def send(self, reply: Reply) -> None:
        if reply.text:
            self.out.write(f"{LATE_ANSWER_NOTE}\n{reply.text}\n")
            self.out.flush()


def register_targets(runtime: Runtime, out: TextIO) -> None:
    """Answer resumed console lines on `out` (undone by `targets.unregister(PLATFORM)`)."""
    runtime.gateway.targets.register(PLATFORM, lambda target: LateAnswer(out))


async def _say(runtime: Runtime, user: str, text: str) -> FutureResponder:
    """Hand one line to the gateway as `user`; its responder streams the answer."""
    responder = FutureResponder()
    responder.stream()
    inbound = inbound_for(user, text)
    await runtime.gateway.submit(inbound, responder, target=target_of(inbound))
    return responder


class ConsoleService:
    """The console as one of `chatlane run`'s bots (`[console] enabled = true`)."""

    name = "console"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._task: asyncio.Task[int] | None = None

    async def start(self) -> None:
        user = self.runtime.loaded.section(ConsoleSettings).user
        register_targets(self.runtime, sys.stdout)
        self._task = asyncio.create_task(chat(self.runtime, user), name="console")

    async def stop(self) -> None:
        self.runtime.gateway.targets.unregister(PLATFORM)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def describe(self) -> str:
        return f"stdin as user {self.runtime.loaded.section(ConsoleSettings).user!r}"


def create(runtime: Runtime) -> ConsoleService:
    return ConsoleService(runtime)
