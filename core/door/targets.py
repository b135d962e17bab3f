"""Reply targets back into responders: how core answers a message whose platform event
it never saw (a resumed inbox item, a schedule, an approval), through the adapter of
its platform. Adapters register one factory per platform when they start."""

from __future__ import annotations

from collections.abc import Callable

from core.model import ReplyTarget, Responder

TargetResponder = Callable[[ReplyTarget], Responder]


class NoAdapter(LookupError):
    """No running adapter answers on the target's platform."""


class Targets:
    """platform -> a factory that turns a `ReplyTarget` into a `Responder`."""

    def __init__(self, on_register: Callable[[str], None] | None = None) -> None:
        self._factories: dict[str, TargetResponder] = {}
        self._on_register = on_register

    def register(self, platform: str, factory: TargetResponder) -> None:
        """From now on core answers stored targets of `platform` here: the gateway resumes
        that platform's pending inbox items before it queues its new messages."""
        self._factories[platform] = factory
        if self._on_register is not None:
            self._on_register(platform)

    def platforms(self) -> list[str]:
        return list(self._factories)

    def unregister(self, platform: str) -> None:
        self._factories.pop(platform, None)

    def can_answer(self, platform: str) -> bool:
        return platform in self._factories

    def responder(self, target: ReplyTarget) -> Responder:
        """A responder that answers through `target`; `NoAdapter` if none is running for it."""
        factory = self._factories.get(target.platform)
        if factory is None:
            raise NoAdapter(f"no adapter for platform {target.platform!r} is running here")
        return factory(target)
