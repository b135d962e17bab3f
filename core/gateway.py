"""The one door into core, and the turn pipeline every adapter shares.

Adapters call `submit` (a message), `reset` (a new session: slash commands, the CLI)
and `status`; nothing else in core. Resets go through the conversation's lane like
messages, so a `/new` never overtakes a message sent before it.

    submit: reset command? -> key -> lane
    turn:   turn lock (fencing token) -> resolve (reserver) -> transcript tail -> agent
            streams the reply -> ONE fenced commit of the user + assistant records -> let go
            of the lock -> deliver

A refused commit (`Fenced`: another process holds a newer lease, or the key was reset
there) stored nothing: the turn's messages go back to the front of their lane and are
answered in a new turn that sees what the other process stored.

Adapters gate messages (allowlists, mentions: see core/access.py) before `submit`.
A reply is delivered only after its commit is durable. One error path:
when the agent or the store fails, the user gets a short plain message, the log gets
the details, and the user's message is kept in memory where the store allows it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Sequence

from core.config import Config
from core.keys import build_key, parse_key
from core.lanes import Lanes, Pending, Retry
from core.metrics import Metrics
from core.reserver import Freshness, Reserver
from core.types import (
    Agent,
    ChatMessage,
    Fenced,
    Inbound,
    Reply,
    Responder,
    SessionEntry,
    SessionKey,
    SessionStatus,
    SessionStore,
    StoreError,
    TurnCommit,
    TurnInput,
    TurnLease,
)

log = logging.getLogger("chatlane.gateway")

RESET_TEXT = "Started a new conversation."
MAX_FENCED_ATTEMPTS = 5
"""A turn fenced out this many times in a row is answered with the store failure text."""
STORE_FAILURE_TEXT = (
    "Sorry, I couldn't save this conversation just now, so I didn't answer. Please try again."
)


class Gateway:
    def __init__(
        self,
        config: Config,
        store: SessionStore,
        agent: Agent,
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self.agent = agent
        # Built here from the config, so no caller can forget `session.reset`.
        self.reserver = Reserver(store, Freshness.from_settings(config.session.reset), clock=clock)
        self._clock = clock
        self.metrics = metrics or Metrics()
        self.lanes = Lanes(self._run_turn, config.queue)
        self.metrics.watch_queue(lambda: self.lanes.depth)

    def key_for(self, inbound: Inbound) -> SessionKey:
        """The session key of the conversation `inbound` belongs to (ValueError if invalid)."""
        s = self.config.session
        return build_key(
            self.config.agent.id,
            inbound.platform,
            inbound.user,
            inbound.channel,
            inbound.thread if s.threads else None,
            scope=s.scope,
        )

    def is_reset_command(self, text: str) -> bool:
        return text.strip().lower() in self.config.session.reset_commands

    async def submit(self, inbound: Inbound, responder: Responder) -> SessionKey:
        """Take one gated message. Returns once it is queued, before it is answered.

        Raises ValueError when the message's ids do not make a valid key, and `Closed`
        during shutdown.
        """
        key = self.key_for(inbound)
        self.metrics.messages_in.labels(inbound.platform).inc()
        reset = self.is_reset_command(inbound.text)
        await self.lanes.submit(key, Pending(inbound, responder, reset=reset))
        return key

    async def reset(self, key: SessionKey, responder: Responder) -> None:
        """Start a new session for `key` once the messages queued before it are answered.

        Returns once queued; `responder` gets a `notice` (or a `failure`). Raises
        ValueError for a malformed key and `Closed` during shutdown.
        """
        parts = parse_key(key)
        command = Inbound(parts.platform, parts.user, parts.channel, "", "", parts.thread)
        await self.lanes.submit(key, Pending(command, responder, reset=True))

    async def status(self, key: SessionKey) -> SessionStatus:
        """The stored session of `key` and what its lane is doing (read only)."""
        entry = await self.store.get(key)
        waiting, running = self.lanes.waiting(key)
        return SessionStatus(key, entry, waiting, running)

    async def forget(self, key: SessionKey, *, idle_before: float | None = None) -> bool:
        """Delete the key's session (entry and transcript) once no turn of it runs, in any
        process: for one-off API requests and `chatlane sessions prune`. With `idle_before`,
        only if its last interaction is still older than that (re-checked under the lock,
        so a conversation that just came back to life is kept). True if deleted."""
        async with self.store.lock_turn(key):
            entry = await self.store.get(key)
            if entry is None or (idle_before is not None and entry.last_interaction_at >= idle_before):
                return False
            return await self.store.delete(key, entry.session_id)

    async def _run_turn(self, key: SessionKey, batch: list[Pending]) -> None:
        started = time.perf_counter()
        try:
            async with batch[-1].responder.working():
                outcome, reply = await self._turn(key, batch)
        except Fenced as exc:
            # Nothing of the turn was stored: its messages go back to the front of the lane.
            self.metrics.fenced.inc()
            self.metrics.turns.labels("fenced").inc()
            attempts = max(p.fenced for p in batch) + 1
            for p in batch:
                p.fenced = attempts
            if attempts < MAX_FENCED_ATTEMPTS:
                log.warning("turn of %s fenced out (%s); answering its messages again", key, exc)
                raise Retry from exc
            log.error("turn of %s fenced out %d times in a row; not answered: %s", key, attempts, exc)
            outcome, reply = "fenced", Reply(STORE_FAILURE_TEXT, "failure", key)
        except StoreError as exc:
            log.error("turn of %s not answered: the store failed: %s", key, exc)
            outcome, reply = "store_error", Reply(STORE_FAILURE_TEXT, "failure", key)
        # Delivered after the turn lock is let go: a commit that was stored is answered,
        # whatever happens to the lease afterwards.
        await self._deliver(batch, reply)
        elapsed = time.perf_counter() - started
        self.metrics.turns.labels(outcome).inc()
        self.metrics.turn_latency.observe(elapsed)
        log.info(
            "turn key=%s session=%s turn=%d outcome=%s latency_ms=%d messages=%d",
            key,
            reply.session_id[:8] or "-",
            reply.turn,
            outcome,
            round(elapsed * 1000),
            len(batch),
        )

    async def _turn(self, key: SessionKey, batch: list[Pending]) -> tuple[str, Reply]:
        async with self.store.lock_turn(key) as lease:
            if batch[0].reset:
                entry = await self.reserver.reset(key)
                self.metrics.sessions_minted.inc()
                log.info("session of %s reset to %s", key, entry.session_id)
                return "reset", Reply(RESET_TEXT, "notice", key, entry.session_id, 0)
            return await self._answer(lease, batch)

    async def _answer(self, lease: TurnLease, batch: list[Pending]) -> tuple[str, Reply]:
        key = lease.key
        entry, created = await self.reserver.resolve(key)
        (self.metrics.sessions_minted if created else self.metrics.reservations_adopted).inc()
        history = await self.store.tail(entry.session_id, self.config.agent.history_limit)
        now = self._clock()
        fresh = [p for p in batch if not p.recorded]
        new = [ChatMessage("user", p.inbound.text, now, p.inbound.message_id) for p in fresh]
        recorded_ids = {p.inbound.message_id for p in batch if p.recorded and p.inbound.message_id}
        # Messages cut off by an interrupt are already in memory: show them as new again.
        carried = [m for m in history if m.role == "user" and m.message_id in recorded_ids]
        turn = TurnInput(
            key,
            entry.session_id,
            entry.turns + 1,
            [m for m in history if m not in carried],
            carried + new,
        )
        pieces: list[str] = []
        try:
            async for piece in self.agent.stream(turn):
                pieces.append(piece)
                await batch[-1].responder.on_delta(piece)
        except asyncio.CancelledError:
            await asyncio.shield(self._keep_interrupted(lease, entry, fresh, new))
            raise
        except Exception as exc:  # any agent failure: one plain answer, details in the log
            # One line (the formatter adds the exception and its cause); the traceback at DEBUG.
            log.error("agent %s failed on %s", self.agent.name, key, exc_info=exc)
            await self._commit(lease, entry, new, turns=turn.turn)
            for p in fresh:
                p.recorded = True
            return "agent_error", Reply(
                self.config.agent.failure_message, "failure", key, entry.session_id, turn.turn
            )
        answer = "".join(pieces)
        await self._commit(lease, entry, [*new, ChatMessage("assistant", answer, self._clock())], turn.turn)
        return "answered", Reply(answer, "answer", key, entry.session_id, turn.turn)

    async def _keep_interrupted(
        self, lease: TurnLease, entry: SessionEntry, fresh: list[Pending], new: list[ChatMessage]
    ) -> None:
        """Keep the messages of a cancelled turn in memory (as interrupted), fenced like
        any commit: after a lost lease it is refused and they are answered afresh."""
        records = [ChatMessage(m.role, m.content, m.at, m.message_id, interrupted=True) for m in new]
        if not records:
            return
        try:
            await self._commit(lease, entry, records, turns=entry.turns)
        except (StoreError, Fenced) as exc:
            log.warning("interrupted turn of %s: its messages were not kept: %s", entry.key, exc)
            return
        for p in fresh:
            p.recorded = True

    async def _commit(
        self, lease: TurnLease, entry: SessionEntry, records: Sequence[ChatMessage], turns: int
    ) -> None:
        """The turn's one write: its records and progress, whole or not at all (fenced)."""
        await self.store.commit(
            TurnCommit(lease, entry.session_id, uuid.uuid4().hex, records, self._clock(), turns)
        )

    @staticmethod
    async def _deliver(batch: list[Pending], reply: Reply) -> None:
        """The reply to the last message; earlier ones of a merged batch hear it as merged."""
        for p in batch[:-1]:
            await p.responder.send(
                reply
                if reply.kind != "answer"
                else Reply(reply.text, "merged", reply.session_key, reply.session_id, reply.turn)
            )
        await batch[-1].responder.send(reply)

    async def close(self, timeout: float | None = None) -> None:
        """Stop taking messages; let running turns finish within the timeout."""
        await self.lanes.close(self.config.queue.shutdown_timeout_s if timeout is None else timeout)
