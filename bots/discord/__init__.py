"""The Discord adapter (discord.py).

service: connection lifecycle; inbound: Message -> Inbound + access facts;
reply: Reply -> Discord messages; commands: the slash commands.
"""
