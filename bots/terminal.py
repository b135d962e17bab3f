"""`chatlane chat` on a terminal: a readline prompt in front of the gateway.

`input()` gives line editing and history only in the main thread, and only the main
thread receives Ctrl-C; so the prompt runs there, and the runtime runs on an event loop
in a worker thread. Messages and answers cross between them through thread-safe calls
and a queue.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import signal
import sys
import threading
from collections.abc import Coroutine
from typing import Any, TextIO, TypeVar

from bots import eventloop
from bots.console import ANSWERED, inbound_for, register_targets, target_of
from bots.runtime import Runtime
from core.config import Loaded
from core.model import Reply, SessionKey, parse_key
from core.turn import QuietResponder

T = TypeVar("T")

PROMPT = "you> "
HELP_INTRO = "Type a message and press Enter; the answer appears as it is written."
HELP_KEYS = """\
  /help     this help
  Ctrl-C    clear the line; during an answer: keep waiting (twice: quit)
  Ctrl-D    quit (also /quit)"""
"""The conversation commands' lines come from core's registry, between these two."""
STILL_ANSWERING_TEXT = "\n(still answering: the answer will be shown and kept; Ctrl-C again quits)"
QUIT_MID_ANSWER_TEXT = "(quit: the answer is still being stored; `chatlane sessions show {key}` shows it)"
QUIT_COMMANDS = ("/quit", "/exit")


class _Queued(QuietResponder):
    """Pieces and the reply of one message, handed from the loop thread to the prompt."""

    def __init__(self, events: queue.Queue[str | Reply]) -> None:
        self.events = events

    async def send(self, reply: Reply) -> None:
        self.events.put(reply)

    async def on_delta(self, text: str) -> None:
        self.events.put(text)


class Terminal:
    def __init__(self, loaded: Loaded, user: str, out: TextIO = sys.stdout) -> None:
        self.loaded, self.user, self.out = loaded, user, out
        self.loop = (eventloop.loop_factory() or asyncio.new_event_loop)()
        self.thread = threading.Thread(target=self._run_loop, name="chatlane-loop", daemon=True)
        self.runtime: Runtime | None = None
        self.key = SessionKey("")

    def call(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def _run_loop(self) -> None:
        """The event loop's thread. Ctrl-C must reach the main thread: the kernel hands a
        process's SIGINT to any thread that does not block it, and one landing here would
        leave readline waiting in select() until the next key press. Threads started from
        here (to_thread) inherit the mask."""
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        self.loop.run_forever()

    def run(self) -> int:
        import readline  # noqa: F401  # input() gets line editing and history

        self.thread.start()
        try:
            self.runtime = runtime = self.call(_build(self.loaded)).result()
            register_targets(runtime, self.out)
            # The conversation's key as the gateway makes it (bindings may choose the agent).
            self.key = runtime.gateway.key_for(inbound_for(self.user, ""))
            self._say(
                f"chatlane chat as {self.user!r} with agent {parse_key(self.key).agent!r}; "
                "/help for commands, /new starts over, Ctrl-D quits"
            )
            return self._prompt_loop()
        finally:
            if self.runtime is not None:
                self.call(self.runtime.close()).result()
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join()
            self.loop.close()

    def _prompt_loop(self) -> int:
        while True:
            try:
                text = input(PROMPT).strip()
            except EOFError:
                self._say("")
                return 0
            except KeyboardInterrupt:
                self._say("^C")
                continue
            if not text:
                continue
            if text in QUIT_COMMANDS:
                return 0
            if text == "/help":
                assert self.runtime is not None
                self._say("\n".join([HELP_INTRO, *self.runtime.gateway.commands.help_lines(), HELP_KEYS]))
            else:
                try:
                    self._turn(text)
                except KeyboardInterrupt:
                    self._say(QUIT_MID_ANSWER_TEXT.format(key=self.key))
                    return 130

    def _say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def _turn(self, text: str) -> None:
        """Send one message (or a conversation command) and show its answer as it comes.

        Ctrl-C is counted by a signal handler for the whole turn rather than caught as
        KeyboardInterrupt, which could land anywhere (mid-write) and lose a piece.
        """
        assert self.runtime is not None
        events: queue.Queue[str | Reply] = queue.Queue()
        responder = _Queued(events)
        gateway = self.runtime.gateway
        presses = 0

        def on_ctrl_c(signum: int, frame: object) -> None:
            nonlocal presses
            presses += 1

        previous = signal.signal(signal.SIGINT, on_ctrl_c)
        try:
            # A command goes to the gateway's registry directly, so it skips `[limits]` here.
            if (found := gateway.commands.find(self.key, text)) is not None:
                command, arg = found
                self.call(gateway.command(self.key, command.name, arg, responder)).result()
            else:
                inbound = inbound_for(self.user, text)
                self.call(gateway.submit(inbound, responder, target=target_of(inbound))).result()
            streamed = warned = False
            while True:
                if presses >= 2:
                    raise KeyboardInterrupt
                if presses == 1 and not warned:
                    warned = True
                    self._say(STILL_ANSWERING_TEXT)
                try:
                    event = events.get(timeout=0.1)
                except queue.Empty:
                    continue
                if isinstance(event, str):
                    self.out.write(event)
                    self.out.flush()
                    streamed = True
                    continue
                if streamed:
                    self._say("")
                if not (streamed and event.kind == "answer"):
                    self._say(event.text if event.kind in ANSWERED else f"(not answered) {event.text}")
                return
        finally:
            signal.signal(signal.SIGINT, previous)


async def _build(loaded: Loaded) -> Runtime:
    return Runtime.build(loaded)


def interactive(loaded: Loaded, user: str) -> int:
    with contextlib.suppress(BrokenPipeError):
        return Terminal(loaded, user).run()
    return 1
