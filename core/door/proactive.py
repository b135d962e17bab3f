"""Messages the bot sends first: proactive sends (`POST /v1/conversations/{key}/messages`,
`chatlane send`, the operator console) and the fires of `[[schedules]]`.

    prompt  the text is the user-side input of a turn in the conversation's session,
            marked as the operator's (`origin`), and the answer goes to its channel
    notice  the text is posted verbatim as the bot and stored as the bot's record
            (marked), so later turns know it was said; no agent runs

Either queues behind a running turn of the conversation, like any message (its lane).
Where the answer goes comes from the key: a Discord or Slack channel or thread becomes a
`ReplyTarget`, answered through the adapter registered for its platform
(`Gateway.targets`); an `http` or `console` conversation keeps it in the transcript only.
A key with no channel (scope `user`: channel `*`) is `Unreachable`.

Exactly once: a send with an idempotency key is claimed in the store (`Requests`); a
fire is claimed by the scheduler (core/ops/schedules.py) and, when an earlier owner's
claim lapsed, first looked up in the transcript by its id (a fire's message id).

Durable: a message for a Discord or Slack conversation is stored in the conversation's
inbox (`Gateway.enqueue`: a `message` or `notice` item with its target and, for a fire,
its slot as `due_at`) before it is queued, so a process that dies before answering it
leaves it to the inbox's resume in another process or at the next start. A fire whose
claim is taken over looks for its id in the transcript AND the inbox before firing.
Transcript-only conversations (http, console) have no target and are not in the inbox.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from core.config import Config, ScheduleSettings, unreachable
from core.conversation import Pending
from core.door.dedupe import Requests
from core.door.targets import NoAdapter, Targets
from core.model import (
    ANY,
    AnswerNote,
    CancelReason,
    Closed,
    Inbound,
    Reply,
    ReplyTarget,
    Responder,
    SessionKey,
    parse_key,
    validate_key,
)
from core.ops import Fire, Metrics, Scheduler
from core.store import SessionStore
from core.turn import QuietResponder

log = logging.getLogger("chatlane.proactive")

Mode = Literal["prompt", "notice"]
Enqueue = Callable[..., Awaitable[None]]
"""`Gateway.enqueue(key, pending, target, *, due_at)`: into the inbox, then the lane."""
OPERATOR = "operator"
"""The `origin` of a proactive message: said by the operator (or a schedule), not a person."""
TRANSCRIPT_ONLY = ("http", "console")
LOOKBACK = 200
"""Records searched for a fire's message id when taking over a lapsed claim."""


class Unreachable(ValueError):
    """The key names no conversation the bot can speak in (a 4xx at the API)."""


class IdempotencyConflict(ValueError):
    """The idempotency key was used before with another request."""


@dataclass(frozen=True, slots=True)
class Sent:
    key: SessionKey
    message_id: str
    mode: Mode
    duplicate: bool = False
    """An earlier request with the same idempotency key sent it; nothing was sent again."""

    def to_json(self) -> dict[str, object]:
        return {"key": self.key, "message_id": self.message_id, "mode": self.mode}


class _Outcome(QuietResponder):
    """Passes everything on to the conversation's responder and keeps the final reply."""

    def __init__(self, inner: Responder | None) -> None:
        self.inner = inner
        self.reply: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()

    async def send(self, reply: Reply) -> None:
        if self.inner is not None:
            await self.inner.send(reply)
        if not self.reply.done():
            self.reply.set_result(reply)

    async def on_delta(self, text: str) -> None:
        if self.inner is not None:
            await self.inner.on_delta(text)

    async def on_cancelled(self, reason: CancelReason) -> None:
        if self.inner is not None:
            await self.inner.on_cancelled(reason)

    def track_answer(self, note: AnswerNote) -> None:
        if self.inner is not None:
            self.inner.track_answer(note)


def target_for(key: SessionKey) -> ReplyTarget | None:
    """Where a proactive message to `key` is answered: None for a transcript-only
    conversation (http, console); `Unreachable` when the key has no channel."""
    if (why := unreachable(key)) is not None:
        raise Unreachable(why)
    parts = parse_key(key)
    if parts.platform in TRANSCRIPT_ONLY:
        return None
    thread = parts.thread if parts.thread not in (None, ANY) else None
    return ReplyTarget(parts.platform, parts.channel, thread)


def outcome_of(reply: Reply) -> str | None:
    """A fire's outcome from its reply; None when nothing was stored (shutdown)."""
    if reply.kind in ("answer", "merged", "notice"):
        return "answered"
    if reply.kind == "shutdown":
        return None
    return reply.kind  # failure, dropped, stopped


class Proactive:
    """Proactive sends and the scheduler; the gateway has one (`Gateway.proactive`)."""

    def __init__(
        self,
        config: Config,
        store: SessionStore,
        enqueue: Enqueue,
        targets: Targets,
        requests: Requests,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self.enqueue = enqueue
        self.targets = targets
        self.requests = requests
        self.clock = clock
        self.scheduler = Scheduler(config.schedules, store, self.fire, config.scheduler, metrics, clock=clock)

    def start(self) -> None:
        """Start firing schedules (after the adapters registered their reply targets)."""
        if self.config.scheduler.enabled:
            self.scheduler.start()

    async def close(self) -> None:
        await self.scheduler.close()

    def _responder(self, key: SessionKey) -> tuple[ReplyTarget | None, Responder | None]:
        target = target_for(key)
        if target is None:
            return None, None
        try:
            return target, self.targets.responder(target)
        except NoAdapter as exc:
            raise Unreachable(f"{key}: {exc}") from None
        except (ValueError, RuntimeError) as exc:  # the adapter refuses the ids, or is stopping
            raise Unreachable(f"{key}: the {target.platform} bot cannot answer there: {exc}") from None

    async def send(
        self,
        key: str,
        text: str,
        mode: Mode = "prompt",
        *,
        idempotency: tuple[str, str] | None = None,
    ) -> Sent:
        """Queue `text` in the conversation of `key`; returns once queued, before it is
        answered. `idempotency` = (request id, fingerprint of the request): a retry with
        the same id is not sent again (`Sent.duplicate`), whatever process took it first.

        `ValueError` for a malformed key, `Unreachable` for a key with no conversation to
        speak in (or no running adapter for it), `IdempotencyConflict`, `StoreError`, `Closed`.
        """
        key = validate_key(key)
        target, inner = self._responder(key)  # refuse an unreachable key before claiming anything
        if idempotency is None:
            message_id = f"send-{uuid.uuid4().hex[:16]}"
            await self._enqueue(key, text, mode, message_id, inner, target)
            return Sent(key, message_id, mode)
        request_id, fingerprint = idempotency
        claim = await self.requests.claim(f"send:{request_id}", fingerprint)
        if not claim.new:
            if claim.fingerprint != fingerprint:
                raise IdempotencyConflict("this Idempotency-Key was used with another request")
            stored = json.loads(claim.answer) if claim.answer else {}
            return Sent(key, str(stored.get("message_id", "")), mode, duplicate=True)
        message_id = "send-" + hashlib.sha256(request_id.encode()).hexdigest()[:16]
        try:
            await self._enqueue(key, text, mode, message_id, inner, target)
        except BaseException:
            await self.requests.release(f"send:{request_id}", claim.owner)
            raise
        sent = Sent(key, message_id, mode)
        answer = json.dumps(sent.to_json()).encode()
        await self.requests.finish(f"send:{request_id}", claim.owner, fingerprint, answer)
        return sent

    async def _enqueue(
        self,
        key: SessionKey,
        text: str,
        mode: Mode,
        message_id: str,
        inner: Responder | None,
        target: ReplyTarget | None,
        due_at: float | None = None,
    ) -> _Outcome:
        """The one place a proactive message is queued: stored in the inbox (with a
        target), then in the lane, behind a running turn of its conversation."""
        parts = parse_key(key)
        inbound = Inbound(
            parts.platform, parts.user, parts.channel, text, message_id, parts.thread, origin=OPERATOR
        )
        responder = _Outcome(inner)
        pending = Pending(inbound, responder, notice=mode == "notice")
        await self.enqueue(key, pending, target, due_at=due_at)
        return responder

    async def fire(self, fire: Fire) -> str | None:
        """Run one claimed fire and wait for its answer: the scheduler's `Firer`."""
        schedule = fire.schedule
        key = validate_key(schedule.key)
        if fire.takeover and (taken := await self._taken(key, fire.id)) is not None:
            log.info("schedule %s: %s was %s before its owner stopped", schedule.name, fire.id, taken)
            return taken
        try:
            target, inner = self._responder(key)
            responder = await self._enqueue(
                key, schedule.text, schedule.mode, fire.id, inner, target, due_at=fire.due
            )
        except Unreachable as exc:
            log.error("schedule %s: cannot speak in %s: %s", schedule.name, key, exc)
            return "unreachable"
        except Closed:
            return None
        return outcome_of(await responder.reply)

    async def _taken(self, key: SessionKey, message_id: str) -> str | None:
        """`answered` when the transcript has `message_id`, `queued` when the conversation's
        inbox holds it (the inbox answers it), else None: not fired yet."""
        entry = await self.store.get(key)
        if entry is not None:
            records = await self.store.tail(entry.session_id, LOOKBACK)
            if any(r.message_id == message_id for r in records):
                return "answered"
        view = await self.store.inbox.items(key)
        if any(i.inbound.message_id == message_id for i in view.pending):
            return "queued"
        return None

    async def remind(
        self, key: str, text: str, at: datetime, *, mode: Mode = "prompt", name: str = ""
    ) -> str:
        """A one-shot schedule made at runtime (a reminder a conversation asks for; the
        CLI's `schedules run` and `send`): saved in the store, fired once by whichever
        process claims it, dropped once done. Returns its name. `ValueError` (with the
        reason) for a bad key or time, `StoreError` when it cannot be saved."""
        if at.tzinfo is None:
            raise ValueError("a reminder's time needs a timezone")
        name = name or f"remind-{uuid.uuid4().hex[:12]}"
        spec = ScheduleSettings(name=name, key=key, at=at.isoformat(), text=text, mode=mode, catch_up="1h")
        await self.store.save_schedule(name, spec.model_dump_json().encode())
        self.scheduler.wake()
        return name
