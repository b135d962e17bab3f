"""Tool progress of a Slack answer: what each tool event shows, in Slack's own terms.

A natively streamed answer cannot edit what it appended, so the one status line the
other surfaces edit in place ("🔧 Using lookup…") becomes Slack's streaming task
display instead (bots/slack/stream.py sends it): the status line is the title of the
message's *plan* (a `plan_update` chunk, replaced by each event), and each tool call is
one task card (`task_update`: in progress, then complete or error, with its arguments
as details and its result summary as output). When the answer is final the plan's title
becomes the condensed line ("🔧 Used lookup (2 calls)") and Slack folds the finished
tasks away. Where Slack refuses task chunks, the same line is the assistant thread's
status (`assistant.threads.setStatus`), cleared when the answer is final.
"""

from __future__ import annotations

from slack_sdk.models.messages.chunk import PlanUpdateChunk, TaskUpdateChunk

from core.model import AgentEvent, ApprovalWaiting, ToolFailed, ToolFinished, ToolStarted
from core.turn import ToolStatus

FIELD_LIMIT = 256
"""Slack shows a task's title, details and output up to this many characters each."""
MAX_TASKS = 50
"""Task cards per message at most (later calls still change the plan's title)."""
OPEN = frozenset({"pending", "in_progress"})


def _cap(text: str) -> str:
    return text if len(text) <= FIELD_LIMIT else text[: FIELD_LIMIT - 1] + "…"


class ToolProgress:
    """The tool events of one answer as a title (the status line) and task cards."""

    def __init__(self) -> None:
        self.status = ToolStatus()
        self.line = ""
        """The status line now ("" before any tool event)."""
        self.used = ""
        """The line of the last finished call: the tools used so far, with their count."""
        self.started: list[str] = []
        """The tools of calls that started (a call may end without finishing: stopped)."""

    def update(self, event: AgentEvent) -> tuple[str, TaskUpdateChunk | None] | None:
        """Take `event`: None when it changes nothing shown, else the new status line and
        the task card it changes (None: only the line changed, e.g. waiting for approval)."""
        line = self.status.line(event)
        if line is None:
            return None
        self.line = line
        if isinstance(event, ToolStarted):
            self.started.append(event.tool)
            return line, _task(event.call_id, event.tool, "in_progress", details=event.arguments)
        if isinstance(event, ToolFinished):
            self.used = line
            task = _task(event.call_id, event.tool, "complete", details=event.arguments, output=event.summary)
            return line, task
        if isinstance(event, ToolFailed):
            task = _task(event.call_id, event.tool, "error", details=event.arguments, output=event.reason)
            return line, task
        assert isinstance(event, ApprovalWaiting)  # the one other event ToolStatus shows
        return line, None

    @property
    def summary(self) -> str:
        """The condensed line an answer ends with: the tools used (finished, or started
        when none finished: the answer was cut off), else the last line (e.g. a refusal)."""
        if self.used or not self.started:
            return self.used or self.line
        cut = ToolStatus()  # core's own wording for tools used
        lines = [cut.line(ToolFinished(call_id="", tool=tool)) for tool in self.started]
        return lines[-1] or self.line


def _task(call_id: str, tool: str, status: str, *, details: str = "", output: str = "") -> TaskUpdateChunk:
    return TaskUpdateChunk(
        id=_cap(call_id),
        title=_cap(tool),
        status=status,
        details=_cap(details) if details.strip() else None,
        output=_cap(output) if output.strip() else None,
    )


def title(line: str) -> PlanUpdateChunk:
    return PlanUpdateChunk(title=_cap(line))


def closed(task: TaskUpdateChunk) -> TaskUpdateChunk:
    """`task` as it must end when its message stops: a card left open shows as failed
    anyway (Slack's rendering), so one whose call never finished says so."""
    if task.status not in OPEN:
        return task
    return TaskUpdateChunk(id=task.id, title=task.title, status="error", details=task.details)
