"""The console's transcript view: tool calls are folded to one line, escaped like the rest."""

from __future__ import annotations

from bots.http.console.pages import transcript
from core.model import ChatMessage


def test_a_tool_call_is_folded_to_its_line_with_the_arguments_inside() -> None:
    records = [
        ChatMessage("user", "what is in the docs?", 1.0),
        ChatMessage(
            "assistant",
            "search(query='<b>docs</b>') -> 3 results",
            2.0,
            tool="<search>",
            tool_arguments='{"query": "<b>docs</b>", "token": "[redacted]"}',
        ),
        ChatMessage("assistant", "Three pages mention it.", 3.0),
    ]
    html = transcript(records, "", "")
    tool_item = html.split('<li class="msg tool">')[1].split("</li>")[0]
    assert tool_item.startswith("<details><summary>") and "</details>" in tool_item
    assert "tool &lt;search&gt;" in tool_item and "<search>" not in tool_item
    assert "&lt;b&gt;docs&lt;/b&gt;" in tool_item and "[redacted]" in tool_item
    assert html.count("<details>") == 1  # the person's and the bot's own words are not folded
