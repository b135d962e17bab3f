"""The turn pipeline: what running one lane item does, for `core.door.Gateway`.

    turn:   turn lock (fencing token) -> resolve (reserver) -> transcript tail -> first turn
            of the session? read the thread (backfill) -> read attachments (blobs) ->
            compaction? (a summary record, core/compaction.py) -> the key's agent streams
            the reply (the process's one stop poller reads the store for `/stop` from other processes) ->
            ONE fenced commit of the (summary +) (backfill +) user + assistant records ->
            let go of the lock -> deliver

A refused commit (`Fenced`: another process holds a newer lease, or the key was reset
there) stored nothing: the turn's messages go back to the front of their lane and are
answered in a new turn that sees what the other process stored. A reply is delivered
only after its commit is durable, and once a commit was sent its outcome stands.

The gateway has one `TurnRunner`; the runner owns the lanes whose items it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace

from core.agents import Agent, TurnInput
from core.config import AgentSettings, Config
from core.conversation import Lanes, Pending, Reserver, Retry, Router
from core.model import (
    POISON_ATTEMPTS,
    AgentEvent,
    ChatMessage,
    Fenced,
    Reply,
    SessionEntry,
    SessionKey,
    StoreError,
    TurnCommit,
    TurnLease,
    Usage,
    parse_key,
)
from core.ops import Metrics, forget_cancels, key_hash
from core.store import SessionStore
from core.turn import context, model_choice
from core.turn.compaction import COMPACTED_NOTE, compact, needs_compaction, visible
from core.turn.inbox import InboxSteps
from core.turn.stopwatch import StopPoller
from core.turn.tools import Reminders, tool_host, tool_records
from core.turn.watchers import TurnWatchers

log = logging.getLogger("chatlane.gateway")

RESET_TEXT = "Started a new conversation."
DEFAULT_MODEL_COMMAND = "/model"
MAX_FENCED_ATTEMPTS = 5
"""A turn fenced out this many times in a row is answered with the store failure text."""
STORE_FAILURE_TEXT = (
    "Sorry, I couldn't save this conversation just now, so I didn't answer. Please try again."
)


@dataclass(slots=True)
class _Made:
    """What `_context` made for a turn."""

    entry: SessionEntry
    turn: TurnInput
    raw: list[ChatMessage]
    """The transcript tail as stored (compaction reads it)."""
    fresh: list[Pending]
    """The batch's messages not yet in memory."""
    new: list[ChatMessage]
    """The records this turn stores before the answer: backfill + the fresh messages."""
    now: float
    problems: list[str]
    """One line per file that could not be read, said before the answer."""
    events: list[AgentEvent] = field(default_factory=list)
    """What the agent did besides text (tool calls): stored as records of the turn."""
    usage: Usage | None = None
    """What the agent's answer cost, summed from the `Usage` pieces it yielded (if any)."""


class _AgentFailed(Exception):
    """The agent failed (its error is the cause); `summary` is what compaction made first."""

    def __init__(self, summary: list[ChatMessage]) -> None:
        super().__init__("the agent failed")
        self.summary = summary


class TurnRunner:
    """Runs the turns of every conversation: owns the lanes that order them, and the set
    of keys whose agent is answering here (what a stop can cancel)."""

    def __init__(
        self,
        config: Config,
        store: SessionStore,
        router: Router,
        agents: dict[str, Agent],
        reserver: Reserver,
        metrics: Metrics,
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.store = store
        self.router = router
        self.agents = agents
        """Shared with the gateway (which may swap the default agent)."""
        self.reserver = reserver
        self.metrics = metrics
        self._clock = clock
        self.inbox = InboxSteps(store)
        self.lanes = Lanes(self.run, config.queue, self.inbox.settled)
        self.inbox.lapsed = lambda key: self.give_up([key])
        self.reminders: Reminders | None = None
        """Sets one-shot schedules for the `remind` tool (the gateway's scheduler)."""
        self.streaming: set[SessionKey] = set()
        """Keys whose agent is producing an answer here: what `stop` can cancel."""
        self.live = self.inbox.live
        """Inbox items queued or running here (the adoption scan leaves them alone)."""
        self.watchers = TurnWatchers()
        """Told of each answer here as it grows (the operator console's live view)."""
        self.stops = StopPoller(store, lambda: self.config.queue.stop_poll_s, self.stop)
        """Polls the stop counters of the turns answering here, all in one batch."""

    def stop(self, key: SessionKey) -> bool:
        """Cancel the answer of `key` if its agent is producing it here (True)."""
        return key in self.streaming and self.lanes.stop(key)

    def give_up(self, keys: Sequence[SessionKey] | None = None) -> tuple[int, int]:
        """This process's owner lease lapsed: the inbox items of `keys` (None: all) may
        have been adopted by another process, which answers them. Drop them here and
        cancel the keys' running turns, which end without a reply, a failure message or a
        further edit of what they streamed (the adopter rewrites it in place). Returns
        (queued items dropped, turns cancelled). Items nobody adopted are resumed here
        again by the next scan once the lease is renewed."""
        dropped, cancelled = self.lanes.disown(keys)
        self.live.difference_update(p.item_id for p in dropped)
        return len(dropped), cancelled

    async def _disowned(self, key: SessionKey, batch: list[Pending]) -> bool:
        """After a refused commit: whether the batch's inbox items are no longer this
        process's (its lease lapsed, or another process owns or answered them)."""
        ids = [p.item_id for p in batch if p.item_id]
        if not ids:
            return False
        if not self.store.inbox.lease_held():
            return True
        try:
            return not await self.store.inbox.owned(key, ids)
        except StoreError:
            return False  # unknown: answered again, and the commit's check decides

    async def run(self, key: SessionKey, batch: list[Pending]) -> None:
        poison = [p for p in batch if p.attempts >= POISON_ATTEMPTS]
        if poison:
            await self.inbox.park(key, poison)
            batch = [p for p in batch if p.attempts < POISON_ATTEMPTS]
            if not batch:
                return
        started = time.perf_counter()
        self.metrics.running_turns.inc()
        try:
            async with batch[-1].responder.working():
                outcome, reply = await self._turn(key, batch)
        except asyncio.CancelledError:
            if self.lanes.cancel_reason(key) == "disowned":  # given up: the adopter answers
                self.live.difference_update(p.item_id for p in batch if p.item_id)
                self.metrics.outcome("disowned").inc()
                log.warning("turn of %s given up: its inbox items may be another process's now", key)
            raise
        except Fenced as exc:
            self.metrics.fenced.inc()
            if await self._disowned(key, batch):
                # Another process owns (or answered) these items: it answers; nothing is said here.
                self.live.difference_update(p.item_id for p in batch if p.item_id)
                self.metrics.outcome("disowned").inc()
                log.warning("turn of %s given up (%s): its inbox items are another process's now", key, exc)
                return
            # Nothing of the turn was stored: its messages go back to the front of the lane.
            self.metrics.outcome("fenced").inc()
            attempts = max(p.fenced for p in batch) + 1
            for p in batch:
                p.fenced = attempts
            if attempts < MAX_FENCED_ATTEMPTS:
                log.warning("turn of %s fenced out (%s); answering its messages again", key, exc)
                await batch[-1].responder.on_cancelled("retry")  # its stream starts over
                raise Retry from exc
            log.error("turn of %s fenced out %d times in a row; not answered: %s", key, attempts, exc)
            outcome, reply = "fenced", Reply(STORE_FAILURE_TEXT, "failure", key)
        except StoreError as exc:
            log.error("turn of %s not answered: the store failed: %s", key, exc)
            outcome, reply = "store_error", Reply(STORE_FAILURE_TEXT, "failure", key)
        finally:
            self.metrics.running_turns.dec()
        # Delivered after the turn lock is let go: a commit that was stored is answered,
        # whatever happens to the lease afterwards.
        if outcome in ("answered", "agent_error", "notice"):
            self.live.difference_update(p.item_id for p in batch)  # their commit marked them
        else:  # commands and failures: no commit named them
            await self.inbox.settled(key, batch)
        await self._deliver(batch, reply)
        elapsed = time.perf_counter() - started
        self.metrics.outcome(outcome).inc()
        self.metrics.turn_latency.observe(elapsed)
        self.watchers.finished(key, outcome, elapsed)
        latency_ms = round(elapsed * 1000)
        fields = {
            "key_hash": key_hash(key),
            "session": reply.session_id[:8],
            "turn": reply.turn,
            "outcome": outcome,
            "latency_ms": latency_ms,
            "messages": len(batch),
        }
        log.info(
            "turn key=%s session=%s turn=%d outcome=%s latency_ms=%d messages=%d",
            key,
            reply.session_id[:8] or "-",
            reply.turn,
            outcome,
            latency_ms,
            len(batch),
            extra={"fields": fields},
        )

    async def _turn(self, key: SessionKey, batch: list[Pending]) -> tuple[str, Reply]:
        async with self.store.lock_turn(key) as lease:
            if batch[0].reset:
                keep: str | None = None
                if self.config.session.keep_model_on_reset:
                    old = await self.store.get(key)
                    keep = old.model if old is not None else None
                entry = await self.reserver.reset(key, model=keep)
                self.metrics.sessions_minted.inc()
                log.info("session of %s reset to %s", key, entry.session_id)
                return "reset", Reply(RESET_TEXT, "notice", key, entry.session_id, 0)
            if batch[0].model_command:
                return await self._model_command(key, batch[0])
            if batch[0].notice:
                return await self._notice(lease, batch[0])
            return await self._answer(lease, batch)

    def _settings(self, key: SessionKey) -> tuple[str, AgentSettings]:
        agent_id = parse_key(key).agent
        return agent_id, self.router.settings(agent_id)

    async def _model_command(self, key: SessionKey, command: Pending) -> tuple[str, Reply]:
        """`/model` shows the conversation's model; `/model NAME` switches it (in the lane,
        under the turn lock, so no turn of this conversation runs meanwhile)."""
        _, settings = self._settings(key)
        word = self.config.session.model_command or DEFAULT_MODEL_COMMAND
        name = model_choice.parse_command(command.inbound.text, word) or ""
        if not settings.models:
            return "model", Reply(model_choice.NO_MODELS_TEXT, "notice", key)
        entry = await self.store.get(key)
        chosen = entry.model if entry is not None and self.reserver.freshness.is_fresh(entry) else None
        if not name:
            text = model_choice.describe(settings, chosen, word)
        elif name not in settings.models:
            text = model_choice.refusal(settings, name)
        elif name == model_choice.effective(settings, chosen):
            text = model_choice.MODEL_UNCHANGED_TEXT.format(model=name)
        else:
            updated = None
            for _ in range(3):  # a reset from another process may slip in between
                entry, _created = await self.reserver.resolve(key)
                updated = await self.store.set_model(key, entry.session_id, name)
                if updated is not None:
                    break
            if updated is None:
                raise StoreError(f"the session of {key} kept changing while choosing a model")
            entry = updated
            log.info("conversation %s now uses model %s", key, name)
            text = model_choice.MODEL_SET_TEXT.format(model=name)
        sid, turns = (entry.session_id, entry.turns) if entry is not None else ("", 0)
        return "model", Reply(text, "notice", key, sid, turns)

    async def _notice(self, lease: TurnLease, notice: Pending) -> tuple[str, Reply]:
        """A proactive notice: stored as the bot's record (marked with its origin, so later
        turns know it was said) in one fenced commit, then posted verbatim."""
        entry, _created = await self._resolve(lease.key)
        inbound = notice.inbound
        record = ChatMessage(
            "assistant", inbound.text, self._clock(), inbound.message_id, origin=inbound.origin
        )
        answered = (notice.item_id,) if notice.item_id else ()
        await self._commit(lease, entry, [record], entry.turns, answered)
        return "notice", Reply(inbound.text, "notice", lease.key, entry.session_id, entry.turns)

    def _stop_watch(self, key: SessionKey) -> contextlib.AbstractAsyncContextManager[None]:
        """While the agent answers `key` here, a `/stop` taken by another process (or
        host) stops the turn: the process's one poller reads the key's stop counter
        (core/turn/stopwatch.py). Entered under the turn lock."""
        return self.stops.watch(key)

    async def _answer(self, lease: TurnLease, batch: list[Pending]) -> tuple[str, Reply]:
        """A turn that answers messages, step by step: (lease, held by the caller) ->
        resolve -> context -> agent -> commit; the caller delivers."""
        key = lease.key
        agent_id, settings = self._settings(key)
        agent = self.agents[agent_id]
        entry, created = await self._resolve(key)
        # A session this turn did not mint but finds empty was minted by a reset (`/new`):
        # it starts at the reset, so its backfill holds only what was said after it.
        since = None if created else entry.session_started_at
        made = await self._context(entry, settings, agent, batch, since)
        answered = tuple(p.item_id for p in batch if p.item_id)
        await self.inbox.count_attempt(key, batch)
        self.inbox.track(key, batch)
        model = self.metrics.model(agent_id, parse_key(key).platform)
        began = time.perf_counter()
        try:
            pieces, summary = await self._run_agent(agent, settings, lease, made, batch)
        except _AgentFailed as exc:  # any agent failure: one plain answer, details in the log
            model.errors.inc()
            log.error("agent %s failed on %s", agent.name, key, exc_info=exc.__cause__)
            records = [*exc.summary, *made.new, *tool_records(made.events, self._clock())]
            await self._commit(lease, entry, records, made.turn.turn, answered)
            for p in made.fresh:
                p.recorded = True
            told = settings.failure_message
            if exc.summary:
                told = f"{told}\n\n{COMPACTED_NOTE}"
            return "agent_error", Reply(told, "failure", key, entry.session_id, made.turn.turn)
        model.latency.observe(time.perf_counter() - began)
        answer = "".join(pieces)
        done = [*tool_records(made.events, self._clock()), ChatMessage("assistant", answer, self._clock())]
        records = [*summary, *made.new, *done]
        await self._commit(lease, entry, records, made.turn.turn, answered)
        if summary:  # said once, in the reply of the turn that summarised
            note = f"\n\n{COMPACTED_NOTE}"
            await self.inbox.show(key, batch, note)
            answer += note
        return "answered", Reply(answer, "answer", key, entry.session_id, made.turn.turn, made.usage)

    async def _resolve(self, key: SessionKey) -> tuple[SessionEntry, bool]:
        """The conversation's session (adopted, or minted once across processes) and
        whether this call minted it."""
        entry, created = await self.reserver.resolve(key)
        (self.metrics.sessions_minted if created else self.metrics.reservations_adopted).inc()
        return entry, created

    async def _context(
        self,
        entry: SessionEntry,
        settings: AgentSettings,
        agent: Agent,
        batch: list[Pending],
        since: float | None = None,
    ) -> _Made:
        """What the agent is shown: the transcript tail, the thread read on a session's
        first turn (backfill), the new messages with their files, and their bytes."""
        key = entry.key
        raw = await self.store.tail(entry.session_id, settings.history_limit)
        batch_ids = {p.inbound.message_id for p in batch}
        history = context.without_answered(visible(raw), batch_ids)
        self.inbox.recognise_kept(raw, batch)
        backfill: list[ChatMessage] = []
        if context.wants_backfill(entry.turns, raw):
            backfill = await context.fetch_backfill(batch[0].responder, batch_ids, since)
        fresh = [p for p in batch if not p.recorded]
        intakes = [
            await context.read_attachments(self.store, entry.session_id, p.inbound, self.config.attachments)
            for p in fresh
        ]
        now = self._clock()
        new = [
            ChatMessage(
                "user", p.inbound.text, now, p.inbound.message_id, attachments=i.refs, origin=p.inbound.origin
            )
            for p, i in zip(fresh, intakes, strict=True)
        ]
        recorded_ids = {p.inbound.message_id for p in batch if p.recorded and p.inbound.message_id}
        # Messages cut off by an interrupt are already in memory: show them as new again.
        carried = (
            [m for m in history if m.role == "user" and m.message_id in recorded_ids] if recorded_ids else []
        )
        earlier = backfill + ([m for m in history if m not in carried] if carried else list(history))
        blobs = await context.load_blobs(
            self.store,
            entry.session_id,
            [*earlier, *carried, *new],
            {ref.sha256: data for i in intakes for ref, data in i.files},
            self.config.attachments.history_bytes if getattr(agent, "reads_attachments", True) else 0,
        )
        turn = TurnInput(
            key,
            entry.session_id,
            entry.turns + 1,
            earlier,
            carried + new,
            model=model_choice.effective(settings, entry.model),
            blobs=blobs,
        )
        problems = [line for i in intakes for line in i.problems]
        # backfill is stored with this turn's commit, so no other turn reads the thread again
        return _Made(entry, turn, raw, fresh, backfill + new, now, problems)

    async def _run_agent(
        self, agent: Agent, settings: AgentSettings, lease: TurnLease, made: _Made, batch: list[Pending]
    ) -> tuple[list[str], list[ChatMessage]]:
        """Let the agent stream its answer into the last message's responder (compacting
        a long history first). Returns the pieces and the summary record made, if any.
        A cancel (interrupt, `/stop`, shutdown) keeps the messages in memory as
        interrupted and propagates; an agent failure raises `_AgentFailed`."""
        key = lease.key
        turn = made.turn
        pieces: list[str] = []
        summary: list[ChatMessage] = []
        if made.problems:
            pieces.append("\n".join(made.problems) + "\n\n")
            await self.inbox.show(key, batch, pieces[0])
        self.streaming.add(key)
        self.watchers.started(key)
        try:
            if needs_compaction(settings, made.raw, turn.history, turn.new_messages):
                done = await compact(agent, settings, made.raw, turn.history, now=made.now, where=key)
                if done is not None:
                    turn = replace(turn, history=done.history)
                    summary = [done.summary] if done.summary is not None else []
            async with self._stop_watch(key):
                host = tool_host(
                    self.store.approvals,
                    settings,
                    lease,
                    made.entry.session_id,
                    turn.turn,
                    batch[-1].inbound.user,
                    batch[-1].responder,
                    self.reminders,
                )
                stream = agent.stream(replace(turn, tools=host))
                try:
                    async for piece in stream:
                        if isinstance(piece, Usage):
                            made.usage = piece if made.usage is None else made.usage + piece
                            continue
                        if not isinstance(piece, str):  # an event (protocol 2): status line, records
                            made.events.append(piece)
                            await batch[-1].responder.on_event(piece)
                            continue
                        pieces.append(piece)
                        await self.inbox.show(key, batch, piece)
                        self.watchers.delta(key, piece)
                finally:
                    await _close_stream(stream)
        except asyncio.CancelledError:
            reason = self.lanes.cancel_reason(key)
            if reason == "disowned":  # another process answers: no record, no edit here
                raise
            # Shutdown: messages in the durable inbox are not kept as interrupted; they stay
            # pending and the next process answers them whole (and stores them then).
            backfill = len(made.new) - len(made.fresh)
            kept = [
                (p, m)
                for p, m in zip(made.fresh, made.new[backfill:], strict=True)
                if not (reason == "shutdown" and p.item_id)
            ]
            fresh = [p for p, _ in kept]
            new = [*made.new[:backfill], *(m for _, m in kept)]
            await asyncio.shield(
                asyncio.gather(
                    self._keep_interrupted(lease, made.entry, fresh, new),
                    batch[-1].responder.on_cancelled(reason),
                )
            )
            raise
        except Exception as exc:
            raise _AgentFailed(summary) from exc
        finally:
            self.streaming.discard(key)
            self.watchers.ended(key)
        return pieces, summary

    async def _keep_interrupted(
        self, lease: TurnLease, entry: SessionEntry, fresh: list[Pending], new: list[ChatMessage]
    ) -> None:
        """Keep the messages of a cancelled turn in memory (as interrupted), fenced like
        any commit: after a lost lease it is refused and they are answered afresh."""
        records = [m if m.backfill else replace(m, interrupted=True) for m in new]
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
        self,
        lease: TurnLease,
        entry: SessionEntry,
        records: Sequence[ChatMessage],
        turns: int,
        answered: tuple[str, ...] = (),
    ) -> None:
        """The turn's one write: its records and progress, whole or not at all (fenced).

        Once sent, a commit is seen through: a cancel that lands meanwhile (an interrupt,
        `/stop`) waits for its outcome, and a stored turn is then answered, not redone.
        """
        commit = TurnCommit(
            lease, entry.session_id, uuid.uuid4().hex, records, self._clock(), turns, answered
        )
        sent = asyncio.ensure_future(self.store.commit(commit))
        try:
            await asyncio.shield(sent)
        except asyncio.CancelledError:
            while not sent.done():  # a second cancel (shutdown after `/stop`) waits too
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(sent)
            forget_cancels()
            sent.result()  # stored, refused or failed: that outcome stands
            log.info("a turn of %s was stopped after its commit went out; it is answered", entry.key)

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


async def _close_stream(stream: AsyncIterator[object]) -> None:
    """Finish an agent's stream. A cancellation that hit while the stream waited at a
    `yield` (e.g. during a slow send) is thrown into it, so every agent sees
    `CancelledError` in its stream when its turn is interrupted or stopped."""
    athrow = getattr(stream, "athrow", None)
    frame_alive = getattr(stream, "ag_frame", None) is not None
    if athrow is not None and frame_alive:
        try:
            await athrow(asyncio.CancelledError())
        except (asyncio.CancelledError, StopAsyncIteration):
            pass
        except Exception:
            log.exception("agent stream failed while being cancelled")
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except RuntimeError:  # it yielded again after the cancellation
            log.warning("an agent stream went on after being cancelled")
