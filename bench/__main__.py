"""`python -m bench NAME [--json] [--quick]`: run benchmarks, print a table, check correctness.

NAME is reserve, scale, pipeline, big, memory, backfill, deliveries, streaming, restart, tools,
waiting or all. The exit code is 1 when any benchmark's correctness checks failed (a fast wrong
answer is not a result), 2 on a usage error. With `--json` the table goes to stderr and stdout gets
one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from bench import (
    backfill,
    big,
    deliveries,
    memory,
    pipeline,
    reserve,
    restart,
    scale,
    streaming,
    tools,
    waiting,
)
from bench.common import Options
from bench.report import Report, machine, machine_line

BENCHMARKS: dict[str, Callable[[Options], Coroutine[Any, Any, Report]]] = {
    "reserve": reserve.run,
    "scale": scale.run,
    "pipeline": pipeline.run,
    "big": big.run,
    "memory": memory.run,
    "backfill": backfill.run,
    "deliveries": deliveries.run,
    "streaming": streaming.run,
    "tools": tools.run,
    "restart": restart.run,
    "waiting": waiting.run,
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument("name", choices=[*BENCHMARKS, "all"])
    p.add_argument("--json", action="store_true", help="print machine-readable results on stdout")
    p.add_argument("--quick", action="store_true", help="tiny sizes, seconds: proves the benchmark works")
    p.add_argument(
        "--runs", type=int, default=None, help="repetitions of each repeated part (default 3, quick 1)"
    )
    p.add_argument("--redis-url", default=None, help="measure this Redis too (default: start redis-server)")
    p.add_argument(
        "--workdir", type=Path, default=None, help="folder for temporary state (default: temp dir)"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    runs = args.runs if args.runs is not None else (1 if args.quick else 3)
    if runs < 1:
        print("python -m bench: --runs must be at least 1", file=sys.stderr)
        return 2
    opts = Options(quick=args.quick, runs=runs, redis_url=args.redis_url, workdir=args.workdir)
    names = list(BENCHMARKS) if args.name == "all" else [args.name]
    out = sys.stderr if args.json else sys.stdout
    before = machine()
    print(machine_line(before), file=out, flush=True)
    reports: list[Report] = []
    for name in names:
        t0 = time.perf_counter()
        report = asyncio.run(BENCHMARKS[name](opts))
        report.seconds = time.perf_counter() - t0
        reports.append(report)
        print(report.table() + "\n", file=out, flush=True)
    after = machine()
    failed = [r.name for r in reports if not r.ok]
    print(f"load average after: {after['loadavg']}", file=out)
    print("correctness: " + (f"FAILED in {', '.join(failed)}" if failed else "all checks passed"), file=out)
    if args.json:
        doc = {
            "machine": before,
            "loadavg_after": after["loadavg"],
            "options": {"quick": opts.quick, "runs": opts.runs, "redis_url": bool(opts.redis_url)},
            "ok": not failed,
            "benchmarks": [r.to_json() for r in reports],
        }
        print(json.dumps(doc, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
