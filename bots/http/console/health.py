"""The console's health facts: errors of the last hour (a bounded ring filled by a
logging handler), turns per minute and p95 latency (from the runner's `TurnWatchers`),
drawn as a small SVG on the server (no chart library, no script).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from bots.http.console import queue
from bots.http.console.pages import esc, when
from bots.runtime import Runtime
from core.model import SessionKey
from core.turn import FinishedTurn, TurnWatchers

HOUR_S = 3600
CHECK_S = 2.0
"""A part that does not answer its check within this long is shown as not answering."""
PROBE_KEY = "agent:main:console:probe:health"
ERROR_RING = 200
"""Error lines kept; older ones drop off (the log keeps them all)."""


@dataclass(frozen=True, slots=True)
class ErrorLine:
    at: float
    logger: str
    line: str


class ErrorRing(logging.Handler):
    """Keeps the last `ERROR_RING` records at ERROR and above, one line each (no traceback:
    the page shows what the log's first line says; the log has the rest)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: deque[ErrorLine] = deque(maxlen=ERROR_RING)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage().splitlines()[0] if record.getMessage() else ""
        except Exception:  # a bad format string must not break logging
            text = str(record.msg)
        self.lines.append(ErrorLine(record.created, record.name, text[:500]))

    def last_hour(self, now: float | None = None) -> list[ErrorLine]:
        since = (now or time.time()) - HOUR_S
        return [e for e in self.lines if e.at >= since]


def per_minute(turns: Sequence[FinishedTurn], now: float) -> list[tuple[int, float]]:
    """(turns, p95 latency s) for each of the last 60 minutes, oldest first."""
    buckets: list[list[float]] = [[] for _ in range(60)]
    for t in turns:
        age = now - t.at
        if 0 <= age < HOUR_S:
            buckets[59 - int(age // 60)].append(t.latency_s)
    return [(len(b), p95(b)) for b in buckets]


def p95(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def chart(points: list[tuple[int, float]]) -> str:
    """Bars: turns per minute; line: p95 latency; both scaled to their own maximum."""
    w, h, pad = 600, 160, 20
    top_n = max((n for n, _ in points), default=0) or 1
    top_l = max((lat for _, lat in points), default=0.0) or 1.0
    step = (w - 2 * pad) / len(points)
    bars, line = [], []
    for i, (n, lat) in enumerate(points):
        x = pad + i * step
        bh = (h - 2 * pad) * n / top_n
        if n:
            bars.append(
                f'<rect x="{x:.1f}" y="{h - pad - bh:.1f}" width="{step * 0.8:.1f}" height="{bh:.1f}"/>'
            )
        line.append(f"{x + step * 0.4:.1f},{h - pad - (h - 2 * pad) * lat / top_l:.1f}")
    total = sum(n for n, _ in points)
    return (
        f'<svg class="chart" viewBox="0 0 {w} {h}" role="img" aria-labelledby="chart-t">'
        f'<title id="chart-t">Turns per minute (bars, max {top_n}) and p95 latency (line, max '
        f"{top_l:.2f} s) over the last hour; {total} turns</title>"
        f'<g class="bars">{"".join(bars)}</g>'
        f'<polyline class="p95" fill="none" points="{" ".join(line)}"/>'
        f'<text x="{pad}" y="14">max {top_n}/min, p95 max {top_l:.2f} s</text>'
        f'<text x="{pad}" y="{h - 4}">60 min ago</text><text x="{w - pad - 30}" y="{h - 4}">now</text></svg>'
    )


def errors_table(lines: list[ErrorLine]) -> str:
    if not lines:
        return '<p class="empty">No errors logged in the last hour.</p>'
    rows = "".join(
        f"<tr><td>{when(e.at)}</td><td><code>{esc(e.logger)}</code></td><td>{esc(e.line)}</td></tr>"
        for e in reversed(lines)
    )
    return (
        '<table><thead><tr><th scope="col">When</th><th scope="col">Where</th>'
        f'<th scope="col">Log line</th></tr></thead><tbody>{rows}</tbody></table>'
    )


async def render(runtime: Runtime, errors: ErrorRing, watchers: TurnWatchers) -> str:
    """The health page's body."""
    rows = []
    for service in runtime.services:
        check = getattr(service, "ready", None)
        if check is None:
            state = "running (it has no connection check)"
        else:
            try:
                async with asyncio.timeout(CHECK_S):
                    why = await check()
                state = "connected" if why is None else f"not ready: {why}"
            except TimeoutError:
                state = f"no answer within {CHECK_S:g} s"
        rows.append(f"<tr><th scope='row'>{esc(service.name)}</th><td>{esc(state)}</td></tr>")
    store = await store_state(runtime)
    backend = runtime.loaded.config.store.backend
    rows.append(f"<tr><th scope='row'>store ({esc(backend)})</th><td>{esc(store)}</td></tr>")
    inbox = await queue.depth(runtime.store)
    rows.append(f"<tr><th scope='row'>inbox</th><td>{esc(inbox)}</td></tr>")
    lanes = runtime.gateway.lanes
    rows.append(
        f"<tr><th scope='row'>queued here</th><td>{lanes.depth} message(s) waiting for a turn</td></tr>"
    )
    rows.append(f"<tr><th scope='row'>answering here</th><td>{len(watchers.running)} turn(s)</td></tr>")
    now = time.time()
    return (
        '<section aria-labelledby="parts-h"><h2 id="parts-h">Parts</h2>'
        f'<table class="facts">{"".join(rows)}</table></section>'
        '<section aria-labelledby="turns-h"><h2 id="turns-h">Turns in the last hour (this process)</h2>'
        f"{chart(per_minute(list(watchers.recent), now))}</section>"
        '<section aria-labelledby="errors-h"><h2 id="errors-h">Errors in the last hour (this process)</h2>'
        f"{errors_table(errors.last_hour(now))}</section>"
    )


async def store_state(runtime: Runtime) -> str:
    """Whether the store answers a read within `CHECK_S` (the error's kind, never its
    text: a Redis URL in it may hold a password)."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(CHECK_S):
            await runtime.store.get(SessionKey(PROBE_KEY))
    except TimeoutError:
        return f"unreachable: no answer within {CHECK_S:g} s"
    except Exception as exc:
        return f"unreachable: {type(exc).__name__}"
    return f"reachable (a read took {(time.perf_counter() - started) * 1000:.1f} ms)"
