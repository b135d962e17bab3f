"""Where fetches may go (issue 29): IPv4 carried in IPv6, hosts, origins, bad URLs."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from bots.testing.server import serve_on_loopback
from core.config import AttachmentSettings
from core.model.messages import FileUnavailable
from core.turn.attachments import UrlSource, read_files
from core.turn.fetch import BAD_URL, NOT_ALLOWED_HOST, fetch_url, is_public
from tests.fakes.files import png


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("64:ff9b::7f00:1", False),  # NAT64 of 127.0.0.1
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 of 169.254.169.254 (cloud metadata)
        ("64:ff9b::a00:1", False),  # NAT64 of 10.0.0.1
        ("64:ff9b::5db8:d822", True),  # NAT64 of 93.184.216.34
        ("64:ff9b:1::5db8:d822", False),  # local-use NAT64: a network's own
        ("2002:7f00:1::1", False),  # 6to4 of 127.0.0.1
        ("2002:a9fe:a9fe::", False),  # 6to4 of 169.254.169.254
        ("::127.0.0.1", False),  # IPv4-compatible
        ("::a00:1", False),
        ("::ffff:10.0.0.1", False),  # IPv4-mapped
        ("::ffff:93.184.216.34", True),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", False),  # Teredo, client 127.0.0.1
    ],
)
def test_an_ipv6_address_carrying_an_ipv4_one_is_judged_by_it(address: str, public: bool) -> None:
    assert is_public(address) is public


_V4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)


@given(v4=_V4)
def test_no_embedding_makes_a_private_ipv4_address_public(v4: ipaddress.IPv4Address) -> None:
    """NAT64, 6to4, IPv4-compatible and mapped forms of an address are never more public
    than the address itself."""
    n = int(v4)
    forms = [
        (0x0064_FF9B << 96) | n,  # 64:ff9b::/96
        (0x2002 << 112) | (n << 80),  # 2002:WWXX:YYZZ::/48
        n,  # ::a.b.c.d
        (0xFFFF << 32) | n,  # ::ffff:a.b.c.d
    ]
    for form in forms:
        v6 = str(ipaddress.IPv6Address(form))
        if not is_public(str(v4)):
            assert not is_public(v6), (str(v4), v6)


@pytest.mark.parametrize(
    "url", ["http://exa\\mple.com/x", "http://[::1/x", "http://example.com:99999/x", "https://a\\@b/"]
)
async def test_an_invalid_url_is_file_unavailable_not_a_traceback(url: str) -> None:
    with pytest.raises(FileUnavailable, match=re.escape(BAD_URL)):
        await UrlSource("x", url, public_only=True).fetch(100)
    intake = await read_files([UrlSource("notes.txt", url)], AttachmentSettings())
    assert intake.problems == [f"I couldn't read notes.txt: {BAD_URL}"]


@given(tail=st.text(max_size=40))
async def test_any_url_text_is_read_or_refused_never_a_crash(tail: str) -> None:
    """Whatever follows `http://`, a fetch limited to a host that is not there ends in
    `FileUnavailable` (never ValueError or another crash), before any connection."""
    with pytest.raises(FileUnavailable):
        await fetch_url(f"http://{tail}", max_bytes=10, hosts=frozenset({"nowhere.invalid"}))


@pytest.fixture
async def two_servers() -> AsyncIterator[tuple[str, str, list[web.Request]]]:
    """Two loopback servers (two ports) that record requests; `/to-other` on the first
    redirects to the second, `/to-localhost` to the first by another name."""
    seen: list[web.Request] = []
    ports: list[int] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(request)
        if request.path == "/to-other":
            raise web.HTTPFound(f"http://127.0.0.1:{ports[1]}/landing")
        if request.path == "/to-localhost":
            raise web.HTTPFound(f"http://localhost:{ports[0]}/landing")
        return web.Response(body=png())

    runners = []
    for _ in range(2):
        app = web.Application()
        app.router.add_get("/{tail:.*}", handler)
        runner, port = await serve_on_loopback(app)
        runners.append(runner)
        ports.append(port)
    yield f"http://127.0.0.1:{ports[0]}", f"http://127.0.0.1:{ports[1]}", seen
    for runner in runners:
        await runner.cleanup()


async def test_credentials_never_follow_a_redirect_to_another_port_of_the_same_host(
    two_servers: tuple[str, str, list[web.Request]],
) -> None:
    first, _, seen = two_servers
    data = await fetch_url(f"{first}/to-other", max_bytes=1 << 20, headers={"Authorization": "Bearer secret"})
    assert data == png()
    assert [r.headers.get("Authorization") for r in seen] == ["Bearer secret", None]


async def test_a_redirect_off_the_allowed_hosts_is_refused_unfetched(
    two_servers: tuple[str, str, list[web.Request]],
) -> None:
    first, _, seen = two_servers
    with pytest.raises(FileUnavailable, match=re.escape(NOT_ALLOWED_HOST)):
        await fetch_url(f"{first}/to-localhost", max_bytes=1 << 20, hosts=frozenset({"127.0.0.1"}))
    assert [r.path for r in seen] == ["/to-localhost"]
    with pytest.raises(FileUnavailable, match=re.escape(NOT_ALLOWED_HOST)):
        await fetch_url(f"{first}/x.png", max_bytes=1 << 20, hosts=frozenset({"cdn.discordapp.com"}))
    assert len(seen) == 1
