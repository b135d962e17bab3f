"""Session keys: canonical build/parse round-trips; anything off-grammar is rejected."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.model.keys import KeyParts, build_key, format_key, parse_key, validate_key

agents = st.from_regex(r"[a-z0-9_-]{1,64}", fullmatch=True)
platforms = st.from_regex(r"[a-z0-9-]{1,32}", fullmatch=True)
parts = st.from_regex(r"[A-Za-z0-9._@-]{1,128}", fullmatch=True)


@given(agents, platforms, parts, parts, st.none() | parts)
def test_build_then_parse_round_trips(
    agent: str, platform: str, user: str, channel: str, thread: str | None
) -> None:
    key = build_key(agent, platform, user, channel, thread)
    assert parse_key(key) == KeyParts(agent, platform, user, channel, thread)
    assert format_key(parse_key(key)) == key


def test_key_has_the_documented_shape() -> None:
    assert build_key("main", "discord", "42", "7") == "agent:main:discord:42:7"
    assert (
        build_key("main", "slack", "U1", "C1", "1700000000.000100")
        == "agent:main:slack:U1:C1:1700000000.000100"
    )


def test_scopes_replace_the_shared_part_with_a_wildcard() -> None:
    assert build_key("main", "discord", "42", "7", scope="channel") == "agent:main:discord:*:7"
    assert build_key("main", "discord", "42", "7", "t", scope="user") == "agent:main:discord:42:*"
    with pytest.raises(ValueError, match="unknown session scope"):
        build_key("main", "discord", "42", "7", scope="galaxy")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("agent:main:http:../../etc:api", "user"),
        ("agent:main:http:bob:api\x00", "channel"),
        ("agent:main:http:bob:api:x:y", "5 or 6"),
        ("agent:Main:http:bob:api", "agent id"),
        ("session:main:http:bob:api", "start with 'agent:'"),
        ("agent:main:HTTP:bob:api", "platform"),
        ("agent:main:http::api", "user"),
        ("agent:main:http:b\u043eb:api", "user"),  # Cyrillic o: a confusable
        ("agent:main:http:bob:" + "a" * 129, "channel"),
        ("agent:main:http:bob:api:*", "thread"),
        ("agent:main:http:bob", "5 or 6"),
        ("a" * 10_000, "characters long"),
    ],
)
def test_malformed_keys_are_rejected_with_the_part_named(key: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        validate_key(key)


@given(st.text(max_size=300))
def test_any_accepted_string_is_canonical_and_path_safe(text: str) -> None:
    try:
        key = validate_key(text)
    except ValueError:
        return
    assert format_key(parse_key(key)) == key
    assert "/" not in key and "\x00" not in key and ".." not in key.split(":")


@given(parts.map(lambda p: p + "/x") | st.sampled_from(["a:b", "é", " ", "\u200b", ""]))
def test_bad_parts_are_rejected_when_building(bad: str) -> None:
    with pytest.raises(ValueError):
        build_key("main", "http", bad, "api")
