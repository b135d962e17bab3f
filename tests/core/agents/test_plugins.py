"""Plugin agents: a `python` factory and a `chatlane.agents` entry point of a real installed
distribution; every way a factory goes wrong is a config error naming the key; a plugin
gets the built-ins' guarantees (one turn at a time, plain failures, CancelledError)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bots.testing.agents import Replies
from core.agents import PROTOCOL_VERSION, make_agents
from core.config import ConfigError, load_config
from core.door.gateway import Gateway
from core.model.messages import Inbound, Reply
from core.store.files.store import FileStore
from tests.fakes.plugin_agents import ShoutingAgent

PLUGIN = "tests.fakes.plugin_agents"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "chatlane.toml"
    path.write_text(f'[store]\npath = "state"\n{text}', encoding="utf-8")
    return path


@contextlib.asynccontextmanager
async def gateway_for(tmp_path: Path, text: str) -> AsyncIterator[Gateway]:
    loaded = load_config(write(tmp_path, text), env={})
    agents = make_agents(loaded)
    gw = Gateway(loaded.config, FileStore(loaded.state_dir), agents)
    try:
        yield gw
    finally:
        await gw.close(timeout=5)
        for agent in agents.values():
            await agent.close()
        await gw.store.close()


async def ask(gw: Gateway, text: str, n: list[int] = [0]) -> Reply:  # noqa: B006
    n[0] += 1
    inbox = Replies()
    await gw.submit(Inbound("test", "alice", "general", text, f"m{n[0]}"), inbox)
    async with asyncio.timeout(10):
        await inbox.done.wait()
    return inbox.replies[-1]


def test_the_protocol_is_versioned() -> None:
    assert PROTOCOL_VERSION == 2  # 2: stream() may yield tool events (text-only agents unchanged)


async def test_a_python_factory_gets_its_options_and_answers_with_memory(tmp_path: Path) -> None:
    toml = f'[agents.loud]\nbackend = "python"\nfactory = "{PLUGIN}:make_shouting"\n'
    toml += '[agents.loud.options]\ngreeting = "HEY"\n'
    async with gateway_for(tmp_path, toml) as gw:
        first = await ask(gw, "hello there")
        second = await ask(gw, "again")
        agent = gw.agents["loud"]
        assert isinstance(agent, ShoutingAgent) and agent.greeting == "HEY"
    assert first.kind == "answer" and first.text == "HEY HELLO THERE (turn 1, 0 earlier records)"
    assert second.text == "HEY AGAIN (turn 2, 2 earlier records)"
    assert first.session_key.startswith("agent:loud:test:")


async def test_an_entry_point_of_an_installed_package_is_a_backend_name(
    tmp_path: Path, installed_plugin: Path
) -> None:
    toml = '[agents.reg]\nbackend = "testplug"\n[agents.reg.options]\nsuffix = "!"\n'
    async with gateway_for(tmp_path, toml) as gw:
        reply = await ask(gw, "ping")
    assert reply.text == "registered agent heard: ping!"


@pytest.mark.parametrize(
    ("agent_toml", "key", "reason"),
    [
        (f'backend = "python"\nfactory = "{PLUGIN}_missing:make"', "agents.x.factory", "cannot import"),
        (f'backend = "python"\nfactory = "{PLUGIN}:no_such"', "agents.x.factory", "has no 'no_such'"),
        (f'backend = "python"\nfactory = "{PLUGIN}:make_nothing"', "agents.x.factory", "not an Agent"),
        (f'backend = "python"\nfactory = "{PLUGIN}:make_broken"', "agents.x.factory", "raised RuntimeError"),
        ('backend = "python"\nfactory = "no colon"', "agents.x", "package.module:callable"),
        ('backend = "python"', "agents.x", "needs factory"),
        ('backend = "nosuchbackend"', "agents.x.backend", "unknown backend 'nosuchbackend'"),
    ],
)
def test_a_bad_plugin_is_a_config_error_naming_the_key_and_the_reason(
    tmp_path: Path, agent_toml: str, key: str, reason: str
) -> None:
    path = write(tmp_path, f"[agents.x]\n{agent_toml}\n")
    with pytest.raises(ConfigError) as err:
        make_agents(load_config(path, env={}))
    assert err.value.key == key and reason in err.value.problem, str(err.value)
    assert str(path.resolve()) in str(err.value)


async def test_a_plugin_failure_is_the_plain_failure_message_and_the_message_is_kept(tmp_path: Path) -> None:
    toml = f'[agents.loud]\nbackend = "python"\nfactory = "{PLUGIN}:make_shouting"\n'
    toml += 'failure_message = "Could not answer."\n'
    async with gateway_for(tmp_path, toml) as gw:
        failed = await ask(gw, "fail")
        after = await ask(gw, "next")
    assert failed.kind == "failure" and failed.text == "Could not answer."
    assert after.text.endswith("(turn 2, 1 earlier records)")  # the failed message is in memory


async def test_an_interrupt_delivers_cancelled_error_into_the_plugin_stream(tmp_path: Path) -> None:
    toml = f'[agents.loud]\nbackend = "python"\nfactory = "{PLUGIN}:make_shouting"\n'
    toml += '[agents.loud.options]\nhold = true\n[queue]\nmode = "interrupt"\n'
    async with gateway_for(tmp_path, toml) as gw:
        agent = gw.agents["loud"]
        assert isinstance(agent, ShoutingAgent)
        first, second = Replies(), Replies()
        await gw.submit(Inbound("test", "alice", "general", "one", "m1"), first)
        await asyncio.wait_for(agent.started.wait(), 5)
        await gw.submit(Inbound("test", "alice", "general", "two", "m2"), second)
        async with asyncio.timeout(5):
            while agent.cancelled == 0:
                await asyncio.sleep(0.01)
        agent.release.set()
        await asyncio.wait_for(second.done.wait(), 5)
    assert agent.cancelled == 1
    assert second.replies[-1].text.startswith("HI ONE TWO")


class SlowSender(Replies):
    """A responder whose streamed sends hang (a stalled platform): the cancel lands in it,
    while the agent's stream is suspended at a `yield`."""

    def __init__(self) -> None:
        super().__init__()
        self.sending = asyncio.Event()

    async def on_delta(self, text: str) -> None:
        self.sending.set()
        await asyncio.Event().wait()


async def test_a_cancel_during_a_slow_send_is_still_thrown_into_the_plugin_stream(tmp_path: Path) -> None:
    toml = f'[agents.loud]\nbackend = "python"\nfactory = "{PLUGIN}:make_shouting"\n'
    toml += '[queue]\nmode = "interrupt"\n'
    async with gateway_for(tmp_path, toml) as gw:
        agent = gw.agents["loud"]
        assert isinstance(agent, ShoutingAgent)
        stalled, second = SlowSender(), Replies()
        await gw.submit(Inbound("test", "alice", "general", "one", "m1"), stalled)
        await asyncio.wait_for(stalled.sending.wait(), 5)
        await gw.submit(Inbound("test", "alice", "general", "two", "m2"), second)
        await asyncio.wait_for(second.done.wait(), 5)
    assert agent.cancelled == 1


async def test_turns_of_one_conversation_never_overlap_in_a_plugin(tmp_path: Path) -> None:
    toml = f'[agents.loud]\nbackend = "python"\nfactory = "{PLUGIN}:make_shouting"\n'
    async with gateway_for(tmp_path, toml) as gw:
        inboxes = [Replies() for _ in range(10)]
        for i, inbox in enumerate(inboxes):
            await gw.submit(Inbound("test", "alice", "general", f"m {i}", f"c{i}"), inbox)
        async with asyncio.timeout(10):
            for inbox in inboxes:
                await inbox.done.wait()
    turns = [int(i.replies[-1].text.split("(turn ")[1].split(",")[0]) for i in inboxes]
    assert turns == list(range(1, 11))


async def test_a_shutdown_that_cuts_a_turn_off_delivers_cancelled_error_into_the_plugin(
    tmp_path: Path,
) -> None:
    toml = f'[agents.loud]\nbackend = "python"\nfactory = "{PLUGIN}:make_shouting"\n'
    toml += "[agents.loud.options]\nhold = true\n"
    async with gateway_for(tmp_path, toml) as gw:
        agent = gw.agents["loud"]
        assert isinstance(agent, ShoutingAgent)
        inbox = Replies()
        await gw.submit(Inbound("test", "alice", "general", "one", "m1"), inbox)
        await asyncio.wait_for(agent.started.wait(), 5)
        await gw.close(timeout=0.05)  # the turn never finishes on its own: it is cut off
        await asyncio.wait_for(inbox.done.wait(), 5)
    assert agent.cancelled == 1
    assert inbox.replies[-1].kind in ("shutdown", "failure")
