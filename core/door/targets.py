"""Reply targets back into responders: how core answers a message whose platform event
it never saw (a resumed inbox item, a schedule, an approval), through the adapter of
its platform. Adapters register one factory per platform when they start."""

from __future__ import annotations

from collections.abc import Callable

from core.model import Inbound, ReplyTarget, Responder

TargetResponder = Callable[[ReplyTarget], Responder]
Admits = Callable[[Inbound], bool]
"""The adapter's access rules, applied again to a stored message before it is resumed (a
sender removed from an allowlist meanwhile is not answered)."""


class NoAdapter(LookupError):
    """No running adapter answers on the target's platform."""


class Targets:
    """platform -> a factory that turns a `ReplyTarget` into a `Responder`."""

    def __init__(self, on_register: Callable[[str], None] | None = None) -> None:
        self._factories: dict[str, TargetResponder] = {}
        self._admits: dict[str, Admits] = {}
        self._on_register = on_register

    def register(self, platform: str, factory: TargetResponder, admits: Admits | None = None) -> None:
        """From now on core answers stored targets of `platform` here: the gateway resumes
        that platform's pending inbox items before it queues its new messages."""
        self._factories[platform] = factory
        if admits is not None:
            self._admits[platform] = admits
        else:
            self._admits.pop(platform, None)
        if self._on_register is not None:
            self._on_register(platform)

    def platforms(self) -> list[str]:
        return list(self._factories)

    def unregister(self, platform: str) -> None:
        self._factories.pop(platform, None)
        self._admits.pop(platform, None)

    def admits(self, inbound: Inbound) -> bool:
        """Whether the platform's access rules (if its adapter gave them) still let
        `inbound`'s sender be answered."""
        check = self._admits.get(inbound.platform)
        return check is None or check(inbound)

    def can_answer(self, platform: str) -> bool:
        return platform in self._factories

    def responder(self, target: ReplyTarget) -> Responder:
        """A responder that answers through `target`; `NoAdapter` if none is running for it."""
        factory = self._factories.get(target.platform)
        if factory is None:
            raise NoAdapter(f"no adapter for platform {target.platform!r} is running here")
        return factory(target)
