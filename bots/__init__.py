"""Platform adapters (Discord, Slack, an OpenAI-compatible HTTP API, a console) and the CLI."""
