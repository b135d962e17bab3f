"""The Slack adapter (slack-bolt; Socket Mode and the HTTP Events API).

service: lifecycle and listeners; inbound: event -> Inbound + access facts;
reply: Reply -> chat.postMessage.
"""
