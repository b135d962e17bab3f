"""The one door into core, and the turn pipeline every adapter shares.

Adapters call `submit` (a message), `command` (a conversation command in the platform's
own form: core/door/commands.py), `stop` and `status`; nothing else in core. Resets
go through the conversation's lane like messages, so a `/new` never overtakes a message
sent before it; a stop does not queue (it is about the turn running now).

    submit: agent (bindings, core/routing.py) -> key -> first delivery? (core/dedupe.py)
            -> within [limits]? (core/limits.py) -> a command? (core/door/commands.py) -> lane
    turn:   the gateway has a `TurnRunner` (core/turn/: lease -> resolve -> context ->
            agent -> ONE fenced commit -> deliver), which owns the lanes

The agent id is the key's first part; every agent of the config has its own `Agent`
(or one object serves them all, when a single one is handed in). `/model` is a
command with a turn of its own in the lane, like a reset (core/model_choice.py).

Adapters gate messages (allowlists, mentions: see core/access.py) before `submit`.
A reply is delivered only after its commit is durable. One error path:
when the agent or the store fails, the user gets a short plain message, the log gets
the details, and the user's message is kept in memory where the store allows it.
"""

from __future__ import annotations

import contextvars
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from core.agents import Agent
from core.config import Config
from core.conversation import Freshness, Pending, Reserver, Router
from core.door.commands import STOP_FAILED_TEXT, STOP_SENT_TEXT, STOPPED_HERE_TEXT, Commands
from core.door.dedupe import Deliveries, Delivery, InOrder, Requests
from core.door.limits import Limits
from core.door.proactive import Mode, Proactive, Sent
from core.door.resume import Resumer
from core.door.targets import Targets
from core.model import (
    Approval,
    Closed,
    Decision,
    Inbound,
    InboxItem,
    ItemKind,
    ReplyTarget,
    Responder,
    SessionKey,
    SessionStatus,
    StoreError,
    build_key,
    parse_key,
)
from core.ops import Metrics
from core.store import SessionStore
from core.turn import TurnRunner

log = logging.getLogger("chatlane.gateway")

_TARGET: contextvars.ContextVar[ReplyTarget | None] = contextvars.ContextVar("chatlane_target", default=None)
"""The reply target of the message being handled by `Gateway._queue`, for a command it
turned out to be (commands queue through `Gateway.enqueue` without naming it)."""


@dataclass(frozen=True, slots=True)
class Decided:
    """The outcome of a click on an approval (`Gateway.decide_approval`)."""

    outcome: Literal["decided", "refused", "unknown"]
    approval: Approval | None


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
        self.metrics = metrics or Metrics()
        self.targets = Targets(on_register=self._platform_registered)
        """Adapters register how to answer a stored `ReplyTarget` (resumed and proactive messages)."""
        self.turns = TurnRunner(config, store, self.router, self.agents, self.reserver, self.metrics, clock)
        self.lanes = self.turns.lanes
        self.resumer = Resumer(store, self.targets, self.turns, self.metrics, config.queue.adopt_every_s)
        """The durable inbox's scan: resumes pending items here (core/door/resume.py)."""
        self._clock = clock
        self.metrics.watch_queue(lambda: self.lanes.depth)
        self.deliveries = Deliveries(store, config.dedupe.window_s, self.metrics)
        self.limits = Limits(config.limits, store, self.metrics)
        self.requests = Requests(store, config.dedupe.window_s, self.metrics)
        self._in_order = InOrder()
        self.commands = Commands(self)
        """The conversation commands (/new, /stop, /model, /status), for text and native forms."""
        self.proactive = Proactive(
            config, store, self.enqueue, self.targets, self.requests, self.metrics, clock=clock
        )
        """Proactive sends and `[[schedules]]` (core/door/proactive.py); `start_schedules`
        starts the scheduler."""
        self.turns.reminders = self.proactive.remind  # the `remind` tool's one-shot schedules

    def _platform_registered(self, platform: str) -> None:
        self.resumer.platform_registered(platform)

    def start(self, *, await_adapters: bool = False) -> None:
        """Start resuming the durable inbox (items left by a restart or by dead processes).
        Call once the event loop runs, before adapters take events; each adapter's
        `targets.register` then resumes its platform's items before its new messages.
        `await_adapters`: the caller (the launcher) calls `adapters_started` once every
        adapter is up; items no adapter here answers are reported only from then on."""
        self.resumer.start(await_adapters=await_adapters)

    def adapters_started(self) -> None:
        """Every adapter of this process is up and registered its reply targets."""
        self.resumer.adapters_started()

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

    async def submit(
        self,
        inbound: Inbound,
        responder: Responder,
        *,
        delivery: Sequence[Delivery] = (),
        target: ReplyTarget | None = None,
    ) -> SessionKey:
        """Take one gated message. Returns once it is queued, before it is answered.

        `target` says where the answer goes in a form any process can use (see
        `ReplyTarget`). With a target, the message is in the durable inbox (fsync'd)
        when this returns, so the adapter acknowledges it after: a crash or a deploy
        from then on delays its answer but never loses it (core/door/resume.py). Without
        one it lives in memory only, as before. Messages of a platform whose adapter just
        registered its targets wait until that platform's stored messages are queued.

        `delivery` names the platform delivery (see `core.dedupe.Delivery`): a copy of a
        message any process on the store already took is dropped silently. A sender over
        `[limits]` gets a `limited` reply instead of a turn. Messages of one key reach
        their lane in the order `submit` was called, whatever these checks cost. A stop
        command is not queued: it stops the running answer at once (`stop`) and
        `responder` gets the confirmation.

        Raises ValueError when the message's ids do not make a valid key, and `Closed`
        during shutdown.
        """
        key = self.key_for(inbound)
        if delivery and self.deliveries.seen_here(inbound.platform, delivery):
            return key
        if target is None and not delivery and not self.limits.enabled:
            await self._queue(key, inbound, responder, target)
            return key
        ticket = self._in_order.ticket(key)  # before the first await: arrival order
        try:
            if target is not None:
                await self.resumer.ready(inbound.platform)
            go = not delivery or await self.deliveries.first_in_store(inbound.platform, delivery)
            if go and self.limits.enabled:
                go = await self.limits.admit(inbound, key, responder)
            await ticket.wait()
            if go:
                await self._queue(key, inbound, responder, target)
        finally:
            ticket.done()
        return key

    async def _queue(
        self, key: SessionKey, inbound: Inbound, responder: Responder, target: ReplyTarget | None
    ) -> None:
        """A conversation command acts (`/stop` at once; `/new` and `/model` are queued
        through `enqueue`, in order); a message goes to `enqueue`. A message with a target
        is stored even during the drain (`close`) and left for the next process: chat
        platforms do not deliver it again."""
        if (found := self.commands.find(key, inbound.text)) is not None:
            self.metrics.messages_in.labels(inbound.platform).inc()
            command, arg = found  # /new, /stop, /model, /status typed as a message
            handling = _TARGET.set(target)  # a queued command is an inbox item too
            try:
                await command.act(self, key, inbound, arg, responder)
            finally:
                _TARGET.reset(handling)
            return
        await self.enqueue(key, Pending(inbound, responder), target, counted=True)

    async def enqueue(
        self,
        key: SessionKey,
        pending: Pending,
        target: ReplyTarget | None = None,
        *,
        counted: bool = False,
        due_at: float | None = None,
    ) -> None:
        """Into the lane, through the durable inbox when the message says where its answer
        goes (`target`, or that of the message a command came in, see `_queue`): stored
        (fsync'd) before this returns. Raises `Closed` during shutdown, unless the item was
        stored already (then the next process answers it)."""
        target = target if target is not None else _TARGET.get()
        if target is not None:
            kind: ItemKind = (
                "reset"
                if pending.reset
                else "model"
                if pending.model_command
                else "notice"
                if pending.notice
                else "message"
            )
            item = InboxItem(
                key, uuid.uuid4().hex, kind, pending.inbound, target, self._clock(), due_at=due_at
            )
            # Live before it is stored: the inbox scan must never take it for a leftover.
            self.turns.live.add(item.item_id)
            try:
                stored = await self.store.inbox.append(item)  # durable before the adapter acks
            except StoreError as exc:
                # Still answered while this process lives; only a restart would lose it.
                self.turns.live.discard(item.item_id)
                log.error("inbox of %s: message kept in memory only, the store failed: %s", key, exc)
            except BaseException:
                self.turns.live.discard(item.item_id)
                raise
            else:
                pending.item_id, pending.seq = stored.item_id, stored.seq
        if counted:
            # In `messages_in` once its lane has it (`submit` makes the lane before it awaits):
            # whoever sees the count also sees the work, never the gap of the durable append.
            self.metrics.messages_in.labels(pending.inbound.platform).inc()
        try:
            await self.lanes.submit(key, pending)
        except Closed:
            if pending.item_id:  # stored while the drain began: the next process answers it
                log.info("inbox of %s: a message came in as the drain began; it stays in the inbox", key)
                return
            raise

    def start_schedules(self) -> None:
        """Begin firing schedules, once the adapters registered their reply targets."""
        self.proactive.start()

    async def send(
        self, key: str, text: str, mode: Mode = "prompt", *, idempotency: tuple[str, str] | None = None
    ) -> Sent:
        """Speak first in a conversation: see `Proactive.send` (core/door/proactive.py)."""
        return await self.proactive.send(key, text, mode, idempotency=idempotency)

    async def command(self, key: SessionKey, name: str, arg: str, responder: Responder) -> None:
        """Do the conversation command `name` (core/door/commands.py) for `key`: the door
        every adapter's native command form (slash commands, the terminal) comes through.

        Returns once done (`/stop`, `/status`) or queued in order with the messages before
        it (`/new`, `/model`); `responder` gets a `notice` (or a `failure`). Raises
        ValueError for an unknown command or a malformed key, and `Closed` during shutdown.
        """
        command = self.commands.get(name)
        if command is None:
            raise ValueError(f"no conversation command {name!r}")
        parts = parse_key(key)
        inbound = Inbound(parts.platform, parts.user, parts.channel, "", "", parts.thread)
        await command.act(self, key, inbound, arg, responder)

    async def reset(self, key: SessionKey, responder: Responder) -> None:
        """`command(key, "new", ...)`: a new session once the messages queued before it are answered."""
        await self.command(key, "new", "", responder)

    async def choose_model(self, key: SessionKey, name: str, responder: Responder) -> None:
        """`command(key, "model", name, ...)`: show (`name` "") or switch the conversation's model."""
        await self.command(key, "model", name, responder)

    async def stop(self, key: SessionKey) -> bool:
        """Stop the answer of `key` that is being produced: here at once (True), else by
        asking the store, which every process running a turn of `key` polls (False).

        Its messages stay in memory (marked interrupted), their partial answers are
        marked as stopped, and messages queued behind it still get their turns. Raises
        `StoreError` when the request cannot reach the store.
        """
        if self.turns.stop(key):
            log.info("turn of %s stopped on request", key)
            return True
        await self.store.request_stop(key)
        return False

    async def stop_text(self, key: SessionKey) -> str:
        """`stop`, phrased for the person who asked."""
        try:
            return STOPPED_HERE_TEXT if await self.stop(key) else STOP_SENT_TEXT
        except StoreError as exc:
            log.error("stop of %s not passed on: the store failed: %s", key, exc)
            return STOP_FAILED_TEXT

    async def decide_approval(self, approval_id: str, decision: Decision, user: str) -> Decided:
        """A person clicked Approve or Deny (on any process): decide the stored approval if
        `user` may (the conversation's own user or one of the agent's `approvers`).

        Returns what happened, for the adapter to show: `refused` (someone else clicked;
        nothing changed), `unknown` (no such approval, e.g. long expired), or the approval
        as decided (its `by` says who: an earlier click or the timeout may have won).
        Raises `StoreError` when the store cannot be reached."""
        found = await self.store.approvals.get_approval(approval_id)
        if found is None:
            return Decided("unknown", None)
        if not found.may_decide(user):
            log.info("approval %s: %s may not decide it", approval_id, user)
            return Decided("refused", found)
        decided = await self.store.approvals.decide_approval(approval_id, decision, user)
        return Decided("decided", decided or found)

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

    async def close(self, timeout: float | None = None) -> None:
        """Stop taking messages and firing schedules; let running turns finish within the
        timeout (`queue.drain_s`).

        Messages in the durable inbox that were not answered by then stay there, and
        nobody is told anything: the next process (or another one) answers them."""
        await self.proactive.close()
        await self.resumer.close()
        await self.lanes.close(self.config.queue.drain_timeout_s if timeout is None else timeout)
