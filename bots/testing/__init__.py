"""Test support for the adapters, shipped with chatlane like `core.testing` (no pytest).

Local fake platforms that the real discord.py / slack-bolt code talks to over real
HTTP and websockets, shared by the tests and the benchmarks (`python -m bench
streaming` runs the adapters against them, from an installed chatlane too):

  fake_discord  FakeDiscord: REST v10 + gateway websocket; edits, deletes, per-route 429s
  fake_slack    FakeSlack: Web API (incl. native streaming), Socket Mode, signed Events API
  server        serve_on_loopback: an aiohttp app on a free 127.0.0.1 port

They live under bots/ because they speak (and fake_slack imports) platform SDKs, which
core/ never does. The fake OpenAI-compatible server stays in tests/fakes/.
"""
