"""What a turn offers an agent that calls tools (`TurnTools`, the agent contract's
`ToolHost`), and the records its tool calls leave in the transcript.

Approvals: the pending approval is stored first (any process may then take the click:
`Gateway.decide_approval`), the responder is asked (`ask_approval`: buttons on Discord
and Slack, y/n on the console, the HTTP API's pre-approval header), and the turn polls
the store until someone with the right decides or `approval_timeout_s` passes (then it
decides "timeout" itself; a click that won the race still stands). The approval id is
derived from the turn and the call, so a resumed turn finds the same approval.

Outcomes: each tool call's outcome is stored (keyed by the turn and the call) before the
model sees it; a resumed turn (same session, same turn number) reuses it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from core.agents import ToolHost, ToolOutcome
from core.config import AgentSettings
from core.model import (
    AgentEvent,
    Approval,
    ApprovalDecided,
    ApprovalWaiting,
    ChatMessage,
    Decision,
    Responder,
    StoreError,
    ToolFailed,
    ToolFinished,
    TurnLease,
)
from core.store import Approvals

log = logging.getLogger("chatlane.tools")


class Reminders(Protocol):
    """Sets a one-shot schedule (the door's `Proactive.remind`; None where there is none)."""

    async def __call__(self, key: str, text: str, at: datetime, *, name: str = "") -> str: ...


APPROVAL_QUESTION_TEXT = "🔐 May I use **{tool}** with `{arguments}`? (asked by {asker})"
APPROVE_LABEL, DENY_LABEL = "Approve", "Deny"
DECISION_TEXTS = {
    "approved": "✅ **{tool}** approved by {by}",
    "denied": "🚫 **{tool}** denied by {by}",
    "timeout": "⌛ **{tool}**: nobody decided in time, so it was not used",
}
"""What the question turns into once decided (its buttons gone); `{by}` is a mention."""
NOT_YOURS_TEXT = "Only the person who asked (or an approver) can decide this."
ALREADY_GONE_TEXT = "This question is no longer open."
APPROVAL_ACTION_PREFIX = "chatlane-approval"
"""Buttons' ids: `chatlane-approval:approved:<id>` / `chatlane-approval:denied:<id>`."""


def approval_action(decision: Decision, approval_id: str) -> str:
    return f"{APPROVAL_ACTION_PREFIX}:{decision}:{approval_id}"


def parse_approval_action(action: str) -> tuple[Decision, str] | None:
    """(decision, approval id) of a button id, None when it is not one of ours."""
    prefix, _, rest = action.partition(":")
    decision, _, approval_id = rest.partition(":")
    if prefix != APPROVAL_ACTION_PREFIX or not approval_id:
        return None
    if decision == "approved":
        return "approved", approval_id
    if decision == "denied":
        return "denied", approval_id
    return None


def decision_text(tool: str, decision: Decision, by: str) -> str:
    return DECISION_TEXTS[decision].format(tool=tool, by=by)


APPROVAL_POLL_S = 0.2
"""How often a waiting turn reads its approval (a click may land on any process)."""


class TurnTools:
    """The `ToolHost` of one turn. See the module doc."""

    def __init__(
        self,
        approvals: Approvals,
        settings: AgentSettings,
        key: str,
        turn_id: str,
        asker: str,
        responder: Responder,
        reminders: Reminders | None = None,
    ) -> None:
        self.reminders = reminders
        self.approvals = approvals
        self.settings = settings
        self.key = key
        self.turn_id = turn_id
        self.asker = asker
        self.responder = responder

    async def approve(self, call_key: str, tool: str, arguments: str) -> Decision:
        approval_id = hashlib.sha256(f"{self.turn_id}|{call_key}".encode()).hexdigest()[:32]
        try:
            found = await self.approvals.get_approval(approval_id)
            if found is None:
                found = Approval(
                    approval_id,
                    self.key,
                    self.asker,
                    self.settings.approvers,
                    tool,
                    arguments,
                    time.time() + self.settings.approval_timeout_s,
                )
                await self.approvals.open_approval(found)
        except StoreError as exc:
            log.error("approval for tool %s not stored, so denied: %s", tool, exc)
            return "denied"
        if found.decision is None:
            waiting = ApprovalWaiting(
                approval_id, tool, arguments, self.asker, self.settings.approval_timeout_s
            )
            await self.responder.on_event(waiting)
            here = await _ask(self.responder, waiting)
            if here is not None:  # decided where the turn runs (console, HTTP)
                found = await self.approvals.decide_approval(approval_id, here, self.asker) or found
            found = await self._wait(found)
        decision = found.decision or "timeout"
        log.info("tool %s on %s: %s by %s", tool, self.key, decision, found.by or "(timeout)")
        await self.responder.on_event(ApprovalDecided(approval_id, tool, decision, found.by))
        return decision

    async def _wait(self, approval: Approval) -> Approval:
        while approval.decision is None:
            if time.time() >= approval.deadline:
                decided = await self.approvals.decide_approval(approval.approval_id, "timeout", "")
                return decided or approval
            await asyncio.sleep(min(APPROVAL_POLL_S, max(0.0, approval.deadline - time.time())))
            try:
                approval = await self.approvals.get_approval(approval.approval_id) or approval
            except StoreError as exc:
                log.warning("approval %s unreadable for now: %s", approval.approval_id, exc)
        return approval

    async def recall(self, call_key: str) -> ToolOutcome | None:
        try:
            obj = await self.approvals.get_tool_outcome(self.turn_id, call_key)
        except StoreError as exc:
            log.warning("stored tool outcome unreadable: %s", exc)
            return None
        if obj is None:
            return None
        decision = obj.get("decision")
        return ToolOutcome(
            decision if decision in ("approved", "denied", "timeout") else None,
            str(obj.get("text", "")),
            bool(obj.get("error", False)),
        )

    async def remind(self, call_key: str, text: str, at: datetime) -> str:
        if self.reminders is None:
            raise ValueError("reminders cannot be set here")
        name = "remind-" + hashlib.sha256(f"{self.turn_id}|{call_key}".encode()).hexdigest()[:16]
        return await self.reminders(self.key, text, at, name=name)

    async def remember(self, call_key: str, outcome: ToolOutcome) -> None:
        obj: dict[str, Any] = {"decision": outcome.decision, "text": outcome.text, "error": outcome.error}
        try:
            await self.approvals.put_tool_outcome(self.turn_id, call_key, obj)
        except StoreError as exc:  # the call ran; a resumed turn may run it again
            log.error("tool outcome not stored: %s", exc)


async def _ask(responder: Responder, waiting: ApprovalWaiting) -> Decision | None:
    """The responder decides at once (console, HTTP), or None: a person clicks (buttons)."""
    ask = getattr(responder, "ask_approval", None)
    if ask is None:
        return "denied"  # a responder that cannot ask anyone: a clear no
    try:  # past the timeout the waiting turn decides "timeout" itself
        decision: Decision | None = await asyncio.wait_for(ask(waiting), waiting.timeout_s)
    except TimeoutError:
        return None
    return decision


def tool_host(
    approvals: Approvals,
    settings: AgentSettings,
    lease: TurnLease,
    session_id: str,
    turn: int,
    asker: str,
    responder: Responder,
    reminders: Reminders | None = None,
) -> ToolHost:
    """The turn's host; its calls are keyed by session and turn number (a resumed turn
    has the same ones)."""
    return TurnTools(approvals, settings, lease.key, f"{session_id}:{turn}", asker, responder, reminders)


TOOL_LINE = "[tool {tool} {arguments}: {how}]"


def tool_records(events: Sequence[AgentEvent], at: float) -> list[ChatMessage]:
    """One short transcript record per finished or failed tool call, in order."""
    out: list[ChatMessage] = []
    for e in events:
        if isinstance(e, ToolFinished):
            how = f"ok, {e.summary}" + (" (stored result reused)" if e.reused else "")
        elif isinstance(e, ToolFailed):
            how = f"failed: {e.reason}"
        else:
            continue
        line = TOOL_LINE.format(tool=e.tool, arguments=e.arguments or "{}", how=how)
        out.append(ChatMessage("assistant", line, at, tool=e.tool, tool_arguments=e.arguments))
    return out
