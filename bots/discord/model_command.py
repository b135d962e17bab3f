"""`/model [name]`: show or switch this conversation's model (agents with `models`).

The same gating as the other commands; the choice goes through the gateway, in order
with the conversation's messages, and is answered only to the person who asked
(ephemeral), unless the conversation is shared by the channel (`session.scope`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import discord
from discord import app_commands

from bots.discord.reply import PlatformFailure, describe_failure
from bots.runtime import Runtime
from core.door import Seen
from core.model import Closed
from core.turn import FutureResponder

log = logging.getLogger("chatlane.discord")

MODEL_QUEUED_TEXT = "I'll switch the model as soon as I've answered what's before it."
MODEL_FAILED_TEXT = "Sorry, I couldn't change the model just now. Please try again."
COMMAND_WAIT_S = 2.0
"""Discord wants an answer to an interaction within 3 s."""


Admitted = Callable[[discord.Interaction[discord.Client]], Awaitable[Seen | None]]


def add_model_command(
    tree: app_commands.CommandTree[discord.Client], runtime: Runtime, admitted: Admitted
) -> None:
    """Add `/model`; `admitted` is the tree's gate (it tells a refused caller itself)."""
    gateway = runtime.gateway

    @app_commands.describe(name="the model to use from now on (leave out to see the choices)")
    async def model(interaction: discord.Interaction[discord.Client], name: str | None = None) -> None:
        if (seen := await admitted(interaction)) is None:
            return
        key = gateway.key_for(seen.inbound)
        responder = FutureResponder()
        try:
            await gateway.choose_model(key, (name or "").strip(), responder)
            reply = await asyncio.wait_for(asyncio.shield(responder.reply), COMMAND_WAIT_S)
            text = reply.text
        except TimeoutError:
            text = MODEL_QUEUED_TEXT
        except Closed:
            text = MODEL_FAILED_TEXT
        shared = runtime.loaded.config.session.scope == "channel"
        await _answer(interaction, text, ephemeral=not shared)

    tree.add_command(
        app_commands.Command(
            name="model", description="Show or switch this conversation's model", callback=model
        )
    )


async def _answer(interaction: discord.Interaction[discord.Client], text: str, *, ephemeral: bool) -> None:
    try:
        await interaction.response.send_message(text, ephemeral=ephemeral)
    except PlatformFailure as exc:
        log.error(
            "discord: could not answer /model: %s",
            describe_failure(exc, "the bot needs Use Application Commands"),
        )
