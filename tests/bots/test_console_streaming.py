"""The console streams: `chatlane chat` prints an answer piece by piece, takes lines
while it prints, and `/stop` stops the answer in progress."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from bots.console import chat
from bots.launcher import load_config
from bots.runtime import Runtime
from bots.testing import SlowStreamAgent


class Screen(io.StringIO):
    """stdout: remembers how the text grew (one entry per flush)."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[str] = []

    def flush(self) -> None:
        self.frames.append(self.getvalue())


async def until(check: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not check():
            await asyncio.sleep(0.01)


async def run_console(
    tmp_path: Path, agent: SlowStreamAgent, script: Callable[[Screen, int], Awaitable[None]]
) -> Screen:
    config = tmp_path / "chatlane.toml"
    config.write_text('[store]\npath = "state"\n[http]\nenabled = false\n', encoding="utf-8")
    runtime = Runtime.build(load_config(config, env={}), agent=agent)
    read, write = os.pipe()
    screen = Screen()
    try:
        with os.fdopen(read, encoding="utf-8") as stdin:
            talk = asyncio.create_task(chat(runtime, "ann", stdin, screen))
            await script(screen, write)
            assert await asyncio.wait_for(talk, 10) == 0
    finally:
        await runtime.close()
    return screen


async def test_console_prints_an_answer_as_it_streams(tmp_path: Path) -> None:
    agent = SlowStreamAgent(30, 0.02)

    async def script(screen: Screen, stdin: int) -> None:
        os.write(stdin, b"hello\n")
        os.close(stdin)

    screen = await run_console(tmp_path, agent, script)
    answer = agent.text_for(1, "hello")
    assert screen.getvalue() == answer + "\n"
    growing = [f for f in screen.frames if f and f != screen.getvalue()]
    assert len(growing) >= 10 and all(answer.startswith(f) for f in growing)


async def test_console_stop_stops_the_answer_in_progress(tmp_path: Path) -> None:
    agent = SlowStreamAgent(60, 0.03)

    async def script(screen: Screen, stdin: int) -> None:
        os.write(stdin, b"hello\n")
        await until(lambda: "word5 " in screen.getvalue())
        os.write(stdin, b"/stop\n")
        os.close(stdin)

    screen = await run_console(tmp_path, agent, script)
    partial, stopped, confirmation, end = screen.getvalue().split("\n")
    assert agent.text_for(1, "hello").startswith(partial) and partial != agent.text_for(1, "hello")
    assert (stopped, confirmation, end) == ("(stopped)", "Stopped the answer in progress.", "")
