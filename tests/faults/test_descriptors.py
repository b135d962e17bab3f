"""Descriptor exhaustion: half-open connections must not starve admitted turns.

A real `chatlane run` under RLIMIT_NOFILE 1024 (a common service default), 1,100
connections that never finish their headers, and a client that keeps talking: its turns
must all succeed, the half-open connections must be shed or timed out, and the log must
stay a few lines long (before the guard: "couldn't save this conversation", clients
timing out, and 129,622 "Too many open files" lines in 22 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from pathlib import Path

import aiohttp

from bots.testing import ChatlaneProcess, write_config
from tests.support.http import COMPLETIONS, body

LIMIT = 1024
HALF_OPEN = 1100
HEADER_TIMEOUT_S = 2.0
CLOSED_WITHIN_S = HEADER_TIMEOUT_S + 13.0
"""A connection the kernel could not queue at once (a full accept queue under the burst)
reaches the server only when its SYN-ACK is retried (1, 2, 4 s...): give those time."""


def _limit_descriptors() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))


Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _half_open(port: int, opened: list[asyncio.StreamWriter]) -> Conn | None:
    """A connection that sends part of a request's headers and then nothing (kept in
    `opened`, so the test closes it whatever happens)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return None
    opened.append(writer)
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: app")
    return reader, writer


async def _closed_by_server(reader: asyncio.StreamReader, within: float) -> str:
    """ "closed" (end of stream, after a 503 or nothing), "reset" (a refusal whose 503 the
    client's stack dropped) or "open"."""
    try:
        async with asyncio.timeout(within):
            await reader.read()  # until EOF: a 503, or nothing when timed out
    except TimeoutError:
        return "open"
    except OSError:
        return "reset"
    return "closed"


async def test_half_open_connections_under_a_1024_file_limit_do_not_starve_turns(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 8192) if hard != resource.RLIM_INFINITY else 8192
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))  # this test's own sockets
    config = write_config(tmp_path, f"header_timeout_s = {HEADER_TIMEOUT_S}\n[agent]\necho_delay_ms = 50")
    proc = await ChatlaneProcess.start(config, tmp_path / "chatlane.log", preexec_fn=_limit_descriptors)
    answered: list[int] = []
    failures: list[str] = []
    conns: list[Conn] = []
    closed: list[str] = []
    reconnects: list[int] = []
    opened: list[asyncio.StreamWriter] = []
    try:
        connector = aiohttp.TCPConnector(limit=1)  # one keep-alive connection, made before the flood
        async with aiohttp.ClientSession(connector=connector) as http:

            async def turn(i: int) -> None:
                # The guard closes a keep-alive connection idle past header_timeout_s: when this
                # loop is busy opening the flood, the next request can come later than that.
                # A client then reconnects (once; the Idempotency-Key makes the retry safe).
                headers = {"Idempotency-Key": f"steady-{i}"}
                for attempt in range(2):
                    try:
                        async with http.post(
                            proc.url + COMPLETIONS, json=body(f"m{i}", user="steady"), headers=headers
                        ) as r:
                            payload = await r.json()
                            break
                    except aiohttp.ServerDisconnectedError:
                        if attempt:
                            raise
                        reconnects.append(i)
                if r.status != 200:
                    failures.append(f"{r.status}: {payload}")
                    return
                content = payload["choices"][0]["message"]["content"]
                assert content.startswith(f"echo: m{i}") and f"turn {i + 1} " in content
                answered.append(i)

            await turn(0)
            flood = asyncio.gather(*(_half_open(proc.port, opened) for _ in range(HALF_OPEN)))
            i = 1
            while not flood.done():  # turns keep going while the flood arrives
                await turn(i)
                i += 1
            conns = [c for c in await flood if c is not None]
            started = time.monotonic()
            while time.monotonic() - started < HEADER_TIMEOUT_S * 1.5:  # ... and while it sits there
                await turn(i)
                i += 1
            closed = list(await asyncio.gather(*(_closed_by_server(r, CLOSED_WITHIN_S) for r, _ in conns)))
        async with (  # a brand-new client, after the flood
            aiohttp.ClientSession() as fresh,
            fresh.post(proc.url + COMPLETIONS, json=body("after", user="new")) as r,
        ):
            assert r.status == 200
        code = await proc.terminate()
    finally:
        for writer in opened:  # closed while this loop runs: no warnings in later tests
            writer.close()
        with contextlib.suppress(ProcessLookupError):
            await proc.kill()
    log = proc.stderr().splitlines()
    print(
        f"\nhalf-open: {HALF_OPEN} opened, {len(conns)} connected, "
        f"{closed.count('closed')} closed by the server, {closed.count('reset')} reset; "
        f"steady client: {len(answered)} turns answered, {len(failures)} failed, "
        f"{len(reconnects)} reconnected after an idle keep-alive was closed; "
        f"log: {len(log)} lines ({len(answered) + 1} of them one per turn)"
    )
    assert failures == []
    assert answered == list(range(len(answered))) and len(answered) >= 3
    assert closed.count("closed") == len(conns), (
        f"{closed.count('open')} half-open connections were never closed, "
        f"{closed.count('reset')} were reset (their 503 lost)"
    )
    assert code == 0
    assert not any("Too many open files" in line for line in log), log
    about_the_flood = [line for line in log if "chatlane.gateway: turn " not in line]  # one per turn
    assert len(about_the_flood) < 30, "\n".join(about_the_flood)
