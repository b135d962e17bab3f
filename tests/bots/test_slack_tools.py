"""Tools on Slack (real slack-bolt against the fake, Socket Mode): one status line edited
in an edited answer, Slack's task display (a plan, one card per call, condensed at the
end) in a natively streamed one, the thread's status where Slack refuses that, and an
approval asked with Block Kit buttons whose click decides it."""

from __future__ import annotations

from pathlib import Path

import pytest

from bots.testing import eventually
from bots.testing.fake_llm import FakeLLM, tool_then_answer
from bots.testing.fake_slack import GENERAL, ApiCall, Fault, Json, block_actions, buttons
from bots.testing.mcp_server import meaning
from core.conversation.lanes import STOPPED_TEXT
from core.turn import approval_action
from core.turn.streaming import USED_TOOL, USING_TOOL
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


NATIVE = {
    "early": STREAMING,  # the answer's text streams into the message tool progress opened
    "late": "stream_edit_interval_s = 0.2\nstream_first_post_s = 30\nstream_first_chars = 2000\n",
}
"""Draft settings: text shown as it comes, or only the final answer (which then arrives
before the draft's first flush)."""


def task_chunks(call: ApiCall) -> list[Json]:
    return [c for c in call.args.get("chunks") or [] if c["type"] in ("task_update", "plan_update")]


@pytest.mark.parametrize("draft", NATIVE)
async def test_native_streaming_shows_tool_progress_as_a_plan_that_ends_condensed(
    tmp_path: Path, draft: str
) -> None:
    calls = tmp_path / "calls"
    async with FakeLLM(reply=tool_then_answer("lookup", lambda t: {"word": t.split()[-1]})) as llm:
        agent = tool_agent(llm, calls)
        async with running(tmp_path, "socket", agent=agent, stream="native", slack=NATIVE[draft]) as bot:
            await bot.deliver(mention("look up lemon"))
            said = meaning("lemon")
            await eventually(lambda: any(said in s for s in bot.fake.shown(GENERAL)), timeout=20)
            fake = bot.fake
            [answer] = await eventually(lambda: [m for m in fake.messages if not m.streaming], timeout=10)
    assert answer.text.startswith("using the tool:") and "🔧" not in answer.text  # the answer, intact
    assert not fake.calls_of("chat.postMessage") and not fake.calls_of("chat.update")  # one message
    [start] = fake.calls_of("chat.startStream")
    assert start.error is None and start.args["task_display_mode"] == "plan"
    plan, card = task_chunks(start)  # opened by the tool call, before any text
    assert plan == {"type": "plan_update", "title": USING_TOOL.format(tool="lookup")}
    assert card["title"] == "lookup" and card["status"] == "in_progress" and "lemon" in card["details"]
    updates = [c for call in fake.ok_calls("chat.appendStream") for c in task_chunks(call)]
    assert {"type": "plan_update", "title": USED_TOOL.format(tools="lookup")} in updates
    assert [u["status"] for u in updates if u["type"] == "task_update"] == ["complete"]
    # Final: one card (the same id, updated in place), complete, under the condensed title.
    assert answer.plan_title == USED_TOOL.format(tools="lookup")
    assert [(t["id"], t["status"]) for t in answer.tasks.values()] == [(card["id"], "complete")]
    assert len(fake.ok_calls("chat.stopStream")) == 1
    assert counted(calls) == ["lookup"]


async def test_refused_task_updates_fall_back_to_the_thread_status_for_that_channel(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    async with FakeLLM(reply=tool_then_answer("lookup", lambda t: {"word": t.split()[-1]})) as llm:
        agent = tool_agent(llm, calls)
        async with running(tmp_path, "socket", agent=agent, stream="native", slack=STREAMING) as bot:
            fake = bot.fake
            fake.task_refusal = "invalid_arguments"

            async def ask(word: str, n: int) -> None:
                await bot.deliver(mention(f"look up {word}"))
                await eventually(lambda: any(meaning(word) in s for s in fake.shown(GENERAL)), timeout=20)
                await eventually(lambda: len(fake.ok_calls("chat.stopStream")) == n, timeout=10)
                await eventually(lambda: len(fake.calls_of("assistant.threads.setStatus")) == 3 * n)

            await ask("lemon", 1)
            await ask("melon", 2)
    shown = fake.shown(GENERAL)
    assert len(shown) == 2 and all(s.startswith("using the tool:") and "🔧" not in s for s in shown)
    refused = [c for c in fake.calls if task_chunks(c)]
    assert [c.error for c in refused] == ["invalid_arguments"], "refused once, remembered for the channel"
    statuses = [c.args["status"] for c in fake.ok_calls("assistant.threads.setStatus")]
    line = [USING_TOOL.format(tool="lookup"), USED_TOOL.format(tools="lookup"), ""]
    assert statuses == line + line  # shown while the tool ran, cleared with the answer
    assert not fake.calls_of("chat.postMessage") and not fake.calls_of("chat.update")
    assert counted(calls) == ["lookup", "lookup"]


async def test_a_refused_thread_status_loses_nothing_of_the_answer(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    async with FakeLLM(reply=tool_then_answer("lookup", lambda t: {"word": t.split()[-1]})) as llm:
        agent = tool_agent(llm, calls)
        async with running(tmp_path, "socket", agent=agent, stream="native", slack=STREAMING) as bot:
            fake = bot.fake
            fake.task_refusal = "not_allowed"
            fake.fail(Fault("assistant.threads.setStatus", "not_allowed", times=100))
            await bot.deliver(mention("look up lemon"))
            await eventually(lambda: any(meaning("lemon") in s for s in fake.shown(GENERAL)), timeout=20)
            await eventually(lambda: fake.ok_calls("chat.stopStream"), timeout=10)
    [answer] = fake.shown(GENERAL)
    assert answer.startswith("using the tool:")
    assert len(fake.calls_of("assistant.threads.setStatus")) == 1, "refused once, not tried again"
    [start] = fake.ok_calls("chat.startStream")
    assert not task_chunks(start)  # the answer streamed natively all the same


async def test_a_stop_while_a_tool_runs_closes_its_card_as_failed(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    async with FakeLLM(reply=tool_then_answer("hang", lambda t: {})) as llm:
        agent = tool_agent(llm, calls)
        async with running(tmp_path, "socket", agent=agent, stream="native", slack=STREAMING) as bot:
            fake = bot.fake
            event = mention("wait for it")
            await bot.deliver(event)
            [progress] = await eventually(lambda: [m for m in fake.messages if m.tasks], timeout=20)
            assert [t["status"] for t in progress.tasks.values()] == ["in_progress"]
            await bot.deliver(mention("/stop", thread_ts=event["ts"]))
            await eventually(lambda: not progress.streaming, timeout=10)
    assert [t["status"] for t in progress.tasks.values()] == ["error"]  # never left open
    assert progress.plan_title == USED_TOOL.format(tools="hang")  # condensed, not "Using…"
    assert progress.text == STOPPED_TEXT  # the stop's reply, in the message progress opened
    [confirmation] = fake.posts  # the /stop's own reply; the stop's note went into the answer
    assert confirmation.args["text"] != STOPPED_TEXT
    assert counted(calls) == ["hang"]
