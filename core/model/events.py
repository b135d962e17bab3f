"""What an agent may yield besides text, and what a tool call leaves behind.

An agent's `stream()` yields `str` (a piece of the answer) or one of the small events
below; adapters show events as ONE status line edited in place ("Using search…"), never
a message per call. They live with the shared shapes (not in core/agents) because the
`Responder` an adapter implements takes them (`on_event`), and core/model is the one
room every other room may import; `core.agents` re-exports them for agent authors.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

SECRET_WORDS = ("token", "password", "passwd", "secret", "api_key", "apikey", "authorization", "credential")
"""An argument whose name contains one of these is shown and stored as `REDACTED`."""
REDACTED = "«redacted»"


@dataclass(frozen=True, slots=True)
class ToolStarted:
    """A tool call began (after its approval, if it needed one)."""

    call_id: str
    tool: str
    arguments: str = ""
    """The call's arguments as shown to people: JSON with secrets redacted, capped."""


@dataclass(frozen=True, slots=True)
class ToolFinished:
    call_id: str
    tool: str
    arguments: str = ""
    summary: str = ""
    """A short line about the result ("312 characters"), for the transcript and status."""
    reused: bool = False
    """The result was stored by an earlier run of this turn (a resumed turn): not run again."""


@dataclass(frozen=True, slots=True)
class ToolFailed:
    call_id: str
    tool: str
    reason: str
    """Short, for people and the log: "timed out", "the tool server stopped", "denied"."""
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class ApprovalWaiting:
    """The turn pauses until a person approves or denies a tool call."""

    approval_id: str
    tool: str
    arguments: str
    """Redacted, capped JSON, as the question shows it."""
    asker: str
    """The platform user whose message the turn answers (who may decide, with approvers)."""
    timeout_s: float


@dataclass(frozen=True, slots=True)
class ApprovalDecided:
    approval_id: str
    tool: str
    decision: Decision
    by: str
    """Who decided: a platform user id, or "" for a timeout."""


Decision = Literal["approved", "denied", "timeout"]

AgentEvent = ToolStarted | ToolFinished | ToolFailed | ApprovalWaiting | ApprovalDecided
"""Every event an agent may yield (and the turn passes to `Responder.on_event`)."""


def redact(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """`arguments` with every value whose key names a secret replaced, at any depth."""
    out: dict[str, Any] = {}
    for name, value in arguments.items():
        lowered = str(name).lower()
        if any(word in lowered for word in SECRET_WORDS):
            out[name] = REDACTED
        elif isinstance(value, Mapping):
            out[name] = redact(value)
        elif isinstance(value, list):
            out[name] = [redact(v) if isinstance(v, Mapping) else v for v in value]
        else:
            out[name] = value
    return out


def shown_arguments(arguments: Mapping[str, Any], limit: int = 300) -> str:
    """Arguments as people see them: redacted JSON, cut at `limit` characters."""
    text = json.dumps(redact(arguments), ensure_ascii=False, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True, slots=True)
class Approval:
    """A tool call waiting for a person, as the store keeps it: any process may show it,
    take the click and decide it; the process running the turn waits for the decision."""

    approval_id: str
    key: str
    """The conversation's session key."""
    asker: str
    """The platform user whose message the turn answers: may decide."""
    approvers: tuple[str, ...]
    """Others who may decide (the agent's `approvers`)."""
    tool: str
    arguments: str
    deadline: float
    """Wall-clock time after which the waiting turn denies it (decision "timeout")."""
    decision: Decision | None = None
    by: str = ""

    def may_decide(self, user: str) -> bool:
        return user == self.asker or user in self.approvers

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.approval_id,
            "key": self.key,
            "asker": self.asker,
            "approvers": list(self.approvers),
            "tool": self.tool,
            "arguments": self.arguments,
            "deadline": self.deadline,
            "decision": self.decision,
            "by": self.by,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Approval:
        """ValueError when `obj` is not a stored approval."""
        try:
            decision = obj.get("decision")
            if decision not in (None, "approved", "denied", "timeout"):
                raise ValueError(f"unknown decision {decision!r}")
            return cls(
                str(obj["id"]),
                str(obj["key"]),
                str(obj["asker"]),
                tuple(str(a) for a in obj.get("approvers", ())),
                str(obj["tool"]),
                str(obj.get("arguments", "")),
                float(obj["deadline"]),
                decision,
                str(obj.get("by", "")),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a stored approval: {exc}") from exc
