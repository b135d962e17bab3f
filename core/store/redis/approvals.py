"""The Redis store's approvals and tool outcomes.

    <prefix>:approval:<sha256(id)>               an approval's JSON (pending or decided)
    <prefix>:tool:<sha256(turn)>:<sha256(call)>  what one tool call of a turn came to

Both expire a day after they stop mattering (an approval past its deadline, a tool
outcome after its turn). A decision is one Lua script (compare-and-set from pending,
atomic across every process on the Redis): the first decision stands, and the same
decision by the same person again finds its own effect.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from typing import Any, cast

import redis.asyncio as aioredis

from core.model import Approval, Decision
from core.store.redis.lock import redis_errors

KEEP_S = 86_400
"""How long an approval outlives its deadline, and a tool outcome its write."""

# KEYS[1] approval; ARGV[1] decision, ARGV[2] by. The stored JSON afterwards, or false.
_DECIDE = """
local raw = redis.call('GET', KEYS[1])
if not raw then return false end
local obj = cjson.decode(raw)
if obj['decision'] == cjson.null or obj['decision'] == nil then
  obj['decision'] = ARGV[1]
  obj['by'] = ARGV[2]
  raw = cjson.encode(obj)
  redis.call('SET', KEYS[1], raw, 'KEEPTTL')
end
return raw
"""


def _h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class RedisApprovals:
    def __init__(self, client: aioredis.Redis, prefix: str, url: str) -> None:
        self._r = client
        self.prefix = prefix
        self.url = url
        self._decide = client.register_script(_DECIDE)

    def _name(self, approval_id: str) -> str:
        return f"{self.prefix}:approval:{_h(approval_id)}"

    async def open_approval(self, approval: Approval) -> None:
        ttl = max(1, int(approval.deadline - time.time()) + KEEP_S)
        with redis_errors(self.url, "approval"):
            # NX: a retry of its own write changes nothing (and never undoes a decision).
            await self._r.set(
                self._name(approval.approval_id), json.dumps(approval.to_json()), ex=ttl, nx=True
            )

    async def get_approval(self, approval_id: str) -> Approval | None:
        with redis_errors(self.url, "approval"):
            raw = await self._r.get(self._name(approval_id))
        return None if raw is None else Approval.from_json(json.loads(raw))

    async def decide_approval(self, approval_id: str, decision: Decision, by: str) -> Approval | None:
        with redis_errors(self.url, "approval decision"):
            raw = await cast("Any", self._decide(keys=[self._name(approval_id)], args=[decision, by]))
        return None if not raw else Approval.from_json(json.loads(raw))

    async def put_tool_outcome(self, turn_id: str, call_key: str, outcome: Mapping[str, object]) -> None:
        with redis_errors(self.url, "tool outcome"):
            await self._r.set(
                f"{self.prefix}:tool:{_h(turn_id)}:{_h(call_key)}", json.dumps(outcome), ex=KEEP_S
            )

    async def get_tool_outcome(self, turn_id: str, call_key: str) -> dict[str, object] | None:
        with redis_errors(self.url, "tool outcome"):
            raw = await self._r.get(f"{self.prefix}:tool:{_h(turn_id)}:{_h(call_key)}")
        obj = None if raw is None else json.loads(raw)
        return obj if isinstance(obj, dict) else None
