"""Access gating: allowlists, DM policy, mentions, bots; threads can't slip past a channel list."""

from __future__ import annotations

from core.config import Access
from core.door.access import Facts, admit


def facts(**kw: object) -> Facts:
    base: dict[str, object] = {"user": "u1", "channel": "c1", "is_direct": False, "mentioned_bot": True}
    base.update(kw)
    return Facts(**base)  # type: ignore[arg-type]


def test_open_policy_admits_a_mention_and_refuses_without_one() -> None:
    assert admit(Access(), facts()) is None
    assert admit(Access(), facts(mentioned_bot=False)) == "not mentioned"
    assert admit(Access(require_mention=False), facts(mentioned_bot=False)) is None
    assert admit(Access(), facts(mentioned_bot=False, require_mention=False)) is None


def test_dm_policy() -> None:
    dm = facts(is_direct=True, mentioned_bot=False)
    assert admit(Access(dm_policy="open"), dm) is None
    assert admit(Access(dm_policy="disabled"), dm) == "direct messages are disabled"
    assert admit(Access(dm_policy="allowlist"), dm) is not None
    assert admit(Access(dm_policy="allowlist", allow_users=("u1",)), dm) is None


def test_bots_are_refused_unless_allowed() -> None:
    assert admit(Access(), facts(author_is_bot=True)) == "author is a bot"
    assert admit(Access(allow_bots=True), facts(author_is_bot=True)) is None


def test_channel_allowlist_applies_to_threads_through_their_parent() -> None:
    policy = Access(allow_channels=("c1",))
    assert admit(policy, facts(channel="c2")) == "channel not in allow_channels"
    assert admit(policy, facts(channel="thread9", parent_channel="c1")) is None
    assert admit(policy, facts(channel="thread9", parent_channel="c2")) is not None


def test_user_role_and_space_allowlists() -> None:
    assert admit(Access(allow_users=("u2",)), facts()) == "user not in allow_users"
    assert admit(Access(allow_users=("u2",)), facts(roles=("mods",)), allow_roles=("mods",)) is None
    assert admit(Access(), facts(roles=("guests",)), allow_roles=("mods",)) is not None
    assert admit(Access(), facts(space="g1"), allow_spaces=("g2",)) is not None
    assert admit(Access(), facts(space="g2"), allow_spaces=("g2",)) is None
