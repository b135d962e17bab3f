"""Download one file over HTTP(S) with a byte cap, for attachments.

`fetch_url` reads at most `max_bytes` (the body is streamed and cut off, so a server
that lies about its length costs no more than the cap) and follows a few redirects by
hand. With `public_only` (URLs a user handed the HTTP API), every address the URL or a
redirect resolves to must be a public one: never loopback, private, link-local or
otherwise reserved ranges, and the check happens in the resolver the connection uses,
so a DNS answer cannot change between the check and the connect. Credentials given in
`headers` go to the first host only, never to a host a redirect points at.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
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


class RefusedAddress(OSError):
    """A host resolved to an address that must not be fetched on a user's behalf."""


def is_public(address: str) -> bool:
    """Whether `address` (an IP) is a public unicast address."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
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


def _check_url(url: str, public_only: bool) -> URL:
    parsed = URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise FileUnavailable(NOT_HTTP)
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


async def fetch_url(
    url: str,
    *,
    max_bytes: int,
    headers: Mapping[str, str] | None = None,
    public_only: bool = False,
    redirects: int = MAX_REDIRECTS,
) -> bytes:
    """The body at `url`; `FileTooLarge` past `max_bytes`, `FileUnavailable` otherwise.

    The caller bounds the time (the whole download of a message has one deadline). With
    `redirects=0` a redirect is a refusal (e.g. Slack sends a login page to a token it
    does not accept, which must not be read as the file).
    """
    connector = aiohttp.TCPConnector(resolver=_PublicOnlyResolver() if public_only else None)
    async with aiohttp.ClientSession(connector=connector) as session:
        first = _check_url(url, public_only)
        current = first
        for _ in range(redirects + 1):
            send: dict[str, Any] = dict(headers or {}) if current.host == first.host else {}
            try:
                async with session.get(current, headers=send, allow_redirects=False) as resp:
                    if resp.status in (301, 302, 303, 307, 308) and "Location" in resp.headers:
                        current = _check_url(urljoin(str(current), resp.headers["Location"]), public_only)
                        continue
                    if resp.status in (401, 403):
                        raise FileUnavailable(REFUSED_DOWNLOAD)
                    if resp.status != 200:
                        raise FileUnavailable(f"{FAILED_DOWNLOAD} (HTTP {resp.status})")
                    if resp.content_length is not None and resp.content_length > max_bytes:
                        raise FileTooLarge()
                    body = bytearray()
                    async for chunk in resp.content.iter_chunked(_CHUNK):
                        body += chunk
                        if len(body) > max_bytes:
                            raise FileTooLarge()
                    return bytes(body)
            except aiohttp.ClientConnectorError as exc:
                if isinstance(exc.os_error, RefusedAddress):
                    raise FileUnavailable(REFUSED_ADDRESS) from None
                raise FileUnavailable(FAILED_DOWNLOAD) from exc
            except RefusedAddress:
                raise FileUnavailable(REFUSED_ADDRESS) from None
            except (aiohttp.ClientError, OSError) as exc:
                raise FileUnavailable(FAILED_DOWNLOAD) from exc
        raise FileUnavailable(
            REFUSED_DOWNLOAD if redirects == 0 else f"{FAILED_DOWNLOAD} (too many redirects)"
        )
