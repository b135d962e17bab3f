"""OpenAI-compatible HTTP API (aiohttp): /v1/chat/completions, /v1/models, /healthz, /metrics."""
