"""The HTTP API's content parts: images and files in the last user message, via the openai client."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp import web

from bots.testing.fake_llm import FakeLLM
from bots.testing.files import log_text, png
from bots.testing.server import serve_on_loopback
from tests.support.http import serve

BIG_BODIES = "max_body_bytes = 4194304"


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def image_part(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def text_part(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def user(*parts: dict[str, Any]) -> list[Any]:
    return [{"role": "user", "content": list(parts)}]


@pytest.fixture
async def local_image() -> AsyncIterator[tuple[str, list[str]]]:
    """An image served on 127.0.0.1: what a request must not make the server fetch."""
    hits: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(body=png())

    app = web.Application()
    app.router.add_get("/{name}", handler)
    runner, port = await serve_on_loopback(app)
    yield f"http://127.0.0.1:{port}/cat.png", hits
    await runner.cleanup()


async def test_a_data_url_image_and_a_file_part_reach_the_echo_agent(tmp_path: Path) -> None:
    log = {"type": "file", "file": {"filename": "log.txt", "file_data": data_url(log_text(), "text/plain")}}
    async with serve(tmp_path, http=BIG_BODIES) as served, served.client() as client:
        answer = await client.chat.completions.create(
            model="main", user="ann", messages=user(text_part("look"), image_part(data_url(png())), log)
        )
        assert str(answer.choices[0].message.content).startswith(
            "echo: look [image: image 1 640x480] [file: log.txt, 1,204 lines]\n"
        )
        [stored] = [m for m in await served.transcript("agent:main:http:ann:api") if m.role == "user"]
        assert [(a.name, a.mime) for a in stored.attachments] == [
            ("image 1", "image/png"),
            ("log.txt", "text/plain"),
        ]


async def test_an_image_url_to_loopback_is_refused_and_never_fetched(
    tmp_path: Path, local_image: tuple[str, list[str]]
) -> None:
    url, hits = local_image
    async with serve(tmp_path) as served, served.client() as client:
        answer = await client.chat.completions.create(
            model="main", messages=user(text_part("what is it?"), image_part(url))
        )
        text = str(answer.choices[0].message.content)
        refused = "I couldn't read cat.png: links to local or private addresses are not fetched"
        assert text.startswith(f"{refused}\n\necho: what is it?\n")
        assert hits == []


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/cat.png", "javascript:alert(1)"])
async def test_an_image_url_that_is_not_http_is_a_400(tmp_path: Path, url: str) -> None:
    async with serve(tmp_path) as served, served.client() as client:
        with pytest.raises(openai.BadRequestError, match="data: URL or an http"):
            await client.chat.completions.create(model="main", messages=user(image_part(url)))
        assert await served.entries() == []


async def test_an_image_reaches_a_vision_model_behind_the_api_as_an_image_part(tmp_path: Path) -> None:
    picture = png(100, 50)
    async with FakeLLM() as llm:
        agent = f'backend = "openai"\n[agent.openai]\nbase_url = "{llm.base_url}"\nvision = true'
        async with serve(tmp_path, agent_toml=agent, http=BIG_BODIES) as served, served.client() as client:
            await client.chat.completions.create(
                model="main", messages=user(text_part("hm?"), image_part(data_url(picture)))
            )
        assert llm.calls[0].messages[-1]["content"] == [
            {"type": "text", "text": "hm?"},
            {"type": "image_url", "image_url": {"url": data_url(picture)}},
        ]
