"""Tool approvals on Slack: a question with Approve / Deny buttons (Block Kit actions),
and the click (`block_actions`), which may reach any process of the app (the decision
lives in the store).

The buttons' `action_id`s carry the approval's id; `on_click` decides it through the
gateway: the asker (or an approver) decides and the message is updated in place to say
who decided, without buttons; anyone else gets an ephemeral "not yours". The process
running the turn also updates the question once the decision (or the timeout) is known.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from core.door import Gateway
from core.model import ApprovalDecided, ApprovalWaiting, Decision, StoreError
from core.turn import (
    ALREADY_GONE_TEXT,
    APPROVAL_QUESTION_TEXT,
    APPROVE_LABEL,
    DENY_LABEL,
    NOT_YOURS_TEXT,
    approval_action,
    decision_text,
    parse_approval_action,
)

log = logging.getLogger("chatlane.slack")

Failures = (SlackApiError, aiohttp.ClientError, TimeoutError)


def _mrkdwn(text: str) -> str:
    return text.replace("**", "*")  # Slack's bold is *one* star


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _button(label: str, decision: Decision, approval_id: str, style: str) -> dict[str, Any]:
    return {
        "type": "button",
        "text": {"type": "plain_text", "text": label},
        "style": style,
        "action_id": approval_action(decision, approval_id),
        "value": approval_id,
    }


async def ask(
    client: AsyncWebClient, channel: str, thread_ts: str | None, waiting: ApprovalWaiting
) -> str | None:
    """Post the question with its buttons; its ts, or None (logged) when Slack refused."""
    text = _mrkdwn(
        APPROVAL_QUESTION_TEXT.format(
            tool=waiting.tool, arguments=waiting.arguments, asker=f"<@{waiting.asker}>"
        )
    )
    blocks = [
        _section(text),
        {
            "type": "actions",
            "elements": [
                _button(APPROVE_LABEL, "approved", waiting.approval_id, "primary"),
                _button(DENY_LABEL, "denied", waiting.approval_id, "danger"),
            ],
        },
    ]
    try:
        posted = await client.chat_postMessage(channel=channel, text=text, blocks=blocks, thread_ts=thread_ts)
    except Failures as exc:
        log.error("slack: approval question not posted in %s: %s", channel, exc)
        return None
    return str(posted["ts"])


async def show_decision(client: AsyncWebClient, channel: str, ts: str, decided: ApprovalDecided) -> None:
    by = f"<@{decided.by}>" if decided.by else ""
    text = _mrkdwn(decision_text(decided.tool, decided.decision, by))
    try:
        await client.chat_update(channel=channel, ts=ts, text=text, blocks=[_section(text)])
    except Failures as exc:
        log.warning("slack: approval question %s not updated: %s", ts, exc)


async def on_click(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient, gateway: Gateway) -> None:
    """A `block_actions` click on an approval button (on any process)."""
    await ack()
    actions = body.get("actions") or [{}]
    parsed = parse_approval_action(str(actions[0].get("action_id", "")))
    user = str((body.get("user") or {}).get("id", ""))
    channel = str((body.get("channel") or {}).get("id", ""))
    ts = str((body.get("container") or {}).get("message_ts", ""))
    if parsed is None or not user or not channel:
        return
    decision, approval_id = parsed
    try:
        done = await gateway.decide_approval(approval_id, decision, user)
    except StoreError as exc:
        log.error("slack: approval click not taken: the store failed: %s", exc)
        done = None
    try:
        if (
            done is None
            or done.approval is None
            or (done.outcome != "refused" and done.approval.decision is None)
        ):
            await client.chat_postEphemeral(channel=channel, user=user, text=ALREADY_GONE_TEXT)
        elif done.outcome == "refused":
            await client.chat_postEphemeral(channel=channel, user=user, text=NOT_YOURS_TEXT)
        elif done.approval.decision is not None and ts:
            a = done.approval
            decided = ApprovalDecided(a.approval_id, a.tool, done.approval.decision, a.by)
            await show_decision(client, channel, ts, decided)
    except Failures as exc:
        log.warning("slack: approval click in %s not answered: %s", channel, exc)
