"""Prometheus metrics of one gateway, in a registry of its own (tests run many gateways).

Labelled series a turn touches (model latency and errors by agent and platform) are
bound once per (agent, platform) and kept (`model`), not looked up by label on every
turn: `labels()` takes a lock and hashes the label values each call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

MODEL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120)


@dataclass(frozen=True, slots=True)
class ModelSeries:
    """The model series of one (agent, platform), bound once."""

    latency: Histogram
    errors: Counter


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.messages_in = Counter(
            "chatlane_messages_in", "Messages accepted for a turn.", ["platform"], registry=r
        )
        self.turns = Counter("chatlane_turns", "Turns run, by outcome.", ["outcome"], registry=r)
        self.sessions_minted = Counter(
            "chatlane_sessions_minted", "New sessions created (first message or reset).", registry=r
        )
        self.reservations_adopted = Counter(
            "chatlane_reservations_adopted", "Turns that joined an existing session.", registry=r
        )
        self.fenced = Counter(
            "chatlane_turns_fenced",
            "Turns refused at commit or stopped by a lost turn lock; their messages are answered again.",
            registry=r,
        )
        self.queue_depth = Gauge(
            "chatlane_queue_depth", "Messages waiting behind a running turn.", registry=r
        )
        self.deliveries_deduplicated = Counter(
            "chatlane_deliveries_deduplicated",
            "Platform deliveries not answered because the message was already taken, by reason.",
            ["platform", "reason"],
            registry=r,
        )
        self.rate_limited = Counter(
            "chatlane_rate_limited",
            "Messages not answered: the sender was over [limits].",
            ["platform"],
            registry=r,
        )
        self.schedule_fires = Counter(
            "chatlane_schedule_fires",
            "Scheduled fires run by this process, by schedule and outcome.",
            ["schedule", "outcome"],
            registry=r,
        )
        self.schedule_misses = Counter(
            "chatlane_schedule_misses",
            "Runs of missed fires skipped (later than catch_up: every process was down), by schedule.",
            ["schedule"],
            registry=r,
        )
        self.inbox_depth = Gauge(
            "chatlane_inbox_depth",
            "Pending items in the durable inbox over all conversations (as of the last scan).",
            registry=r,
        )
        self.inbox_oldest_age = Gauge(
            "chatlane_inbox_oldest_age_seconds",
            "Age of the oldest pending inbox item (as of the last scan; 0 when none).",
            registry=r,
        )
        self.inbox_resumed = Counter(
            "chatlane_inbox_resumed",
            "Inbox items this process took over after a restart or from a dead process.",
            registry=r,
        )
        self.turn_latency = Histogram(
            "chatlane_turn_latency_seconds",
            "Time from a turn's start to its delivered reply.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )

        self.running_turns = Gauge(
            "chatlane_running_turns", "Turns running now (their agent is answering or storing).", registry=r
        )
        self.model_latency = Histogram(
            "chatlane_model_latency_seconds",
            "Time the agent took to answer a turn (its whole stream), by agent and platform.",
            ["agent", "platform"],
            buckets=MODEL_BUCKETS,
            registry=r,
        )
        self.model_errors = Counter(
            "chatlane_model_errors",
            "Turns the agent failed to answer, by agent and platform.",
            ["agent", "platform"],
            registry=r,
        )
        self._model: dict[tuple[str, str], ModelSeries] = {}
        self._outcomes: dict[str, Counter] = {}

    def outcome(self, outcome: str) -> Counter:
        """The `chatlane_turns` series of `outcome`, bound on first use."""
        series = self._outcomes.get(outcome)
        if series is None:
            series = self._outcomes[outcome] = self.turns.labels(outcome)
        return series

    def model(self, agent: str, platform: str) -> ModelSeries:
        """The model series of `agent` on `platform`, bound on first use and then reused."""
        series = self._model.get((agent, platform))
        if series is None:
            series = ModelSeries(
                self.model_latency.labels(agent, platform), self.model_errors.labels(agent, platform)
            )
            self._model[(agent, platform)] = series
        return series

    def watch_queue(self, depth: Callable[[], int]) -> None:
        self.queue_depth.set_function(depth)

    def render(self) -> bytes:
        """The Prometheus text exposition format."""
        return generate_latest(self.registry)
