"""The console's view of the durable inbox (core/store/base.py `Inbox`): a conversation's
pending items, the counts on a list page, and the health page's depth and oldest age.

Costs: the list page asks the inbox for its index of keys with pending items once, then
reads the items of the page's conversations that are in it; the health page reads at
most `HEALTH_KEYS` conversations' items (it says when it stopped there).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from bots.http.console.pages import esc, when
from core.model import InboxItem, InboxView, SessionKey
from core.store import SessionStore

HEALTH_KEYS = 500
CLIP = 300
NO_PENDING_TEXT = "Nothing waiting: every message of this conversation was answered."


async def pending_counts(store: SessionStore, keys: Iterable[str]) -> dict[str, int]:
    """Pending items per key, for the keys given (one index read + one read per key in it)."""
    indexed = set(await store.inbox.keys())
    out: dict[str, int] = {}
    for key in keys:
        if key in indexed:
            out[key] = len((await store.inbox.items(SessionKey(key))).pending)
    return out


async def depth(store: SessionStore) -> str:
    """Items pending over the whole store and the oldest one's age (bounded, see above)."""
    keys = await store.inbox.keys()
    total, oldest = 0, None
    for key in keys[:HEALTH_KEYS]:
        view = await store.inbox.items(key)
        total += len(view.pending)
        for item in view.pending:
            oldest = item.at if oldest is None else min(oldest, item.at)
    if total == 0:
        return "empty: nothing waiting for an answer"
    more = (
        f" (counted in the first {HEALTH_KEYS} of {len(keys)} conversations)"
        if len(keys) > HEALTH_KEYS
        else ""
    )
    age = time.time() - oldest if oldest is not None else 0.0
    where = min(len(keys), HEALTH_KEYS)
    return f"{total} item(s) pending in {where} conversation(s), oldest {age:.0f} s old{more}"


def render(view: InboxView) -> str:
    if not view.pending and not view.parked:
        return f'<p class="empty">{esc(NO_PENDING_TEXT)}</p>'
    rows = "".join(_row(item, "pending") for item in view.pending)
    rows += "".join(_row(item, "parked (set aside after failing every try)") for item in view.parked)
    damaged = f"<p>{view.quarantined} damaged record(s) were moved aside.</p>" if view.quarantined else ""
    return (
        '<table><thead><tr><th scope="col">State</th><th scope="col">Kind</th><th scope="col">Accepted</th>'
        '<th scope="col">From</th><th scope="col">Text</th><th scope="col">Files</th>'
        f'<th scope="col">Tries</th></tr></thead><tbody>{rows}</tbody></table>{damaged}'
    )


def _row(item: InboxItem, state: str) -> str:
    m = item.inbound
    text = m.text if len(m.text) <= CLIP else m.text[:CLIP] + "..."
    files = ", ".join(f.name for f in m.attachments)
    due = f" (due {when(item.due_at)})" if item.due_at else ""
    return (
        f"<tr><td>{esc(state)}</td><td>{esc(item.kind)}</td><td>{when(item.at)}{due}</td>"
        f"<td>{esc(m.display_name or m.user)}</td><td><pre>{esc(text)}</pre></td><td>{esc(files)}</td>"
        f'<td class="num">{item.attempts}</td></tr>'
    )
