"""The composed config: core's sections plus every registered adapter's, read the way the CLI reads it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from bots.console import ConsoleSettings
from bots.discord.settings import DiscordSettings
from bots.http.settings import HttpSettings
from bots.launcher import ADAPTERS, CONFIG, load_config, plan
from bots.slack.settings import SlackSettings
from core.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "chatlane.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_example_config_loads_with_no_secrets_set() -> None:
    loaded = load_config(ROOT / "config.example.toml", env={})
    assert loaded.section(HttpSettings).enabled
    assert loaded.config.agent.backend == "echo"
    assert loaded.config.store.backend == "files"
    assert loaded.state_dir == ROOT / "state"


def test_the_example_documents_every_key_with_its_default() -> None:
    """Every key the config has is written in the example with its built-in default, or,
    when the default is "unset" (which TOML cannot write), shown commented out; so the
    file cannot drift. (Loading alone would not show a missing key: it gets its default.)"""
    text = (ROOT / "config.example.toml").read_text(encoding="utf-8")
    written = _flat(tomllib.loads(text))
    defaults = _flat(CONFIG().model_dump(mode="json", by_alias=True))
    # `# key = ...`, `# [agents.support]`, `# [[agent.mcp]]`: each part of a dotted name
    found = re.findall(r"(?m)^#\s*\[{0,2}([a-z_.]+)[\]\s=]", text)
    commented = {part for name in found for part in name.split(".")}
    missing = [
        key
        for key, default in defaults.items()
        if key not in written and not (default in (None, [], {}) and key.rsplit(".", 1)[-1] in commented)
    ]
    assert missing == []
    assert {k: v for k, v in written.items() if defaults.get(k, ...) != v} == {}
    assert load_config(ROOT / "config.example.toml", env={}).config == CONFIG()


def _flat(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys of nested tables; an empty table is a value of its own."""
    out: dict[str, Any] = {}
    for name, value in table.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = value
    return out


def test_every_registered_adapter_has_its_section_in_the_config() -> None:
    sections = {a.settings.section: a.settings for a in ADAPTERS}
    assert sections == {
        "http": HttpSettings,
        "discord": DiscordSettings,
        "slack": SlackSettings,
        "console": ConsoleSettings,
    }
    for name, kind in sections.items():
        assert CONFIG.model_fields[name].annotation is kind


@pytest.mark.parametrize(
    ("text", "env", "key", "problem"),
    [
        ("[http]\nport = 70000\n", {}, "http.port", "less than or equal"),
        ("[discord]\nenabeld = true\n", {}, "discord.enabeld", "unknown key"),
        ("[discord]\nshard_ids = [0]\n", {}, "discord", "shard_ids needs shard_count"),
        (
            "[discord]\nenabled = true\n",
            {},
            "discord.token_env",
            "environment variable DISCORD_BOT_TOKEN is not set (discord is enabled)",
        ),
        ("[slack]\nenabled = true\nmode = 'http'\n", {}, "slack.bot_token_env", "SLACK_BOT_TOKEN is not set"),
        (
            "[slack]\nenabled = true\n",
            {"SLACK_BOT_TOKEN": "xoxb-1"},
            "slack.app_token_env",
            "environment variable SLACK_APP_TOKEN is not set (slack mode is socket)",
        ),
        (
            "[slack]\nenabled = true\nmode = 'http'\n",
            {"SLACK_BOT_TOKEN": "xoxb-1"},
            "slack.signing_secret_env",
            "environment variable SLACK_SIGNING_SECRET is not set (slack mode is http)",
        ),
        ("[console]\nuser = 1\n", {}, "console.user", "valid string"),
    ],
)
def test_a_bad_adapter_value_is_an_error_naming_file_and_key(
    tmp_path: Path, text: str, env: dict[str, str], key: str, problem: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=env)
    assert caught.value.key == key
    assert problem in caught.value.problem
    assert str(path) in str(caught.value)


def test_adapter_secrets_come_from_the_named_env_vars_and_never_print(tmp_path: Path) -> None:
    path = write(tmp_path, "[discord]\nenabled = true\ntoken_env = 'MY_TOKEN'\n")
    loaded = load_config(path, env={"MY_TOKEN": "sekrit-value-123"})
    token = loaded.secrets.get(loaded.section(DiscordSettings).token_env)
    assert token is not None
    assert token.get_secret_value() == "sekrit-value-123"
    assert "sekrit-value-123" not in repr(loaded) + str(loaded)
    assert loaded.secrets.values() == ["sekrit-value-123"]


def test_a_disabled_adapter_reads_no_secret_even_when_its_var_is_set(tmp_path: Path) -> None:
    path = write(tmp_path, "[http]\nenabled = false\n")
    env = {"CHATLANE_HTTP_TOKEN": "h", "SLACK_BOT_TOKEN": "xoxb-1", "DISCORD_BOT_TOKEN": "d"}
    assert load_config(path, env=env).secrets.values() == []
    assert load_config(write(tmp_path, ""), env=env).secrets.values() == ["h"]


def test_plan_says_which_adapters_start_and_why(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, "[http]\nenabled = false\n[console]\nenabled = true\n"), env={})
    rows = {a.settings.section: (enabled, why) for a, enabled, why in plan(loaded)}
    assert rows == {
        "http": (False, "[http] enabled = false in chatlane.toml"),
        "discord": (False, "[discord] enabled = false in chatlane.toml"),
        "slack": (False, "[slack] enabled = false in chatlane.toml"),
        "console": (True, "[console] enabled = true"),
    }
