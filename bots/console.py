"""Terminal chat: `chatlane chat`. Session key `agent:<agent>:console:<user>:local`.

On a terminal it is interactive: `readline` line editing and history, the answer shown
as it is written, `/help`, `/status` and `/new` handled here (never sent to the agent),
Ctrl-C at the prompt clears the line, Ctrl-C during an answer says the answer is still
coming (and shows it), a second one quits (the answer is still stored), Ctrl-D quits.

Otherwise it reads one message per line, prints each reply, and exits after the last
reply at end of input: 0, or 1 if any message was not answered. Several such processes
with one `--user` on one store are several writers of one conversation: the store's
reservation and turn lock keep them in one session with turns that never overlap.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import sys
from collections.abc import AsyncIterator
from typing import ClassVar, TextIO

from bots.runtime import Runtime
from core.config import AdapterSettings
from core.responders import FutureResponder
from core.types import Inbound, Reply

log = logging.getLogger("chatlane.console")


class ConsoleSettings(AdapterSettings):
    """`[console]`: `chatlane run` reads stdin as one user."""

    section: ClassVar[str] = "console"
    enabled: bool = False
    user: str = "local"


_ids = itertools.count(1)


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


async def chat(runtime: Runtime, user: str, stdin: TextIO = sys.stdin, out: TextIO = sys.stdout) -> int:
    """Line by line from a pipe or file (see `interactive` for a terminal)."""
    unanswered = 0
    async for raw in _lines(stdin):
        text = raw.rstrip("\r\n")
        if text.strip():
            reply = await _say(runtime, user, text, out)
            unanswered += reply.kind not in ANSWERED
    return 1 if unanswered else 0


ANSWERED = ("answer", "merged", "notice")


def inbound_for(user: str, text: str) -> Inbound:
    """One line typed by `user`, as the gateway takes it.

    Not gated by core/access.py: the console is the local user at this machine's
    terminal, with no platform allowlists or mentions to judge.
    """
    return Inbound(
        platform="console",
        user=user,
        channel="local",
        text=text,
        message_id=f"console-{os.getpid()}-{next(_ids)}",
        is_direct=True,
        mentioned_bot=True,
        display_name=user,
    )


async def _say(runtime: Runtime, user: str, text: str, out: TextIO) -> Reply:
    responder = FutureResponder()
    await runtime.gateway.submit(inbound_for(user, text), responder)
    reply = await responder.reply
    out.write(f"{reply.text}\n")
    out.flush()
    return reply


class ConsoleService:
    """The console as one of `chatlane run`'s bots (`[console] enabled = true`)."""

    name = "console"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._task: asyncio.Task[int] | None = None

    async def start(self) -> None:
        user = self.runtime.loaded.section(ConsoleSettings).user
        self._task = asyncio.create_task(chat(self.runtime, user), name="console")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def describe(self) -> str:
        return f"stdin as user {self.runtime.loaded.section(ConsoleSettings).user!r}"


def create(runtime: Runtime) -> ConsoleService:
    return ConsoleService(runtime)
