"""Tools on Slack (real slack-bolt against the fake, Socket Mode): one status line edited
in the streamed answer, and an approval asked with Block Kit buttons whose click decides it."""

from __future__ import annotations

from pathlib import Path

from bots.testing import eventually
from bots.testing.fake_llm import FakeLLM, tool_then_answer
from bots.testing.fake_slack import GENERAL, block_actions, buttons
from bots.testing.mcp_server import meaning
from core.turn import approval_action
from tests.support.slack import mention, running
from tests.support.tools import counted, tool_agent

STREAMING = "stream_edit_interval_s = 0.2\nstream_first_post_s = 0\n"
OTHER = "U0OTHER"


async def test_a_tool_answer_shows_one_status_line_edited_in_place(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    async with FakeLLM(reply=tool_then_answer("lookup", lambda t: {"word": t.split()[-1]})) as llm:
        agent = tool_agent(llm, calls)
        async with running(tmp_path, "socket", agent=agent, stream="edit", slack=STREAMING) as bot:
            await bot.deliver(mention("look up lemon"))
            said = meaning("lemon")
            await eventually(lambda: any(said in s for s in bot.fake.shown(GENERAL)), timeout=20)
            fake = bot.fake
    [answer] = [m for m in fake.messages if not m.deleted]  # one message, never one per tool call
    texts = [
        str(c.args.get("text")) for c in fake.calls_of("chat.postMessage") + fake.calls_of("chat.update")
    ]
    assert any("🔧" in t for t in texts), texts
    assert "🔧" not in answer.text and answer.text.startswith("using the tool:")
    assert counted(calls) == ["lookup"]


async def test_an_approval_is_asked_with_buttons_and_only_the_asker_can_decide(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    async with FakeLLM(reply=tool_then_answer("delete_file", lambda t: {"path": t.split()[-1]})) as llm:
        agent = tool_agent(llm, calls, server={"approval": ("delete_file",)})
        async with running(tmp_path, "socket", agent=agent, stream="edit", slack=STREAMING) as bot:
            fake = bot.fake
            await bot.deliver(mention("delete f.txt"))
            [question] = await eventually(lambda: [m for m in fake.messages if buttons(m)], timeout=20)
            approve = approval_action("approved", "")
            click = next(b for b in buttons(question) if b.startswith(approve))
            await fake.push("interactive", block_actions(question, click, user=OTHER))
            [refused] = await eventually(lambda: fake.calls_of("chat.postEphemeral"), timeout=10)
            assert refused.args["user"] == OTHER and counted(calls) == []
            await fake.push("interactive", block_actions(question, click))
            await eventually(lambda: any("deleted f.txt" in s for s in fake.shown(GENERAL)), timeout=20)
            await eventually(lambda: not buttons(question), timeout=10)
    assert "approved" in question.text and "<@" in question.text
    assert counted(calls) == ["delete_file"]
