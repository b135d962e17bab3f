"""Bounded memory of recently seen things (event ids, threads the bot is in).

Platforms redeliver: a Discord gateway RESUME can replay a MESSAGE_CREATE, and Slack
retries an event it thinks was not acknowledged. One event must give one turn.
"""

from __future__ import annotations

from collections import OrderedDict


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


RecentIds = RecentSet
"""The name adapters use for delivery ids."""
