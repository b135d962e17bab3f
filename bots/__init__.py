"""Platform adapters and the CLI: thin translators at the edge, talking to core only
through `core.door.Gateway`.

    runtime.py     Runtime (config, store, agent, gateway, metrics), Service, StartupError
    launcher.py    the adapter registry; builds the config schema; runs enabled bots
    discord/       discord.py: service, inbound, reply, commands, settings, history
    slack/         slack-bolt (Socket Mode, HTTP Events API): service, inbound, reply, settings,
                   history (thread backfill, files)
    http/          aiohttp: the OpenAI-compatible API (service, settings, content parts, idempotency)
    console.py     terminal chat
    __main__.py    the `chatlane` CLI: run, chat, check, sessions
"""
