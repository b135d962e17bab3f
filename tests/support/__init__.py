"""The pytest side of the test kit: fixtures and helpers that need pytest.

Everything shipped (no pytest; the benchmarks and plugin authors use it too) is in
`bots.testing`: the fake Discord, Slack and OpenAI-compatible servers, test agents,
`eventually` (the one way to wait for a condition), `ChatlaneProcess` / `run_cli` /
`write_config` (the one process runner) and `RedisServer`.

Here, for pytest only:
  http      `serve(tmp_path, ...)`: the real HTTP API in the test's process; `body`
  discord   fixtures `fake` (a FakeDiscord) and `start_bot`; `Bot`, `StartBot`
  slack     `running(tmp_path, transport)`; `Bot`, `mention`, `submitted`
  llm       fixture `llm` (a FakeLLM); `model_agent`, `untimed`
  plugins   a plugin distribution installed for a test (entry points)
  redis     fixtures `redis_server`, `private_redis_server`; `require_redis_server`

The fixtures of `discord`, `llm`, `plugins` and `redis` are registered for every test
in tests/conftest.py. tests/fakes/plugin_agents.py holds plugin agents written as a
user outside chatlane would (imported by `factory = "tests.fakes.plugin_agents:..."`).
"""
