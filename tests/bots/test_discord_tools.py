"""Tools on Discord (real discord.py against the fake): one status line edited in the
streamed answer, and an approval asked with buttons whose click decides it."""

from __future__ import annotations

from pathlib import Path

from bots.testing import eventually
from bots.testing.fake_discord import FakeDiscord
from bots.testing.fake_llm import FakeLLM, tool_then_answer
from bots.testing.mcp_server import meaning
from core.turn import approval_action
from tests.support.discord import StartBot
from tests.support.tools import counted, tool_agent

STREAMING = "stream_edit_interval_s = 0.2\nstream_first_post_s = 0\n"


async def test_a_tool_answer_shows_one_status_line_edited_in_place(
    start_bot: StartBot, fake: FakeDiscord, tmp_path: Path
) -> None:
    calls = tmp_path / "calls"
    async with FakeLLM(reply=tool_then_answer("lookup", lambda t: {"word": t.split()[-1]})) as llm:
        await start_bot(STREAMING, agent=tool_agent(llm, calls))
        await fake.send_message("look up melon", mention=True)
        await eventually(
            lambda: any(meaning("melon") in s for s in fake.shown_in(fake.channel_id)), timeout=20
        )
    [answer] = fake.sent_to(fake.channel_id)  # one message, never one per tool call
    shown = [answer["request"]["content"]] + [e.json["content"] for e in fake.edits_of(answer["id"])]
    assert any("🔧" in s for s in shown), shown  # the status line appeared
    assert "🔧" not in answer["content"] and answer["content"].startswith("using the tool:")  # and went
    assert counted(calls) == ["lookup"]


async def test_an_approval_is_asked_with_buttons_and_only_the_asker_can_decide(
    start_bot: StartBot, fake: FakeDiscord, tmp_path: Path
) -> None:
    calls = tmp_path / "calls"
    async with FakeLLM(reply=tool_then_answer("delete_file", lambda t: {"path": t.split()[-1]})) as llm:
        agent = tool_agent(llm, calls, server={"approval": ("delete_file",)})
        await start_bot(STREAMING, agent=agent)
        await fake.send_message("delete e.txt", mention=True)
        question = await eventually(
            lambda: [m for m in fake.sent_to(fake.channel_id) if fake.buttons(m)], timeout=20
        )
        approve = next(b for b in fake.buttons(question[0]) if b.startswith(approval_action("approved", "")))
        await fake.click(question[0], approve, user=fake.bob_id)
        refused = await eventually(lambda: fake.callbacks(), timeout=10)
        assert refused[0].json["type"] == 4 and refused[0].json["data"]["flags"] & 64  # ephemeral "not yours"
        assert counted(calls) == []
        await fake.click(question[0], approve, user=fake.alice_id)
        await eventually(
            lambda: any("deleted e.txt" in s for s in fake.shown_in(fake.channel_id)), timeout=20
        )
    decided = [c for c in fake.callbacks() if c.json["type"] == 7]
    assert len(decided) == 1 and f"<@{fake.alice_id}>" in decided[0].json["data"]["content"]
    assert question[0]["components"] == []  # buttons gone
    assert "approved" in question[0]["content"]
    assert counted(calls) == ["delete_file"]
