"""`chatlane sessions list | show | reset | prune`: the operator's view of the store.

Reads go to the store; anything that changes a session goes through the gateway
(`reset` and `forget` take the conversation's turn lock, in every process), so a
command run next to live bots never cuts into a turn.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from core.agents import placeholder
from core.model import InboxItem, InboxView, SessionEntry, parse_key, validate_key
from core.store import SESSION_ID
from core.turn import FutureResponder

if TYPE_CHECKING:
    from bots.runtime import Runtime

EXIT_USAGE = 2
SHOW_RECORDS = 5_000
"""`sessions show` prints the last this many records unless told (`--limit N`, `--all`)."""
ALL_RECORDS = 1 << 40
TRUNCATED_TEXT = (
    "(showing the last {shown:,} records; older ones exist: --limit N shows more, --all shows every one)"
)
WIDTH = 100
"""`sessions list` rows fit this many columns (use --wide for whole keys)."""
DAY_S = 86_400


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def _short_time(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M")


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], *parents: argparse.ArgumentParser
) -> None:
    ls = sub.add_parser("list", parents=parents, help="one row per session, most recently active first")
    ls.add_argument("--json", action="store_true")
    ls.add_argument("--limit", type=_positive_int, default=None, help="show at most N sessions")
    ls.add_argument(
        "--platform", default=None, help="only sessions of this platform (discord, slack, http, ...)"
    )
    ls.add_argument("--wide", action="store_true", help="never shorten keys (rows may pass 100 columns)")
    show = sub.add_parser("show", parents=parents, help="a session's entry and transcript")
    show.add_argument("key")
    show.add_argument("--json", action="store_true")
    size = show.add_mutually_exclusive_group()
    size.add_argument(
        "--limit",
        type=_positive_int,
        default=SHOW_RECORDS,
        metavar="N",
        help=f"show the last N records of the transcript (default {SHOW_RECORDS:,})",
    )
    size.add_argument("--all", action="store_true", help="show every record of the transcript")
    show.add_argument(
        "--session",
        default=None,
        metavar="ID",
        help="an earlier session of KEY (its id is printed by `sessions reset`)",
    )
    reset = sub.add_parser("reset", parents=parents, help="start a new session for KEY")
    reset.add_argument("key")
    reset.add_argument("--create", action="store_true", help="start one even if KEY has no session yet")
    prune = sub.add_parser("prune", parents=parents, help="delete sessions idle for more than N days")
    prune.add_argument("--idle-days", type=_non_negative_float, required=True, metavar="N")
    prune.add_argument("--dry-run", action="store_true", help="only say what would be deleted")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError("must be a number of days, 0 or more")
    return value


async def run(args: argparse.Namespace, runtime: Runtime) -> int:
    if args.action == "list":
        return await _list(args, runtime)
    if args.action == "prune":
        return await _prune(args, runtime)
    try:
        key = validate_key(args.key)
    except ValueError as exc:
        print(f"chatlane: {exc}", file=sys.stderr)
        return EXIT_USAGE
    entry = await runtime.store.get(key)
    if args.action == "reset":
        if entry is None and not args.create:
            print(f"chatlane: no session for {key}: nothing to reset (--create starts one)", file=sys.stderr)
            return 1
        responder = FutureResponder()
        await runtime.gateway.reset(key, responder)
        reply = await responder.reply
        if reply.kind != "notice":
            print(f"chatlane: {key}: {reply.text}", file=sys.stderr)
            return 1
        print(f"{key}: new session {reply.session_id}")
        if entry is not None:
            print(f"the previous one is kept: chatlane sessions show {key} --session {entry.session_id}")
        return 0
    inbox = await runtime.store.inbox.items(key)
    if entry is None and not (inbox.pending or inbox.parked):
        print(f"chatlane: no session for {key}", file=sys.stderr)
        return 1
    if entry is None:  # messages accepted before their conversation's first answer
        _print_inbox(inbox, args.json)
        return 0
    return await _show(args, runtime, entry, inbox)


def _item_json(item: InboxItem) -> dict[str, object]:
    return {
        "item": item.item_id,
        "seq": item.seq,
        "kind": item.kind,
        "text": item.inbound.text,
        "acceptedAt": iso(item.at),
        "attempts": item.attempts,
        "platform": item.target.platform if item.target is not None else None,
        "answerMessages": list(item.answer_ids),
        "owner": item.owner,
    }


def _print_inbox(inbox: InboxView, as_json: bool) -> None:
    if as_json:
        out = {
            "pending": [_item_json(i) for i in inbox.pending],
            "parked": [_item_json(i) for i in inbox.parked],
        }
        print(json.dumps(out, indent=2, ensure_ascii=False))
        return
    for title, items in (("pending", inbox.pending), ("parked (failed 3 times)", inbox.parked)):
        if items:
            print(f"=== {title}: {len(items)}")
        for i in items:
            text = i.inbound.text if len(i.inbound.text) <= 80 else i.inbound.text[:79] + "…"
            answer = f", answer messages {', '.join(i.answer_ids)}" if i.answer_ids else ""
            print(f"#{i.seq} {i.kind} accepted {iso(i.at)}, {i.attempts} tries{answer}\n{text}")


async def _pending_counts(runtime: Runtime) -> dict[str, int]:
    """Pending inbox items per conversation, from the inbox's index (never every session)."""
    counts: dict[str, int] = {}
    for key in await runtime.store.inbox.keys():
        if n := len((await runtime.store.inbox.items(key)).pending):
            counts[key] = n
    return counts


async def _list(args: argparse.Namespace, runtime: Runtime) -> int:
    listing = await runtime.store.list()
    pending = await _pending_counts(runtime)
    rows = sorted(listing.entries, key=lambda e: e.last_interaction_at, reverse=True)
    if args.platform:
        rows = [e for e in rows if parse_key(e.key).platform == args.platform]
    total = len(rows)
    if args.limit is not None:
        rows = rows[: args.limit]
    if args.json:
        fields = ("key", "sessionId", "turns", "createdAt", "lastInteractionAt")
        out = [
            {**{k: v for k, v in _entry_json(e).items() if k in fields}, "pending": pending.get(e.key, 0)}
            for e in rows
        ]
        print(json.dumps(out, indent=2))
    else:
        fixed = f"  {'TURNS':>5}  {'PENDING':>7}  {'LAST ACTIVE (UTC)':<16}  {'SESSION':<8}"
        width = max((len(e.key) for e in rows), default=3)
        if not args.wide:
            width = min(width, WIDTH - len(fixed))
        print(f"{'KEY':<{width}}{fixed}")
        for e in rows:
            key = e.key if args.wide else _shorten(e.key, width)
            waiting = pending.get(e.key, 0)
            print(
                f"{key:<{width}}  {e.turns:>5}  {waiting:>7}  {_short_time(e.last_interaction_at):<16}  "
                f"{e.session_id[:8]}"
            )
        shown = f" (showing {len(rows)}; --limit)" if len(rows) < total else ""
        print(f"{total} sessions{shown}")
        if pending:
            print(f"{sum(pending.values())} messages pending in the inbox of {len(pending)} conversations")
    for d in listing.damaged:
        print(f"damaged: {d.key or '(key unknown)'} at {d.where}: {d.reason}", file=sys.stderr)
    return 0


def _shorten(key: str, width: int) -> str:
    """Middle-elided: the platform at the start and the channel at the end both stay."""
    if len(key) <= width:
        return key
    head = (width - 1) // 2
    return key[:head] + "…" + key[len(key) - (width - 1 - head) :]


def _entry_json(e: SessionEntry) -> dict[str, object]:
    return {
        "key": e.key,
        "sessionId": e.session_id,
        "platform": e.platform,
        "turns": e.turns,
        "createdAt": iso(e.created_at),
        "sessionStartedAt": iso(e.session_started_at),
        "lastInteractionAt": iso(e.last_interaction_at),
    }


async def _show(args: argparse.Namespace, runtime: Runtime, entry: SessionEntry, inbox: InboxView) -> int:
    session_id = entry.session_id
    if args.session is not None:
        if not SESSION_ID.fullmatch(args.session):
            print(f"chatlane: {args.session!r} is not a session id (32 hex digits)", file=sys.stderr)
            return EXIT_USAGE
        session_id = args.session
    limit: int | None = None if args.all else args.limit
    records = await runtime.store.tail(session_id, ALL_RECORDS if limit is None else limit + 1)
    truncated = limit is not None and len(records) > limit
    if truncated:
        records = records[len(records) - (limit or 0) :]
    if args.session is not None and not records:
        print(f"chatlane: no transcript for session {session_id}", file=sys.stderr)
        return 1
    if args.json:
        out = {**_entry_json(entry), "model": entry.model, "shownSessionId": session_id}
        out["truncated"] = truncated  # older records exist beyond --limit
        out["transcript"] = [
            {
                "role": r.role,
                "content": r.content,
                "at": iso(r.at),
                "interrupted": r.interrupted,
                **({"summary": True, "keeps": r.keeps} if r.summary else {}),
                "backfill": r.backfill,
                "author": r.author,
                "attachments": [
                    {"name": a.name, "mime": a.mime, "size": a.size, "sha256": a.sha256}
                    for a in r.attachments
                ],
            }
            for r in records
        ]
        out["pending"] = [_item_json(i) for i in inbox.pending]
        out["parked"] = [_item_json(i) for i in inbox.parked]
        print(json.dumps(out, indent=2, ensure_ascii=False))
        return 0
    print(f"key:        {entry.key}\nsession:    {entry.session_id}\nturns:      {entry.turns}")
    print(f"created:    {iso(entry.created_at)}\nlast:       {iso(entry.last_interaction_at)}")
    if entry.model is not None:
        print(f"model:      {entry.model}")
    if session_id != entry.session_id:
        print(f"showing:    earlier session {session_id}")
    if truncated:
        print(TRUNCATED_TEXT.format(shown=len(records)))
    for r in records:
        if r.summary:
            print(f"=== summary: the agent sees this instead of the records above, except the last {r.keeps}")
        mark = " (interrupted)" if r.interrupted else ""
        mark += f" (backfill: {r.author or 'someone'})" if r.backfill else ""
        files = "".join(
            f"\n{placeholder(a)} {a.mime}, {a.size:,} bytes, sha256 {a.sha256[:12]}" for a in r.attachments
        )
        print(f"--- {r.role} {iso(r.at)}{mark}\n{r.content}{files}")
    _print_inbox(inbox, False)
    return 0


async def _prune(args: argparse.Namespace, runtime: Runtime) -> int:
    cutoff = time.time() - args.idle_days * DAY_S
    listing = await runtime.store.list()
    idle = [e for e in listing.entries if e.last_interaction_at < cutoff]
    if args.dry_run:
        for e in idle:
            print(f"would delete {e.key} (last active {iso(e.last_interaction_at)})")
        print(f"{len(idle)} of {len(listing.entries)} sessions idle for more than {args.idle_days:g} days")
        return 0
    deleted = 0
    for e in idle:
        # Re-checked under the conversation's turn lock: one that came back to life is kept.
        if await runtime.gateway.forget(e.key, idle_before=cutoff):
            deleted += 1
    print(
        f"deleted {deleted} sessions idle for more than {args.idle_days:g} days; "
        f"{len(listing.entries) - deleted} kept"
    )
    return 0
