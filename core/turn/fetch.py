"""Download one file over HTTP(S) with a byte cap, for attachments.

`fetch_url` reads at most `max_bytes` (the body is streamed and cut off, so a server
that lies about its length costs no more than the cap) and follows a few redirects by
hand. With `public_only` (URLs a user handed the HTTP API), every address the URL or a
redirect resolves to must be a public one: never loopback, private, link-local or
otherwise reserved ranges, and the check happens in the resolver the connection uses,
so a DNS answer cannot change between the check and the connect. An IPv6 address that
carries an IPv4 one (mapped, compatible, NAT64, 6to4, Teredo) is judged by the IPv4 one.
With `hosts`, the URL and every redirect must be on one of those hosts (Discord's CDN).
Credentials given in `headers` go to the first URL's origin only (scheme, host and
port), never to another a redirect points at. A URL that cannot be parsed is "file
unavailable", like any other unreadable link.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urljoin

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from core.model import FileTooLarge, FileUnavailable

MAX_REDIRECTS = 3
_CHUNK = 64 * 1024

REFUSED_ADDRESS = "links to local or private addresses are not fetched"
NOT_HTTP = "only http(s) links can be read"
REFUSED_DOWNLOAD = "the download was refused"
FAILED_DOWNLOAD = "the download failed"
TOO_MANY_REDIRECTS = "the download failed (too many redirects)"
BAD_URL = "the link is not a valid URL"
NOT_ALLOWED_HOST = "the link is not on the platform's file server"


class RefusedAddress(OSError):
    """A host resolved to an address that must not be fetched on a user's behalf."""


NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
"""The well-known NAT64 prefix (RFC 6052): the last 32 bits are the IPv4 address reached."""
NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
"""Local-use NAT64 (RFC 8215): a network's own translation, never public."""
IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
"""Deprecated IPv4-compatible addresses (`::a.b.c.d`), which some stacks still route."""


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (a packet to it may reach them)."""
    found: list[ipaddress.IPv4Address] = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if ip in NAT64 or ip in IPV4_COMPATIBLE:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF))
    return found


def is_public(address: str) -> bool:
    """Whether `address` (an IP) is a public unicast address; an IPv6 address that carries
    an IPv4 one is public only if that one is too."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in NAT64_LOCAL:
            return False
        inner = embedded_ipv4(ip)
        if inner:
            return all(v4.is_global and not v4.is_multicast for v4 in inner)
    return ip.is_global and not ip.is_multicast


class _PublicOnlyResolver(AbstractResolver):
    """aiohttp's resolver, refusing any host that resolves to a non-public address."""

    def __init__(self) -> None:
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        if not found or any(not is_public(str(r["host"])) for r in found):
            raise RefusedAddress(REFUSED_ADDRESS)
        return found

    async def close(self) -> None:
        await self._inner.close()


def _check_url(url: str, public_only: bool, hosts: frozenset[str] | None = None) -> URL:
    try:
        parsed = URL(url)
        parsed.port  # noqa: B018  # raises ValueError for a port out of range
    except ValueError:
        raise FileUnavailable(BAD_URL) from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise FileUnavailable(NOT_HTTP)
    if hosts is not None and parsed.host.lower() not in hosts:
        raise FileUnavailable(NOT_ALLOWED_HOST)
    if public_only:
        host = parsed.host.strip("[]")
        try:
            ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return parsed  # a name: the resolver checks what it resolves to
        # aiohttp connects to an IP literal without asking the resolver.
        if not is_public(host):
            raise FileUnavailable(REFUSED_ADDRESS)
    return parsed


Write = Callable[[bytes], Awaitable[None]]
"""Where a streamed download's chunks go, in order (a spool file, a buffer)."""


def origin(url: URL) -> tuple[str, str, int | None]:
    """(scheme, host, port): where a credential may go. The port is the explicit or default one."""
    return (url.scheme, (url.host or "").lower(), url.port)


async def fetch_url(
    url: str,
    *,
    max_bytes: int,
    headers: Mapping[str, str] | None = None,
    public_only: bool = False,
    redirects: int = MAX_REDIRECTS,
    hosts: frozenset[str] | None = None,
) -> bytes:
    """The body at `url` in memory (small files; `stream_url` writes large ones chunk by
    chunk); same refusals as `stream_url`."""
    body = bytearray()

    async def keep(chunk: bytes) -> None:
        body.extend(chunk)

    await stream_url(
        url,
        keep,
        max_bytes=max_bytes,
        headers=headers,
        public_only=public_only,
        redirects=redirects,
        hosts=hosts,
    )
    return bytes(body)


async def stream_url(
    url: str,
    write: Write,
    *,
    max_bytes: int,
    headers: Mapping[str, str] | None = None,
    public_only: bool = False,
    redirects: int = MAX_REDIRECTS,
    hosts: frozenset[str] | None = None,
) -> int:
    """Hand the body at `url` to `write` chunk by chunk (at most 64 KiB each: memory stays
    bounded however large the file); the byte count. `FileTooLarge` past `max_bytes`
    (what was written before is the caller's to discard), `FileUnavailable` otherwise.

    The caller bounds the time (the whole download of a message has one deadline). With
    `redirects=0` a redirect is a refusal (e.g. Slack sends a login page to a token it
    does not accept, which must not be read as the file).
    """
    connector = aiohttp.TCPConnector(resolver=_PublicOnlyResolver() if public_only else None)
    async with aiohttp.ClientSession(connector=connector) as session:
        first = _check_url(url, public_only, hosts)
        current = first
        for _ in range(redirects + 1):
            same = origin(current) == origin(first)
            send: dict[str, Any] = dict(headers or {}) if same else {}
            try:
                async with session.get(current, headers=send, allow_redirects=False) as resp:
                    if resp.status in (301, 302, 303, 307, 308) and "Location" in resp.headers:
                        target = urljoin(str(current), resp.headers["Location"])
                        current = _check_url(target, public_only, hosts)
                        continue
                    if resp.status in (401, 403):
                        raise FileUnavailable(REFUSED_DOWNLOAD)
                    if resp.status != 200:
                        raise FileUnavailable(f"{FAILED_DOWNLOAD} (HTTP {resp.status})")
                    if resp.content_length is not None and resp.content_length > max_bytes:
                        raise FileTooLarge()
                    size = 0
                    async for chunk in resp.content.iter_chunked(_CHUNK):
                        size += len(chunk)
                        if size > max_bytes:
                            raise FileTooLarge()
                        await write(chunk)
                    return size
            except aiohttp.ClientConnectorError as exc:
                if isinstance(exc.os_error, RefusedAddress):
                    raise FileUnavailable(REFUSED_ADDRESS) from None
                raise FileUnavailable(FAILED_DOWNLOAD) from exc
            except RefusedAddress:
                raise FileUnavailable(REFUSED_ADDRESS) from None
            except (aiohttp.ClientError, OSError, ValueError) as exc:
                # ValueError: a URL aiohttp or yarl cannot use (found only when it is sent)
                raise FileUnavailable(FAILED_DOWNLOAD) from exc
        raise FileUnavailable(
            REFUSED_DOWNLOAD if redirects == 0 else f"{FAILED_DOWNLOAD} (too many redirects)"
        )
