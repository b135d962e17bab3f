"""What every benchmark returns: samples summarised, correctness checks, a table and JSON.

A benchmark fills a `Report` with metrics (each a list of samples: per-operation
latencies, or one figure per repeated run), the correctness checks it made, and notes
on how it measured. `Report.ok` is false when any check failed; `python -m bench`
then exits non-zero, so a fast wrong answer never passes for a result.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Literal

Better = Literal["lower", "higher"]


def percentile(samples: list[float], q: float) -> float:
    """The `q`-th percentile (0..100) by the nearest-rank method; NaN when empty."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(slots=True)
class Metric:
    """One measured quantity. `target` is the goal, compared against the median (or p99)."""

    name: str
    unit: str
    samples: list[float]
    target: float | None = None
    better: Better = "lower"
    on: Literal["median", "p99"] = "median"

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else math.nan

    @property
    def met(self) -> bool | None:
        if self.target is None or not self.samples:
            return None
        x = self.median if self.on == "median" else percentile(self.samples, 99)
        return x <= self.target if self.better == "lower" else x >= self.target

    def summary(self) -> dict[str, Any]:
        s = self.samples
        return {
            "name": self.name,
            "unit": self.unit,
            "n": len(s),
            "median": self.median,
            "p99": percentile(s, 99),
            "min": min(s) if s else math.nan,
            "max": max(s) if s else math.nan,
            "target": self.target,
            "better": self.better,
            "target_on": self.on,
            "met": self.met,
        }


@dataclass(slots=True)
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass(slots=True)
class Report:
    name: str
    metrics: list[Metric] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    seconds: float = 0.0

    def metric(
        self,
        name: str,
        unit: str,
        samples: list[float],
        target: float | None = None,
        better: Better = "lower",
        on: Literal["median", "p99"] = "median",
    ) -> Metric:
        m = Metric(name, unit, list(samples), target, better, on)
        self.metrics.append(m)
        return m

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append(Check(name, bool(ok), detail))
        return bool(ok)

    def note(self, text: str) -> None:
        self.notes.append(text)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "metrics": [_finite(m.summary()) for m in self.metrics],
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
            "notes": self.notes,
        }

    def table(self) -> str:
        rows = [("metric", "unit", "n", "median", "p99", "min", "max", "target", "")]
        for m in self.metrics:
            s = m.summary()
            target = ""
            if m.target is not None:
                bound = "<=" if m.better == "lower" else ">="
                target = f"{'p99 ' if m.on == 'p99' else ''}{bound} {_fmt(m.target)}"
            verdict = {None: "", True: "ok", False: "MISSED"}[m.met]
            rows.append(
                (
                    m.name,
                    m.unit,
                    str(s["n"]),
                    _fmt(s["median"]),
                    _fmt(s["p99"]),
                    _fmt(s["min"]),
                    _fmt(s["max"]),
                    target,
                    verdict,
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = [f"== {self.name} ({self.seconds:.1f} s) =="]
        for i, r in enumerate(rows):
            cells = [
                c.ljust(w) if j < 2 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths, strict=True))
            ]
            lines.append("  ".join(cells).rstrip())
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
        for c in self.checks:
            lines.append(
                f"check {'PASS' if c.ok else 'FAIL'}: {c.name}" + (f" ({c.detail})" if c.detail else "")
            )
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


def machine() -> dict[str, Any]:
    """Where the figures were taken; load average because these machines are shared."""
    try:
        load: list[float] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    return {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "loadavg": load,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "argv": sys.argv[1:],
    }


def machine_line(info: dict[str, Any]) -> str:
    return (
        f"machine: {info['cpu_count']} cores (os.cpu_count()), Python {info['python']} "
        f"({info['implementation']}), {info['platform']}; load average {info['loadavg']}; {info['date']}"
    )


def _fmt(x: float) -> str:
    if math.isnan(x):
        return "-"
    if x == 0:
        return "0"
    a = abs(x)
    if a >= 1000:
        return f"{x:,.0f}"
    if a >= 100:
        return f"{x:.1f}"
    if a >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def _finite(d: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN: an empty metric's figures become null."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}
