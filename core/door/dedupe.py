"""Bounded memory of recently seen things (event ids, threads the bot is in).

Platforms redeliver: a Discord gateway RESUME can replay a MESSAGE_CREATE, and Slack
retries an event it thinks was not acknowledged and sends a mention twice (as
`app_mention` and `message`). Behind a load balancer the copies land on different
processes, so `Deliveries` asks the store, which every process shares; this process's
`RecentSet` is the cheap first filter. One message gives one turn.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from collections.abc import Sequence

from core.model import RequestClaim, StoreError
from core.ops import Metrics
from core.store import SessionStore

log = logging.getLogger("chatlane.dedupe")


class RecentSet:
    """The last `capacity` items offered; memory stays bounded however many arrive."""

    def __init__(self, capacity: int = 10_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self._seen: OrderedDict[str, None] = OrderedDict()

    def add(self, item: str) -> bool:
        """Remember `item` (as the newest); True if it was not remembered before."""
        new = item not in self._seen
        self._seen[item] = None
        self._seen.move_to_end(item)
        if len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        return new

    def first_time(self, event_id: str) -> bool:
        """True the first time `event_id` is offered (and remembers it), else False."""
        return self.add(event_id)

    def __contains__(self, item: object) -> bool:
        return item in self._seen

    def __len__(self) -> int:
        return len(self._seen)


Delivery = tuple[str, str]
"""One id of a platform delivery and the reason to give when it was seen before, e.g.
`("retry", "event:Ev123")` or `("twin", "message:C1:1700000000.000100")`."""


class Deliveries:
    """Is a delivery new? The in-process `RecentSet` first (free), then the store (atomic
    across every process on it, remembered for `window_s`).

    A delivery is new when none of its ids was seen; ids are marked in order and the
    store stops at the first one seen, so of all copies of one message (which share its
    last id) exactly one is new. When the store fails the delivery counts as new: a rare
    second answer is better than a lost message.
    """

    def __init__(
        self, store: SessionStore, window_s: float, metrics: Metrics, capacity: int = 10_000
    ) -> None:
        self.store = store
        self.window_s = window_s
        self.metrics = metrics
        self._recent = RecentSet(capacity)

    def seen_here(self, platform: str, delivery: Sequence[Delivery]) -> bool:
        """True (and counted) when this process saw one of the ids; else remembers them.
        Synchronous, so adapters' ordering is kept up to here."""
        for reason, ident in delivery:
            if f"{platform}:{ident}" in self._recent:
                self._duplicate(platform, reason, ident)
                return True
        for _, ident in delivery:
            self._recent.add(f"{platform}:{ident}")
        return False

    async def first_in_store(self, platform: str, delivery: Sequence[Delivery]) -> bool:
        try:
            seen = await self.store.mark_delivered([f"{platform}:{i}" for _, i in delivery], self.window_s)
        except StoreError as exc:
            log.warning(
                "%s: cannot check delivery %s in the store (%s); answering it", platform, delivery, exc
            )
            return True
        if seen:
            reason, ident = delivery[seen - 1]
            self._duplicate(platform, reason, ident)
            return False
        return True

    def _duplicate(self, platform: str, reason: str, ident: str) -> None:
        self.metrics.deliveries_deduplicated.labels(platform, reason).inc()
        log.info("%s: %s delivered again (%s); answered once", platform, ident, reason)


class InOrder:
    """Checks that await the store still hand messages on in arrival order, per key.

    `ticket(key)` is taken synchronously on arrival; `Ticket.wait()` returns once every
    earlier ticket of the key is done. The checks themselves run concurrently.
    """

    def __init__(self) -> None:
        self._last: dict[str, asyncio.Future[None]] = {}

    def ticket(self, key: str) -> Ticket:
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        before = self._last.get(key)
        self._last[key] = mine
        return Ticket(self, key, before, mine)


class Ticket:
    def __init__(
        self, owner: InOrder, key: str, before: asyncio.Future[None] | None, mine: asyncio.Future[None]
    ) -> None:
        self._owner, self._key, self._before, self._mine = owner, key, before, mine

    async def wait(self) -> None:
        if self._before is not None:
            await asyncio.shield(self._before)  # a cancelled waiter must not cancel its predecessor

    def done(self) -> None:
        if not self._mine.done():
            self._mine.set_result(None)
        if self._owner._last.get(self._key) is self._mine:
            del self._owner._last[self._key]


REQUEST_LEASE_S = 30.0
"""How long a request's owner holds it unrenewed: a retry takes over a dead owner's
request after this long (the owner renews every third of it while its turn runs)."""


class Requests:
    """Requests a client may retry (HTTP `Idempotency-Key`): one owner runs the turn and
    stores its answer; every retry, in any process on the store, gets that answer.

    The owner's claim lasts the window: the request is kept in the durable inbox, so
    when its process dies the process that resumes it answers under the same claim
    (a lapsing lease would let a retry run it a second time beside the resumed one)."""

    def __init__(self, store: SessionStore, window_s: float, metrics: Metrics) -> None:
        self.store = store
        self.window_s = window_s
        self.metrics = metrics

    async def claim(
        self, request_id: str, fingerprint: str, lease_s: float = REQUEST_LEASE_S
    ) -> RequestClaim:
        """Claim with a new owner token (the claim's `owner` when it is `new`)."""
        return await self.store.claim_request(
            request_id, fingerprint, uuid.uuid4().hex, lease_s, self.window_s
        )

    async def finish(self, request_id: str, owner: str, fingerprint: str, answer: bytes) -> None:
        await self.store.finish_request(request_id, owner, fingerprint, answer, self.window_s)

    async def release(self, request_id: str, owner: str) -> None:
        await self.store.release_request(request_id, owner)

    def replayed(self, platform: str) -> None:
        self.metrics.deliveries_deduplicated.labels(platform, "idempotency_key").inc()
