"""stub."""

from __future__ import annotations

from bench.common import Options
from bench.report import Report


async def run(opts: Options) -> Report:
    return Report("memory")
