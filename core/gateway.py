"""The one door into core, and the turn pipeline every adapter shares.

Adapters call `submit` (a message), `reset` (a new session: slash commands, the CLI)
and `status`; nothing else in core. Resets go through the conversation's lane like
messages, so a `/new` never overtakes a message sent before it.

    submit: agent (bindings, core/routing.py) -> key -> reset or /model command? -> lane
    turn:   turn lock -> resolve (reserver) -> transcript tail -> compaction? (summary
            record, core/compaction.py) -> the key's agent streams the reply -> append
            summary + user + assistant records -> touch the entry -> deliver

The agent id is the key's first part; every agent of the config has its own `Agent`
(or one object serves them all, when a single one is handed in). `/model` is a
command with a turn of its own in the lane, like a reset (core/model_choice.py).

Adapters gate messages (allowlists, mentions: see core/access.py) before `submit`.
A reply is delivered only after its transcript records are durable. One error path:
when the agent or the store fails, the user gets a short plain message, the log gets
the details, and the user's message is kept in memory where the store allows it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import replace

from core import model_choice
from core.compaction import COMPACTED_NOTE, compact, needs_compaction, visible
from core.config import AgentSettings, Config
from core.keys import build_key, parse_key
from core.lanes import Lanes, Pending
from core.metrics import Metrics
from core.reserver import Freshness, Reserver
from core.routing import Router
from core.types import (
    Agent,
    ChatMessage,
    Inbound,
    Reply,
    Responder,
    SessionEntry,
    SessionKey,
    SessionStatus,
    SessionStore,
    StoreError,
    TurnInput,
)

log = logging.getLogger("chatlane.gateway")

RESET_TEXT = "Started a new conversation."
STORE_FAILURE_TEXT = (
    "Sorry, I couldn't save this conversation just now, so I didn't answer. Please try again."
)


class Gateway:
    def __init__(
        self,
        config: Config,
        store: SessionStore,
        agent: Agent | Mapping[str, Agent],
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self.router = Router(config)
        # One Agent object given: it serves every configured agent id (tests, embedders).
        self.agents: dict[str, Agent] = (
            dict(agent) if isinstance(agent, Mapping) else dict.fromkeys(self.router.agents, agent)
        )
        missing = [a for a in self.router.agents if a not in self.agents]
        if missing:
            raise ValueError(f"no Agent given for agent ids {missing}")
        # Built here from the config, so no caller can forget `session.reset`.
        self.reserver = Reserver(store, Freshness.from_settings(config.session.reset), clock=clock)
        self._clock = clock
        self.metrics = metrics or Metrics()
        self.lanes = Lanes(self._run_turn, config.queue)
        self.metrics.watch_queue(lambda: self.lanes.depth)

    @property
    def agent(self) -> Agent:
        """The default agent."""
        return self.agents[self.router.default]

    @agent.setter
    def agent(self, agent: Agent) -> None:
        self.agents[self.router.default] = agent

    def agent_ids(self) -> list[str]:
        """Every configured agent id, in config order."""
        return list(self.router.agents)

    def key_for(self, inbound: Inbound) -> SessionKey:
        """The session key of the conversation `inbound` belongs to (ValueError if invalid).

        The agent is chosen by `[[bindings]]` (or `inbound.agent`), and its id is the
        key's first part, so each agent keeps its own memory of a conversation.
        """
        s = self.config.session
        return build_key(
            self.router.choose(inbound),
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
        model = not reset and self._is_model_command(key, inbound.text)
        await self.lanes.submit(key, Pending(inbound, responder, reset=reset, model_command=model))
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

    async def _run_turn(self, key: SessionKey, batch: list[Pending]) -> None:
        started = time.perf_counter()
        last = batch[-1].responder
        try:
            if batch[0].reset:
                outcome = await self._reset(key, batch[0])
            elif batch[0].model_command:
                outcome = await self._model_command(key, batch[0])
            else:
                async with self.store.lock_turn(key), last.working():
                    outcome = await self._turn_locked(key, batch)
        except StoreError as exc:
            log.error("turn of %s not answered: the store failed: %s", key, exc)
            outcome = "store_error"
            await self._deliver(batch, Reply(STORE_FAILURE_TEXT, "failure", key))
        self.metrics.turns.labels(outcome).inc()
        self.metrics.turn_latency.observe(time.perf_counter() - started)

    async def _reset(self, key: SessionKey, command: Pending) -> str:
        """A new session for the key, in order with the conversation's other messages."""
        keep: str | None = None
        if self.config.session.keep_model_on_reset:
            # Read outside the entry's lock: a /model from another process in this
            # instant may be lost; this process's own are ordered by the lane.
            old = await self.store.get(key)
            keep = old.model if old is not None else None
        entry = await self.reserver.reset(key, model=keep)
        self.metrics.sessions_minted.inc()
        log.info("session of %s reset to %s", key, entry.session_id)
        await command.responder.send(Reply(RESET_TEXT, "notice", key, entry.session_id, 0))
        return "reset"

    def _settings(self, key: SessionKey) -> tuple[str, AgentSettings]:
        agent_id = parse_key(key).agent
        return agent_id, self.router.settings(agent_id)

    def _is_model_command(self, key: SessionKey, text: str) -> bool:
        command = self.config.session.model_command
        return bool(self._settings(key)[1].models) and model_choice.parse_command(text, command) is not None

    async def _model_command(self, key: SessionKey, command: Pending) -> str:
        """`/model` shows the conversation's model; `/model NAME` switches it (in the lane)."""
        _, settings = self._settings(key)
        word = self.config.session.model_command
        name = model_choice.parse_command(command.inbound.text, word) or ""
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
        sid = entry.session_id if entry is not None else ""
        await command.responder.send(Reply(text, "notice", key, sid, entry.turns if entry else 0))
        return "model"

    async def _turn_locked(self, key: SessionKey, batch: list[Pending]) -> str:
        agent_id, settings = self._settings(key)
        agent = self.agents[agent_id]
        entry, created = await self.reserver.resolve(key)
        (self.metrics.sessions_minted if created else self.metrics.reservations_adopted).inc()
        raw = await self.store.tail(entry.session_id, settings.history_limit)
        history = visible(raw)
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
            model_choice.effective(settings, entry.model),
        )
        pieces: list[str] = []
        summary: list[ChatMessage] = []  # the summary record this turn made, if any
        try:
            if needs_compaction(settings, raw, turn.history, turn.new_messages):
                done = await compact(agent, settings, raw, turn.history, now=now, where=key)
                if done is not None:
                    turn = replace(turn, history=done.history)
                    summary = [done.summary] if done.summary is not None else []
            stream = agent.stream(turn)
            try:
                async for piece in stream:
                    pieces.append(piece)
                    await batch[-1].responder.on_delta(piece)
            finally:
                await _close_stream(stream)
        except asyncio.CancelledError:
            await asyncio.shield(self._keep_interrupted(entry, fresh, new))
            raise
        except Exception:  # any agent failure: one plain answer, details in the log
            log.exception("agent %s failed on %s", agent.name, key)
            await self._record(entry, [*summary, *new], turns=1)
            for p in fresh:
                p.recorded = True
            reply = Reply(settings.failure_message, "failure", key, entry.session_id, turn.turn)
            await self._deliver(batch, reply)
            return "agent_error"
        answer = "".join(pieces)
        await self._record(entry, [*summary, *new, ChatMessage("assistant", answer, self._clock())], turns=1)
        if summary:  # said once, in the reply of the turn that summarised
            note = f"\n\n{COMPACTED_NOTE}"
            await batch[-1].responder.on_delta(note)
            answer += note
        await self._deliver(batch, Reply(answer, "answer", key, entry.session_id, turn.turn))
        return "answered"

    async def _keep_interrupted(
        self, entry: SessionEntry, fresh: list[Pending], new: list[ChatMessage]
    ) -> None:
        records = [ChatMessage(m.role, m.content, m.at, m.message_id, interrupted=True) for m in new]
        try:
            await self.store.append(entry.session_id, records)
        except StoreError as exc:
            log.error("interrupted turn of %s: could not keep its messages: %s", entry.key, exc)
            return
        for p in fresh:
            p.recorded = True

    async def _record(self, entry: SessionEntry, records: Sequence[ChatMessage], turns: int) -> None:
        """Store the turn's records and count it; both are durable before this returns.

        The two writes touch different files, so their fsyncs run at the same time. A
        crash between them can leave the count one ahead of the transcript; the reply
        was not sent then, and no memory is lost.
        """
        appended, touched = await asyncio.gather(
            self.store.append(entry.session_id, records),
            self.store.touch(entry.key, entry.session_id, at=self._clock(), turns=turns),
            return_exceptions=True,
        )
        for outcome in (appended, touched):
            if isinstance(outcome, BaseException):
                raise outcome
        if touched is None:
            log.warning("session of %s was reset during a turn; the turn stays in the old one", entry.key)

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


async def _close_stream(stream: AsyncIterator[str]) -> None:
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
