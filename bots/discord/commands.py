"""Slash commands: `/new` and `/reset` start a new conversation, `/status` shows it,
`/stop` stops the answer in progress (in whichever process runs it).

The same gating applies as for messages (allowlists, DM policy; a command is always
addressed to the bot, so no mention is needed). `/new`, `/reset` and `/stop` typed as
text are handled by the gateway itself (`session.reset_commands`, `session.stop_commands`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import discord
from discord import app_commands

from bots.discord.inbound import read_interaction
from bots.discord.model_command import add_model_command
from bots.discord.reply import PlatformFailure, describe_failure
from bots.discord.settings import DiscordSettings
from bots.runtime import Runtime
from core.door import Facts, Seen
from core.model import Closed, StoreError
from core.turn import FutureResponder, confirm_reset

log = logging.getLogger("chatlane.discord")

NOT_HERE_TEXT = "I'm not set up to answer here."
COMMAND_WAIT_S = 2.0
"""Discord wants an answer to an interaction within 3 s."""
RESET_FAILED_TEXT = "Sorry, I couldn't start a new conversation just now. Please try again."


def build_tree(
    client: discord.Client, runtime: Runtime, refusal: Callable[[Facts], str | None]
) -> app_commands.CommandTree[discord.Client]:
    """A command tree with /new, /reset, /status and /stop, attached to `client`.

    `refusal` is the service's gate (the same as for messages): why a caller may not
    use the bot here, or None.
    """
    tree: app_commands.CommandTree[discord.Client] = app_commands.CommandTree(client)
    settings = runtime.loaded.section(DiscordSettings)
    gateway = runtime.gateway

    async def admitted(interaction: discord.Interaction[discord.Client]) -> Seen | None:
        """The command's caller, translated, or None (and told so) when refused here."""
        seen = read_interaction(interaction, settings)
        if (why := refusal(seen.facts)) is not None:
            log.debug("discord: /%s from %s refused: %s", _name(interaction), seen.inbound.user, why)
            await _answer(interaction, NOT_HERE_TEXT, ephemeral=True)
            return None
        return seen

    async def reset(interaction: discord.Interaction[discord.Client]) -> None:
        if (seen := await admitted(interaction)) is None:
            return
        key = gateway.key_for(seen.inbound)
        responder = FutureResponder()
        try:
            text = await confirm_reset(gateway.reset(key, responder), responder, COMMAND_WAIT_S)
        except Closed:
            text = RESET_FAILED_TEXT
        # A shared (channel-scope) conversation was reset for everyone: say so openly.
        shared = runtime.loaded.config.session.scope == "channel"
        await _answer(interaction, text, ephemeral=not shared)

    async def stop(interaction: discord.Interaction[discord.Client]) -> None:
        if (seen := await admitted(interaction)) is None:
            return
        text = await gateway.stop_text(gateway.key_for(seen.inbound))
        await _answer(interaction, text, ephemeral=runtime.loaded.config.session.scope != "channel")

    async def status(interaction: discord.Interaction[discord.Client]) -> None:
        if (seen := await admitted(interaction)) is None:
            return
        key = gateway.key_for(seen.inbound)
        try:
            entry = (await gateway.status(key)).entry
        except StoreError as exc:
            log.error("discord: /status for %s failed: the store failed: %s", key, exc)
            await _answer(
                interaction, RESET_FAILED_TEXT.replace("start a new conversation", "look"), ephemeral=True
            )
            return
        if entry is None:
            text = f"No conversation here yet.\nSession key: `{key}`"
        else:
            text = f"Session key: `{key}`\nSession id: `{entry.session_id}`\nTurns: {entry.turns}"
        await _answer(interaction, text, ephemeral=True)

    for name, about, callback in (
        ("new", "Start a new conversation (forget this one)", reset),
        ("reset", "Start a new conversation (forget this one)", reset),
        ("status", "Show this conversation's session and turn count", status),
        ("stop", "Stop the answer in progress", stop),
    ):
        tree.add_command(app_commands.Command(name=name, description=about, callback=callback))
    add_model_command(tree, runtime, admitted)

    @tree.error
    async def on_tree_error(
        interaction: discord.Interaction[discord.Client], error: app_commands.AppCommandError
    ) -> None:
        log.error("discord: /%s failed", _name(interaction), exc_info=error)

    return tree


async def sync_commands(tree: app_commands.CommandTree[discord.Client]) -> None:
    """Register the commands with Discord; a failure is logged, never raised."""
    try:
        synced = await tree.sync()
    except PlatformFailure as exc:
        log.error(
            "discord: could not register the slash commands (text /new and /reset still work): %s",
            describe_failure(exc, "invite the bot with the applications.commands scope"),
        )
        return
    log.info("discord: registered slash commands %s", ", ".join(f"/{c.name}" for c in synced))


async def _answer(interaction: discord.Interaction[discord.Client], text: str, *, ephemeral: bool) -> None:
    try:
        await interaction.response.send_message(text, ephemeral=ephemeral)
    except PlatformFailure as exc:
        log.error(
            "discord: could not answer /%s: %s",
            _name(interaction),
            describe_failure(exc, "the bot needs Use Application Commands"),
        )


def _name(interaction: discord.Interaction[discord.Client]) -> str:
    return interaction.command.name if interaction.command is not None else "?"
