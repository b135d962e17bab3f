"""`Idempotency-Key` on the HTTP API (one process; replicas are in tests/faults/test_replicas.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bots.testing import FlakyAgent, eventually
from tests.support.http import body, serve


async def test_retries_get_the_stored_answer_json_or_sse_and_no_second_turn(tmp_path: Path) -> None:
    agent = FlakyAgent()
    async with serve(tmp_path, agent=agent) as api:
        status, first, _ = await api.post(body("hello", user="ann"), {"Idempotency-Key": "k-json"})
        assert status == 200
        assert (await api.post(body("hello", user="ann"), {"Idempotency-Key": "k-json"}))[:2] == (200, first)
        # Asking to stream is another request: the same key with it is a 422.
        status, _, _ = await api.post(body("hello", user="ann", stream=True), {"Idempotency-Key": "k-json"})
        assert status == 422
        status, _, _ = await api.post(body("hi there", user="bo", stream=True), {"Idempotency-Key": "k-sse"})
        assert status == 200
        status, replay, _ = await api.post(
            body("hi there", user="bo", stream=True), {"Idempotency-Key": "k-sse"}
        )
        assert status == 200
        assert '"content":"ok: hi there (turn 1)"' in replay["stream"]  # compact JSON (openai types)
        assert replay["stream"].endswith("data: [DONE]\n\n")
        assert agent.calls == 2
        replayed = api.runtime.metrics.registry.get_sample_value(
            "chatlane_deliveries_deduplicated_total", {"platform": "http", "reason": "idempotency_key"}
        )
        assert replayed == 2


async def test_a_retry_that_waits_too_long_gets_409_and_later_the_answer(tmp_path: Path) -> None:
    agent = FlakyAgent(delay_s=1.0)
    async with serve(tmp_path, agent=agent, http="idempotency_wait_s = 0.2") as api:
        headers = {"Idempotency-Key": "slow-1"}
        first = asyncio.create_task(api.post(body("slow", user="cy"), headers))
        await eventually(lambda: agent.calls == 1)  # the first request's turn is running (1 s)
        status, err, _ = await api.post(body("slow", user="cy"), headers)
        assert status == 409 and err["error"]["code"] == "request_in_progress"
        status, answer, _ = await first
        assert status == 200
        assert (await api.post(body("slow", user="cy"), headers))[:2] == (200, answer)
        assert agent.calls == 1


async def test_a_malformed_key_is_a_400_and_reuse_with_another_session_is_a_422(tmp_path: Path) -> None:
    async with serve(tmp_path, agent=FlakyAgent()) as api:
        status, err, _ = await api.post(body("x", user="d"), {"Idempotency-Key": "a" * 256})
        assert status == 400 and err["error"]["code"] == "invalid_idempotency_key"
        assert (await api.post(body("x", user="d"), {"Idempotency-Key": "k"}))[0] == 200
        other = {"Idempotency-Key": "k", "X-Session-Key": "agent:main:http:d:api"}
        status, err, _ = await api.post(body("x", user="d"), other)
        assert status == 422 and err["error"]["code"] == "idempotency_key_reused"


async def test_a_request_refused_by_the_limit_frees_its_key(tmp_path: Path) -> None:
    agent = FlakyAgent()
    async with serve(tmp_path, agent=agent, extra="[limits]\nper_minute = 1\n") as api:
        assert (await api.post(body("one", user="e"), {"Idempotency-Key": "e1"}))[0] == 200
        status, err, _ = await api.post(body("two", user="e"), {"Idempotency-Key": "e2"})
        assert status == 429 and err["error"]["code"] == "rate_limited"
        claim = await api.runtime.gateway.requests.claim(_request_id("e2"), "any")
        assert claim.new  # nobody owns e2: a retry after the window runs it
        assert agent.calls == 1


def _request_id(key: str) -> str:
    import hashlib

    return f"http:token-{hashlib.sha256(b'').hexdigest()[:32]}:{key}"


async def test_anonymous_requests_count_against_their_api_tokens_limit(tmp_path: Path) -> None:
    """Without `user` every request is a session of its own; the limit still holds per token."""
    env = {"CHATLANE_HTTP_TOKEN": "tok-a"}
    async with serve(tmp_path, agent=FlakyAgent(), extra="[limits]\nper_minute = 2\n", env=env) as api:
        auth = {"Authorization": "Bearer tok-a"}
        statuses = [(await api.post(body(f"anon {n}"), auth))[0] for n in range(4)]
        assert statuses == [200, 200, 429, 429]


async def test_a_damaged_stored_claim_is_a_503_not_a_crash_or_a_second_turn(tmp_path: Path) -> None:
    from core.store.files.deliveries import Markers

    agent = FlakyAgent()
    async with serve(tmp_path, agent=agent) as api:
        assert (await api.post(body("x", user="f"), {"Idempotency-Key": "f1"}))[0] == 200
        marker = Path(Markers(tmp_path / "state" / "deliveries").path(f"r:{_request_id('f1')}"))
        await asyncio.to_thread(marker.write_bytes, b"{not json")
        status, err, _ = await api.post(body("x", user="f"), {"Idempotency-Key": "f1"})
        assert status == 503 and err["error"]["code"] == "store_unavailable"
        assert agent.calls == 1
