"""The ONE shipped test kit, shared by chatlane's tests, its benchmarks and plugin authors.

Like `structlog.testing`, this is public code a user's own tests may import too. It
needs nothing beyond chatlane's runtime dependencies (no pytest), so `bench/` runs from
an installed package without the `tests/` folder. It lives under bots/ because the
fake platforms speak (and fake_slack imports) platform SDKs, which core/ never does.

  fake_discord  FakeDiscord: REST v10 + gateway websocket; edits, deletes, per-route 429s;
                `click` (a button's INTERACTION_CREATE)
  fake_slack    FakeSlack: Web API (incl. native streaming), Socket Mode, signed Events API;
                `block_actions` (a button click)
  mcp_server    a tiny MCP server (official `mcp` SDK; stdio or --http PORT) whose tools
                count their calls: lookup, delete_file, crash, hang, huge
  fake_llm      FakeLLM: an OpenAI-compatible chat-completions server (JSON and SSE),
                recording what each call was shown; delays and failures on demand
  files         small real files for attachment tests: `png`, `log_text`
  server        serve_on_loopback: an aiohttp app on a free 127.0.0.1 port
  agents        test agents at the agent boundary: RecordingAgent, FixedAgent, FlakyAgent,
                SlowStreamAgent; Replies, a responder that collects replies; `reported`,
                the answer messages a responder reports
  board         Board: a fake platform answered through stored `ReplyTarget`s (the inbox)
  polling       `eventually(check)`: wait until a condition holds
  process       `ChatlaneProcess`: a real `chatlane run` child process; `run_cli` for the
                one-shot commands; `write_config` for a minimal config
  redis         `RedisServer`: a throw-away `redis-server` on a free loopback port

The pytest fixtures built on these live in `tests/support/`.
"""

from __future__ import annotations

from bots.testing.agents import FixedAgent, FlakyAgent, RecordingAgent, Replies, SlowStreamAgent, reported
from bots.testing.board import Board, BoardResponder
from bots.testing.fake_llm import FakeLLM
from bots.testing.polling import eventually
from bots.testing.process import ChatlaneProcess, read_status, run_cli, write_config
from bots.testing.redis import RedisServer, find_redis_server, free_port, unique_prefix

__all__ = [
    "Board",
    "BoardResponder",
    "ChatlaneProcess",
    "FakeLLM",
    "FixedAgent",
    "FlakyAgent",
    "RecordingAgent",
    "RedisServer",
    "Replies",
    "SlowStreamAgent",
    "eventually",
    "find_redis_server",
    "free_port",
    "read_status",
    "reported",
    "run_cli",
    "unique_prefix",
    "write_config",
]
