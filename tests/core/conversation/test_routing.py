"""Bindings: first match wins, a thread follows its parent channel, the default catches
the rest, and the routing table warns about rules that can never match."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.config import Binding, Config, ConfigError, load_config
from core.conversation.routing import Router, covers, impossible, matches
from core.model.messages import Inbound


def router(tmp_path: Path, toml: str) -> Router:
    path = tmp_path / "chatlane.toml"
    path.write_text(toml, encoding="utf-8")
    return Router(load_config(path, env={}).config)


AGENTS = "[agents.main]\n[agents.support]\n[agents.ops]\n[agents.dm]\n"


def discord(channel: str = "c1", **more: object) -> Inbound:
    fields: dict[str, object] = {"space": "g1", **more}
    return Inbound("discord", "u1", channel, "hi", "m1", **fields)  # type: ignore[arg-type]


def test_the_first_matching_rule_wins_and_the_default_catches_the_rest(tmp_path: Path) -> None:
    r = router(
        tmp_path,
        AGENTS
        + '[[bindings]]\nagent = "ops"\nchannel = "c9"\nrole = "admin"\n'
        + '[[bindings]]\nagent = "support"\nguild = "g1"\n'
        + '[[bindings]]\nagent = "dm"\ndm = true\n',
    )
    assert r.choose(discord("c9", roles=("admin",))) == "ops"
    assert r.choose(discord("c9")) == "support"  # no admin role: the next rule
    assert r.choose(discord("c1")) == "support"
    assert r.choose(Inbound("discord", "u1", "d1", "hi", "m", is_direct=True)) == "dm"
    assert r.choose(Inbound("slack", "u1", "C1", "hi", "m", space="g1")) == "main"  # guild is Discord only


def test_a_thread_matches_a_rule_for_its_parent_channel(tmp_path: Path) -> None:
    r = router(tmp_path, AGENTS + '[[bindings]]\nagent = "support"\nchannel = ["c1", "c2"]\n')
    assert r.choose(discord("t1", parent_channel="c2")) == "support"
    assert r.choose(discord("t1", parent_channel="c3")) == "main"


def test_slack_rules_match_team_channel_and_user(tmp_path: Path) -> None:
    r = router(
        tmp_path,
        AGENTS
        + '[[bindings]]\nagent = "ops"\nteam = "T1"\nuser = "U7"\n'
        + '[[bindings]]\nagent = "support"\nplatform = "slack"\nchannel = "C1"\n',
    )
    assert r.choose(Inbound("slack", "U7", "C5", "x", "m", space="T1")) == "ops"
    assert r.choose(Inbound("slack", "U8", "C1", "x", "m", space="T1")) == "support"
    assert r.choose(Inbound("discord", "U8", "C1", "x", "m")) == "main"


def test_an_explicit_agent_overrides_the_bindings_and_must_exist(tmp_path: Path) -> None:
    r = router(tmp_path, AGENTS + '[[bindings]]\nagent = "support"\n')
    assert r.choose(Inbound("http", "u", "api", "x", "m", agent="ops")) == "ops"
    with pytest.raises(ValueError, match="no agent 'nope'"):
        r.choose(Inbound("http", "u", "api", "x", "m", agent="nope"))


def test_the_default_is_the_marked_agent_else_main_else_the_first(tmp_path: Path) -> None:
    assert router(tmp_path, "[agents.a]\n[agents.b]\ndefault = true\n").default == "b"
    assert router(tmp_path, "[agents.a]\n[agents.main]\n").default == "main"
    assert router(tmp_path, "[agents.a]\n[agents.b]\n").default == "a"
    assert Router(Config()).default == "main"


def test_the_old_single_agent_section_is_agent_main_beside_new_tables(tmp_path: Path) -> None:
    r = router(tmp_path, '[agent]\nsystem_prompt = "old"\n[agents.support]\nsystem_prompt = "new"\n')
    assert list(r.agents) == ["main", "support"]
    assert r.settings("main").system_prompt == "old" and r.settings("support").id == "support"


def test_the_table_warns_about_shadowed_and_impossible_rules(tmp_path: Path) -> None:
    r = router(
        tmp_path,
        AGENTS
        + '[[bindings]]\nagent = "support"\nguild = "g1"\n'
        + '[[bindings]]\nagent = "ops"\nguild = "g1"\nchannel = "c1"\n'  # shadowed by 1
        + '[[bindings]]\nagent = "ops"\nchannel = "c1"\n'  # not shadowed: other guilds, Slack
        + '[[bindings]]\nagent = "dm"\nplatform = "slack"\nguild = "g2"\n'  # impossible
        + '[[bindings]]\nagent = "dm"\nchannel = ["c1", "c2"]\ndm = false\n',  # not shadowed: c2
    )
    rows = r.table()
    assert [row.agent for row in rows] == ["support", "ops", "ops", "dm", "dm", "main"]
    assert rows[1].warning.startswith("never matches: rule 1 (guild=g1)")
    assert rows[2].warning == "" and rows[4].warning == ""
    assert "different platforms" in rows[3].warning
    assert rows[-1].rule == "otherwise"


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[agents.main]\n[[bindings]]\nagent = "ghost"\n', "bindings.0.agent"),
        ("[agents.a]\ndefault = true\n[agents.b]\ndefault = true\n", "agents.b.default"),
        ('[agents.a]\nid = "b"\n', "agents"),
        ('[agent]\nid = "x"\n[agents.x]\n', "agents.x"),
        ("[agents.Bad]\n", "agents"),
        ('[agents.a]\n[[bindings]]\nagent = "a"\ncolour = "red"\n', "bindings.0.colour"),
    ],
)
def test_agent_and_binding_mistakes_name_the_key(tmp_path: Path, toml: str, key: str) -> None:
    path = tmp_path / "chatlane.toml"
    path.write_text(toml, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert err.value.key == key, str(err.value)


_VALUES = st.lists(st.sampled_from(["a", "b", "c"]), max_size=2, unique=True).map(tuple)
_RULES = st.builds(
    Binding,
    agent=st.just("main"),
    platform=st.lists(st.sampled_from(["discord", "slack", "http"]), max_size=2, unique=True).map(tuple),
    guild=_VALUES,
    team=_VALUES,
    channel=_VALUES,
    dm=st.sampled_from([None, True, False]),
    user=_VALUES,
    role=_VALUES,
)
_MESSAGES = st.builds(
    Inbound,
    platform=st.sampled_from(["discord", "slack", "http"]),
    user=st.sampled_from(["a", "b", "c"]),
    channel=st.sampled_from(["a", "b", "c"]),
    text=st.just("hi"),
    message_id=st.just("m"),
    is_direct=st.booleans(),
    space=st.sampled_from([None, "a", "b", "c"]),
    parent_channel=st.sampled_from([None, "a", "b", "c"]),
    roles=st.lists(st.sampled_from(["a", "b", "c"]), max_size=2).map(tuple),
)


@settings(max_examples=300, deadline=None)
@given(earlier=_RULES, later=_RULES, messages=st.lists(_MESSAGES, min_size=1, max_size=20))
def test_a_rule_called_shadowed_is_never_the_first_match_and_an_impossible_one_never_matches(
    earlier: Binding, later: Binding, messages: list[Inbound]
) -> None:
    """No false warnings: `covers` and `impossible` only claim what holds for every message."""
    for m in messages:
        if covers(earlier, later) and matches(later, m):
            assert matches(earlier, m)
        if impossible(later):
            assert not matches(later, m)
