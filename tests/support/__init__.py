"""What the tests share, in one place.

Shipped with chatlane (no pytest; the benchmarks use them too), in `bots.testing`:
test agents (RecordingAgent, FixedAgent, FlakyAgent, Replies), `eventually` (the one
way to wait for a condition), `ChatlaneProcess` / `run_cli` / `write_config` (the one
process runner: `chatlane` as a user runs it) and `RedisServer`.

Here, for pytest only:
  http      `serve(tmp_path, ...)`: the real HTTP API in the test's process; `body`
  discord   fixtures `fake` (a FakeDiscord) and `start_bot`; `Bot`, `StartBot`
  slack     `running(tmp_path, transport)`; `Bot`, `mention`, `submitted`
  redis     fixtures `redis_server`, `private_redis_server`; `require_redis_server`

The fixtures of `discord` and `redis` are registered for every test in tests/conftest.py.
The fake Discord and Slack servers are shipped too, in `bots.testing`; the fake
OpenAI-compatible server stays in `tests/fakes/`.
"""
