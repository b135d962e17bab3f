"""Config: the example file loads; every mistake names the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "chatlane.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_example_config_loads_with_no_secrets_set() -> None:
    loaded = load_config(ROOT / "config.example.toml", env={})
    assert loaded.config.http.enabled
    assert loaded.config.agent.backend == "echo"
    assert loaded.config.store.backend == "files"
    assert loaded.state_dir == ROOT / "state"


def test_the_example_documents_every_key_with_its_default() -> None:
    """Every key of the example equals the built-in default, so the file cannot drift."""
    from core.config import Config

    example = load_config(ROOT / "config.example.toml", env={}).config
    assert example == Config()


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("[queue]\nmode = 'fastest'\n", "queue.mode", "Input should be"),
        ("[queue]\ncap = 'ten'\n", "queue.cap", "valid integer"),
        ("[sesion]\nscope = 'user'\n", "sesion", "unknown key"),
        ("[agent]\nid = 'Main Agent'\n", "agent.id", "pattern"),
        ("[http]\nport = 70000\n", "http.port", "less than or equal"),
        ("[discord]\nenabled = true\n", "discord.token_env", "DISCORD_BOT_TOKEN is not set"),
        ("[slack]\nenabled = true\nmode = 'http'\n", "slack.bot_token_env", "SLACK_BOT_TOKEN is not set"),
    ],
)
def test_a_bad_value_is_an_error_naming_file_and_key(
    tmp_path: Path, text: str, key: str, problem: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert caught.value.key == key
    assert problem in caught.value.problem
    assert str(path) in str(caught.value)


def test_broken_toml_and_a_missing_file_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[queue\n"), env={})
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml", env={})


def test_secrets_come_from_the_named_env_vars_and_never_print(tmp_path: Path) -> None:
    path = write(tmp_path, "[discord]\nenabled = true\ntoken_env = 'MY_TOKEN'\n")
    loaded = load_config(path, env={"MY_TOKEN": "sekrit-value-123"})
    assert loaded.secrets.discord_token is not None
    assert loaded.secrets.discord_token.get_secret_value() == "sekrit-value-123"
    assert "sekrit-value-123" not in repr(loaded) + str(loaded)
    assert loaded.secrets.values() == ["sekrit-value-123"]


def test_relative_state_path_resolves_against_the_config_folder(tmp_path: Path) -> None:
    path = write(tmp_path, "[store]\npath = 'data/state'\n")
    assert load_config(path, env={}).state_dir == tmp_path / "data" / "state"
