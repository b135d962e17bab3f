"""A fake platform for the durable inbox: answers go through stored `ReplyTarget`s.

    board = Board()                      # platform "test"
    gateway.targets.register("test", board.responder)
    await gateway.submit(inbound, board.responder(board.target(inbound)), target=board.target(inbound))

Each message's answer streams into one "post", edited in place as it grows; the post is
reported to core (`track_answer`) the moment it is made, and a responder built from a
target that names it (`answer_ids`) edits that post from the start, as the Discord and
Slack adapters do. `board.posts_made` counts
posts ever created, so a test sees a second copy; `board.replies[reply_to]` holds every
reply a message got, in order.
"""

from __future__ import annotations

import itertools
from collections import defaultdict

from core.model import AnswerNote, Inbound, Reply, ReplyTarget
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
        self._note: AnswerNote | None = None

    def track_answer(self, note: AnswerNote) -> None:
        self._note = note

    async def on_delta(self, text: str) -> None:
        if self._post is None:
            resumed = self.target.answer_ids[0] if self.target.answer_ids else None
            if resumed is not None and resumed in self.board.posts:
                self._post = resumed  # resumed: edit the post from the start
            else:
                self._post = f"post-{next(_posts)}"
                self.board.posts_made += 1
                if self._note is not None:
                    await self._note((self._post,))
            self.board.posts[self._post] = ""
        self.board.posts[self._post] += text

    async def send(self, reply: Reply) -> None:
        self.board.replies[self.target.reply_to or ""].append(reply)
        if reply.kind == "answer" and self._post is not None:
            self.board.posts[self._post] = reply.text
