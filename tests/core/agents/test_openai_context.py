"""What the OpenAI agent shows a model of backfilled messages and attachments (no network)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from bots.testing.files import log_text, png
from core.agents.base import TurnInput
from core.agents.openai import BACKFILL_INTRO, OpenAIAgent
from core.config import AgentSettings, OpenAISettings
from core.model.keys import SessionKey
from core.model.messages import ChatMessage
from core.turn.attachments import describe

AT = datetime(2026, 12, 1, 10, 2, tzinfo=UTC).timestamp()


def agent(vision: bool) -> OpenAIAgent:
    settings = AgentSettings(backend="openai", system_prompt="", openai=OpenAISettings(vision=vision))
    return OpenAIAgent(settings, None, max_text_chars=30)


def turn(history: list[ChatMessage], new: list[ChatMessage], blobs: dict[str, bytes]) -> TurnInput:
    return TurnInput(SessionKey("agent:main:test:a:b"), "0" * 32, 1, history, new, blobs=blobs)


def test_backfill_comes_after_one_intro_with_author_and_time_and_the_bots_own_as_assistant() -> None:
    history = [
        ChatMessage("user", "ship it?", AT, "1", author="alice", backfill=True),
        ChatMessage("assistant", "after the tests", AT, "2", author="bot", backfill=True),
    ]
    shown = agent(False).messages(turn(history, [ChatMessage("user", "well?")], {}))
    assert shown == [
        {"role": "system", "content": BACKFILL_INTRO},
        {"role": "user", "content": "alice (2026-12-01 10:02 UTC): ship it?"},
        {"role": "assistant", "content": "after the tests"},
        {"role": "user", "content": "well?"},
    ]


def test_images_are_parts_only_with_vision_and_text_files_are_inline_and_truncated() -> None:
    picture, log = png(8, 4), log_text(5)
    image, text = describe("cat.png", picture), describe("app.log", log)
    assert image is not None and text is not None
    msg = ChatMessage("user", "look", attachments=(image, text))
    blobs = {image.sha256: picture, text.sha256: log}
    plain = agent(False).messages(turn([], [msg], blobs))[-1]["content"]
    assert isinstance(plain, str)
    assert plain.startswith("look\n\n[image: cat.png 8x4]\n\n--- file: app.log (text/plain, 5 lines) ---\n")
    assert "[… truncated: showing 30 of" in plain
    parts = agent(True).messages(turn([], [msg], blobs))[-1]["content"]
    assert isinstance(parts, list)
    assert parts[1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64," + base64.b64encode(picture).decode()},
    }


def test_an_attachment_whose_bytes_are_gone_is_a_placeholder() -> None:
    image = describe("old.png", png(2, 2))
    assert image is not None
    shown = agent(True).messages(turn([ChatMessage("user", "", attachments=(image,))], [], {}))
    assert shown[-1]["content"] == "[image: old.png 2x2]"
