"""A fake platform for the durable inbox: answers go through stored `ReplyTarget`s.

    board = Board()                      # platform "test"
    gateway.targets.register("test", board.responder)
    await gateway.submit(inbound, board.responder(board.target(inbound)), target=board.target(inbound))

Each message's answer streams into one "post" (its id is the responder's `answer_id`),
edited in place as it grows; a responder built from a target that names a post edits
that post from the start, as Discord and Slack adapters do. `board.posts_made` counts
posts ever created, so a test sees a second copy; `board.replies[reply_to]` holds every
reply a message got, in order.
"""

from __future__ import annotations

import itertools
from collections import defaultdict

from core.model import Inbound, Reply, ReplyTarget
from core.turn import QuietResponder

_posts = itertools.count(1)


class Board:
    def __init__(self, platform: str = "test") -> None:
        self.platform = platform
        self.posts: dict[str, str] = {}
        """Post id -> its text now."""
        self.posts_made = 0
        self.replies: defaultdict[str, list[Reply]] = defaultdict(list)

    def target(self, inbound: Inbound) -> ReplyTarget:
        return ReplyTarget(self.platform, inbound.channel, inbound.thread, reply_to=inbound.message_id)

    def responder(self, target: ReplyTarget) -> BoardResponder:
        return BoardResponder(self, target)

    def answers(self, reply_to: str) -> list[Reply]:
        """The `answer` replies the message got (exactly one, when all went well)."""
        return [r for r in self.replies[reply_to] if r.kind == "answer"]


class BoardResponder(QuietResponder):
    def __init__(self, board: Board, target: ReplyTarget) -> None:
        self.board = board
        self.target = target
        self._post: str | None = None
        self._fresh = True

    @property
    def answer_id(self) -> str | None:
        return self._post

    async def on_delta(self, text: str) -> None:
        if self._post is None:
            if self.target.answer_id is not None and self.target.answer_id in self.board.posts:
                self._post = self.target.answer_id  # resumed: edit the post from the start
            else:
                self._post = f"post-{next(_posts)}"
                self.board.posts_made += 1
            self.board.posts[self._post] = ""
        self.board.posts[self._post] += text

    async def send(self, reply: Reply) -> None:
        self.board.replies[self.target.reply_to or ""].append(reply)
        if reply.kind == "answer" and self._post is not None:
            self.board.posts[self._post] = reply.text
