"""Stored reply targets -> Slack responders, for messages this process never saw (an
inbox item resumed after a restart or adopted from a process that died).

A Slack answer is addressed by ids alone (channel, thread_ts, the asked message's ts), so
the responder of a target is the one a live event gets, built from the stored ids on
this process's Web API client; with `answer_ids` it rewrites those messages in place.
"""

from __future__ import annotations

from collections.abc import Callable

from bots.slack.history import BackfillingResponder
from bots.slack.inbound import PLATFORM, Identity
from bots.slack.reply import Poster
from bots.slack.settings import SlackSettings
from core.door import NoAdapter
from core.model import ReplyTarget


class Targets:
    """The factory `gateway.targets` calls for a `slack` target (see the module doc)."""

    def __init__(self, poster: Callable[[], Poster | None], me: Identity, settings: SlackSettings) -> None:
        self.poster = poster
        """The service's current poster (None once it stopped)."""
        self.me = me
        self.settings = settings

    def responder(self, target: ReplyTarget) -> BackfillingResponder:
        """A responder answering in the target's channel and thread; ValueError for a target
        that is not a Slack one, `NoAdapter` once stopped. Without `reply_to` it is a
        message the bot says first (core/door/proactive.py)."""
        poster = self.poster()
        if poster is None:
            raise NoAdapter("slack: stopped")
        if target.platform != PLATFORM:
            raise ValueError(f"not a Slack target: {target.platform!r}")
        extra = dict(target.extra)
        # No `reply_to`: a message the bot says first (core/door/proactive.py), in the
        # channel or the thread; there is no asker's message to react to.
        proactive = target.reply_to is None
        thread = target.thread
        ts = target.reply_to or thread or ""
        settings = (
            self.settings.model_copy(update={"status_reactions": False}) if proactive else self.settings
        )
        return BackfillingResponder(
            poster,
            target.channel,
            ts,
            thread,
            "" if proactive else self.settings.ack_reaction,
            me=self.me,
            limit=self.settings.history_backfill,
            in_thread=thread if thread is not None and (proactive or thread != ts) else None,
            settings=settings,
            user=extra.get("user", ""),
            team=extra.get("team") or self.me.team_id or None,
            is_direct=extra.get("direct") == "1",
            answer_ids=target.answer_ids,
        )
