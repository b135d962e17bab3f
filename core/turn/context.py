"""What a turn knows besides its own messages: thread history and attachment bytes.

The gateway calls these inside the turn lock:

* `fetch_backfill`: on the first turn of a session (no turns counted, nothing in its
  transcript), the earlier messages of the channel or thread, from the adapter's
  `HistorySource`. The records are stored with the turn's commit, so the next turn (in
  this process or any other sharing the store) finds the session started and does not
  read the thread again. After a reset the new session starts empty: it backfills again,
  but only what was said after the reset (`since`): the exchange before `/new` belongs
  to the old session.
* `without_answered`: a backfill record of a message that is also in memory (or in this
  batch) as a message of its own is shown once, as that message. It happens when a later
  message of the thread won the turn lock first (another process, another lane) and its
  backfill read the earlier, not yet answered one.
* `read_attachments`: each new message's files (core/attachments.py), their bytes put
  into the store's blobs (content-addressed, idempotent: a retried turn stores nothing
  twice; a turn whose commit fails leaves only blobs no record points at, removed with
  the session).
* `load_blobs`: the bytes of attachments the agent may look at this turn, newest first
  within `[attachments] history_bytes`.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import cast

from core.config import AttachmentSettings
from core.model import ChatMessage, HistorySource, Inbound, Responder
from core.store import BlobStore, SessionStore
from core.turn.attachments import Intake, read_files

log = logging.getLogger("chatlane.context")

BACKFILL_TIMEOUT_S = 15.0


def wants_backfill(turns: int, history: Sequence[ChatMessage]) -> bool:
    """Only a session's first turn reads the thread: nothing counted and nothing stored yet."""
    return turns == 0 and not history


async def fetch_backfill(
    responder: Responder, skip_ids: set[str], since: float | None = None
) -> list[ChatMessage]:
    """The conversation's earlier messages from the adapter, or [] (never raises).
    `since`: only those said after that time (a message without a time is left out)."""
    # What `isinstance(responder, HistorySource)` checks, without its cost (10-50 us a
    # call on Python 3.11: a runtime protocol check walks the protocol's members).
    if not hasattr(responder, "fetch_history"):
        return []
    source = cast(HistorySource, responder)
    try:
        found = await asyncio.wait_for(source.fetch_history(), BACKFILL_TIMEOUT_S)
    except TimeoutError:
        log.warning(
            "reading the thread's earlier messages took over %.0fs; answering without", BACKFILL_TIMEOUT_S
        )
        return []
    except Exception:  # an adapter bug must not fail the turn
        log.exception("reading the thread's earlier messages failed; answering without")
        return []
    return [
        m if m.backfill else replace(m, backfill=True)
        for m in found
        if not (m.message_id and m.message_id in skip_ids) and (since is None or m.at > since)
    ]


def without_answered(history: Sequence[ChatMessage], batch_ids: set[str]) -> list[ChatMessage]:
    """`history` without backfill records of messages that are in it (or in `batch_ids`)
    as messages of their own: each message is shown once, as itself."""
    own = {m.message_id for m in history if not m.backfill and m.message_id} | batch_ids
    return [m for m in history if not (m.backfill and m.message_id and m.message_id in own)]


async def read_attachments(
    store: SessionStore, session_id: str, inbound: Inbound, settings: AttachmentSettings
) -> Intake:
    """Read one message's files and keep their bytes in the store (when it keeps blobs).

    Each file is streamed to a temporary folder and stored from there (`put_blob_files`):
    no download is held in memory whole (an image a model is to see is read back once)."""
    if not inbound.attachments:
        return Intake()
    folder = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="chatlane-files-"))
    try:
        intake = await read_files(inbound.attachments, settings, folder)
        if intake.stored and isinstance(store, BlobStore):
            await store.put_blob_files(session_id, intake.stored)
    finally:
        await asyncio.to_thread(shutil.rmtree, folder, True)
    return intake


async def load_blobs(
    store: SessionStore,
    session_id: str,
    messages: Sequence[ChatMessage],
    have: dict[str, bytes],
    budget: int,
) -> dict[str, bytes]:
    """Bytes for the attachments of `messages` (newest first) within `budget` bytes."""
    out: dict[str, bytes] = {}
    wanted: list[str] = []
    spent = 0
    for m in reversed(messages):
        for ref in m.attachments:
            if ref.sha256 in out or ref.sha256 in wanted:
                continue
            if spent + ref.size > budget:
                continue
            spent += ref.size
            if ref.sha256 in have:
                out[ref.sha256] = have[ref.sha256]
            else:
                wanted.append(ref.sha256)
    if wanted and isinstance(store, BlobStore):
        out.update(await store.get_blobs(session_id, wanted))
    return out
