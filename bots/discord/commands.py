"""Slash commands: the conversation commands of core/door/commands.py (`/new`, `/reset`,
`/stop`, `/model [name]`, `/status`), one Discord slash command per name.

The same gating applies as for messages (allowlists, DM policy; a command is always
addressed to the bot, so no mention is needed). The texts are core's, the same as in
Slack and the terminal; this module only maps an interaction onto `commands.answer`.
The same words typed as a message are handled by the gateway itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

import discord
from discord import app_commands

from bots.discord.inbound import read_interaction
from bots.discord.reply import PlatformFailure, describe_failure
from bots.discord.settings import DiscordSettings
from bots.runtime import Runtime
from core.door import NOT_HERE_TEXT, Command, Facts

log = logging.getLogger("chatlane.discord")

Callback = Callable[..., Coroutine[Any, Any, None]]


def build_tree(
    client: discord.Client, runtime: Runtime, refusal: Callable[[Facts], str | None]
) -> app_commands.CommandTree[discord.Client]:
    """A command tree with every conversation command (and its aliases), attached to `client`.

    `refusal` is the service's gate (the same as for messages): why a caller may not
    use the bot here, or None.
    """
    tree: app_commands.CommandTree[discord.Client] = app_commands.CommandTree(client)
    settings = runtime.loaded.section(DiscordSettings)
    gateway = runtime.gateway

    async def run(interaction: discord.Interaction[discord.Client], command: Command, arg: str) -> None:
        seen = read_interaction(interaction, settings)
        if (why := refusal(seen.facts)) is not None:
            log.debug("discord: /%s from %s refused: %s", _name(interaction), seen.inbound.user, why)
            await _answer(interaction, NOT_HERE_TEXT, ephemeral=True)
            return
        answer = await gateway.commands.answer(gateway.key_for(seen.inbound), command.name, arg)
        await _answer(interaction, answer.text, ephemeral=answer.private)

    def callback_for(command: Command) -> Callback:
        if not command.arg:

            async def plain(interaction: discord.Interaction[discord.Client]) -> None:
                await run(interaction, command, "")

            return plain

        # discord.py reads the option from the parameter, so its name is fixed here: `name`.
        @app_commands.describe(name=command.arg_about)
        async def with_arg(interaction: discord.Interaction[discord.Client], name: str | None = None) -> None:
            await run(interaction, command, (name or "").strip())

        return with_arg

    for command in gateway.commands.all:
        for name in (command.name, *command.aliases):
            tree.add_command(
                app_commands.Command(name=name, description=command.about, callback=callback_for(command))
            )

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
