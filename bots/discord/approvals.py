"""Tool approvals on Discord: a question with Approve / Deny buttons (message components),
and the click, which may reach any process of the bot (the decision lives in the store).

The buttons carry the approval's id; the question is answered with a component
interaction that `on_click` decides through the gateway: the asker (or an approver)
decides, and the message is updated in place to say who decided, without buttons;
anyone else gets an ephemeral "not yours". The process running the turn also edits
the question once the decision (or the timeout) is known, so it reads right whichever
process took the click.
"""

from __future__ import annotations

import logging

import discord

from bots.discord.failures import PlatformFailure, describe_failure
from core.door import Gateway
from core.model import ApprovalDecided, ApprovalWaiting, StoreError
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

log = logging.getLogger("chatlane.discord")


def _view(approval_id: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(
        discord.ui.Button(
            label=APPROVE_LABEL,
            style=discord.ButtonStyle.success,
            custom_id=approval_action("approved", approval_id),
        )
    )
    view.add_item(
        discord.ui.Button(
            label=DENY_LABEL,
            style=discord.ButtonStyle.danger,
            custom_id=approval_action("denied", approval_id),
        )
    )
    return view


async def ask(channel: discord.abc.Messageable, waiting: ApprovalWaiting) -> discord.Message | None:
    """Post the question with its buttons; None (logged) when Discord refused it."""
    view = _view(waiting.approval_id)
    text = APPROVAL_QUESTION_TEXT.format(
        tool=waiting.tool, arguments=waiting.arguments, asker=f"<@{waiting.asker}>"
    )
    try:
        message = await channel.send(text, view=view)
    except PlatformFailure as exc:
        log.error(
            "discord: approval question not posted: %s", describe_failure(exc, "give the bot Send Messages")
        )
        return None
    finally:
        view.stop()  # clicks are taken by `on_click` (any process), not by this view object
    return message


async def show_decision(message: discord.Message, decided: ApprovalDecided) -> None:
    by = f"<@{decided.by}>" if decided.by else ""
    try:
        await message.edit(content=decision_text(decided.tool, decided.decision, by), view=None)
    except PlatformFailure as exc:
        log.warning("discord: approval question not updated: %s", describe_failure(exc, ""))


async def on_click(interaction: discord.Interaction[discord.Client], gateway: Gateway) -> bool:
    """Take a click on an approval button (True), or leave the interaction (False)."""
    custom_id = (interaction.data or {}).get("custom_id") if interaction.data else None
    parsed = parse_approval_action(str(custom_id or ""))
    if interaction.type != discord.InteractionType.component or parsed is None:
        return False
    decision, approval_id = parsed
    user = str(interaction.user.id)
    try:
        done = await gateway.decide_approval(approval_id, decision, user)
    except StoreError as exc:
        log.error("discord: approval click not taken: the store failed: %s", exc)
        await interaction.response.send_message(ALREADY_GONE_TEXT, ephemeral=True)
        return True
    if done.outcome == "refused":
        await interaction.response.send_message(NOT_YOURS_TEXT, ephemeral=True)
    elif done.approval is None or done.approval.decision is None:
        await interaction.response.send_message(ALREADY_GONE_TEXT, ephemeral=True)
    else:
        a, decided = done.approval, done.approval.decision
        by = f"<@{a.by}>" if a.by else ""
        await interaction.response.edit_message(content=decision_text(a.tool, decided, by), view=None)
    return True
