"""Correctness of an end-to-end run: one session per key, turns 1..n, memory in order.

Read twice: from the replies (the echo agent names the turn, the session and the first
thing it remembers) and from what is stored (`chatlane sessions list --json` for the
entries, the file store itself for the transcripts).
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.report import Report
from core.store.files.store import FileStore


@dataclass(slots=True)
class Conversation:
    """What the replies say about one key."""

    sessions: set[str] = field(default_factory=set)
    by_turn: dict[int, str] = field(default_factory=dict)
    """turn number -> the text of the message that turn answered."""
    turns: int = 0


def check_replies(
    report: Report,
    label: str,
    requests: list[tuple[str, str]],
    rows: list[Any],
    *,
    ordered: bool,
    history_limit: int = 40,
) -> dict[str, Conversation]:
    """Every reply OK; per key one session and turns 1..n (in send order if `ordered`).

    Memory: the echo agent names the earliest user message it was shown. A turn sees
    the last `history_limit` transcript records, two per earlier turn (the message and
    its answer), so turn t must name the message of turn max(1, t - history_limit // 2).
    """
    window = history_limit // 2
    failed = sum(1 for r in rows if r is None or r[0] != 200)
    report.check(f"{label}: every request answered 200", failed == 0, f"{failed} of {len(rows)} failed")
    sent: dict[str, list[tuple[str, int, str, str | None]]] = defaultdict(list)
    for (key, text), row in zip(requests, rows, strict=True):
        if row is not None and row[0] == 200:
            sent[key].append((text, row[2], row[3], row[4]))
    split = misordered = forgot = 0
    out: dict[str, Conversation] = {}
    for key, replies in sent.items():
        turns = [t for _, t, _, _ in replies]
        c = out[key] = Conversation({s for _, _, s, _ in replies}, {t: text for text, t, _, _ in replies})
        c.turns = len(replies)
        split += len(c.sessions) != 1
        expected = list(range(1, len(replies) + 1))
        misordered += (turns if ordered else sorted(turns)) != expected
        forgot += sum(
            1 for _, t, _, remembered in replies if t > 1 and remembered != c.by_turn.get(max(1, t - window))
        )
    report.check(f"{label}: one session per key", split == 0, f"{split} of {len(sent)} keys split")
    report.check(
        f"{label}: turns 1..n per key" + (" in send order" if ordered else ", each once"),
        misordered == 0,
        f"{misordered} of {len(sent)} keys wrong",
    )
    report.check(
        f"{label}: every later turn remembers the earliest message in its window",
        forgot == 0,
        f"{forgot} forgot",
    )
    return out


async def check_store(
    report: Report,
    label: str,
    expected: dict[str, Conversation],
    listed: list[dict[str, Any]],
    state_dir: Path,
    transcript_sample: int,
) -> None:
    """The stored entries and transcripts agree with the replies."""
    rows = {r["key"]: r for r in listed}
    report.check(
        f"{label}: `chatlane sessions list` shows exactly one session per key",
        len(listed) == len(rows) == len(expected) and rows.keys() == expected.keys(),
        f"listed={len(listed)}, keys expected={len(expected)}",
    )
    wrong = 0
    for key, c in expected.items():
        row = rows.get(key)
        wrong += row is None or {row["sessionId"][:8]} != c.sessions or row["turns"] != c.turns
    report.check(
        f"{label}: stored session id and turn count match the replies", wrong == 0, f"{wrong} keys differ"
    )
    keys = sorted(k for k in expected if k in rows)
    sample = keys if len(keys) <= transcript_sample else random.Random(7).sample(keys, transcript_sample)
    store = FileStore(state_dir, workers=4)
    bad = 0
    try:
        for key in sample:
            c = expected[key]
            records = await store.tail(rows[key]["sessionId"], 2 * c.turns + 10)
            users = [r.content for r in records if r.role == "user"]
            answers = [r for r in records if r.role == "assistant"]
            bad += users != [c.by_turn.get(t) for t in range(1, c.turns + 1)] or len(answers) != c.turns
    finally:
        await store.close()
    report.check(
        f"{label}: transcripts hold each key's messages in turn order ({len(sample)} keys read)",
        bad == 0,
        f"{bad} wrong",
    )
