"""What the store keeps of scheduled fires: one claim per fire, one mark per schedule.

A fire is one due time of one schedule; its id is the schedule's name and that time in
UTC (`fire_id`), the same in every process, so a fire is claimed once across them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

FireState = Literal["mine", "taken", "done"]


def fire_id(schedule: str, due: float) -> str:
    """`standup@2026-12-04T08:00:00.000Z`: the same id for one slot in every process."""
    when = datetime.fromtimestamp(due, UTC)
    return f"{schedule}@{when.strftime('%Y-%m-%dT%H:%M:%S')}.{when.microsecond // 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class FireClaim:
    """`claim_fire`: `mine` (this token owns the fire: run it), `taken` (another owner's
    lease is live), `done` (finished, or at or before the schedule's mark).

    `takeover`: mine, but an earlier owner's lease lapsed (it died or stalled): whatever
    it did may have been stored, so look before firing again."""

    state: FireState
    takeover: bool = False
    outcome: str = ""


@dataclass(frozen=True, slots=True)
class FireMark:
    """A schedule's progress: every slot at or before `due` was handled (fired or skipped);
    `fire`, `outcome` and `at` describe the last one handled."""

    due: float
    fire: str = ""
    outcome: str = ""
    at: float = 0.0

    def to_json(self) -> dict[str, object]:
        return {"due": self.due, "fire": self.fire, "outcome": self.outcome, "at": self.at}

    @classmethod
    def from_json(cls, obj: object) -> FireMark:
        """ValueError when `obj` is not a stored mark."""
        if not isinstance(obj, dict) or not isinstance(obj.get("due"), int | float):
            raise ValueError("not a schedule mark")
        return cls(
            float(obj["due"]),
            str(obj.get("fire", "")),
            str(obj.get("outcome", "")),
            float(obj.get("at", 0.0)),
        )
