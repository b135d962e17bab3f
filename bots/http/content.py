"""OpenAI content parts of the last user message -> text and files for the gateway.

    "content": "plain text"
    "content": [{"type": "text", "text": "..."},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                {"type": "file", "file": {"filename": "log.txt", "file_data": "<base64 or data URL>"}}]

Data URLs are decoded here (the bytes are then typed by sniffing, never by the URL's
claimed type). An http(s) URL is fetched during the turn under the `[attachments]` caps,
and only from public addresses: never loopback, private or link-local ranges, checked
for every address the name resolves to and every redirect (core/fetch.py); any other
scheme (file://, ftp://...) is refused here with a 400.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any
from urllib.parse import unquote, urlsplit

from core.model import FileSource
from core.turn import BytesSource, UrlSource

_DATA_URL = re.compile(
    r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[^;,]*)*)(?P<b64>;base64)?,", re.I
)


class ContentError(ValueError):
    """A malformed content part; `code` is the OpenAI-style error code."""

    def __init__(self, message: str, code: str = "invalid_content") -> None:
        super().__init__(message)
        self.code = code


def read_content(content: Any) -> tuple[str, tuple[FileSource, ...]]:
    """The text of a user message and its files; `ContentError` if it is malformed."""
    if isinstance(content, str):
        return content, ()
    if not isinstance(content, list):
        raise ContentError(
            "a user message's 'content' must be a string or an array of content parts", "invalid_type"
        )
    texts: list[str] = []
    files: list[FileSource] = []
    for part in content:
        if not isinstance(part, dict):
            raise ContentError("each content part must be an object with a 'type'")
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url":
            files.append(_image(part.get("image_url"), len(files) + 1))
        elif kind == "file":
            files.append(_file(part.get("file"), len(files) + 1))
        else:
            raise ContentError("content parts must be 'text', 'image_url' or 'file'")
    return "\n".join(texts), tuple(files)


def _image(spec: Any, n: int) -> FileSource:
    url = spec.get("url") if isinstance(spec, dict) else spec
    if not isinstance(url, str):
        raise ContentError("'image_url' must be an object with a 'url'")
    if url[:5].lower() == "data:":
        return BytesSource(f"image {n}", _decode_data_url(url))
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ContentError("'image_url.url' must be a data: URL or an http(s) URL")
    name = unquote(parts.path.rsplit("/", 1)[-1]) or f"image {n}"
    return UrlSource(name, url, public_only=True)


def _file(spec: Any, n: int) -> FileSource:
    if not isinstance(spec, dict) or not isinstance(spec.get("file_data"), str):
        raise ContentError("a 'file' part needs 'file.file_data' (base64 or a data: URL)")
    data = spec["file_data"]
    given = spec.get("filename")
    name = given if isinstance(given, str) and given else f"file {n}"
    if data[:5].lower() == "data:":
        return BytesSource(name, _decode_data_url(data))
    return BytesSource(name, _b64(data))


def _decode_data_url(url: str) -> bytes:
    m = _DATA_URL.match(url)
    if m is None:
        raise ContentError("malformed data: URL")
    payload = url[m.end() :]
    if m.group("b64"):
        return _b64(payload)
    return unquote(payload).encode("utf-8")


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ContentError("file data is not valid base64") from None
