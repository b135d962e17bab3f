"""Config: every mistake names the file and the key; adapters add sections core never names."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest

from core.config import AdapterSettings, Config, ConfigError, SecretNeed, compose, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "chatlane.toml"
    path.write_text(text, encoding="utf-8")
    return path


class PagerSettings(AdapterSettings):
    """A made-up adapter: core must read its section and secrets knowing nothing of it."""

    section: ClassVar[str] = "pager"
    token_env: str = "PAGER_TOKEN"
    webhook_env: str = "PAGER_WEBHOOK"
    signing_env: str = "PAGER_SIGNING"
    signed: bool = False

    def secret_needs(self) -> tuple[SecretNeed, ...]:
        if not self.enabled:
            return ()
        needs = [
            SecretNeed("token_env", required=True, why="pager is enabled"),
            SecretNeed("webhook_env", False),
        ]
        if self.signed:
            needs.append(SecretNeed("signing_env", required=True, why="pager.signed is true"))
        return tuple(needs)


PAGER_CONFIG = compose([PagerSettings])


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("[queue]\nmode = 'fastest'\n", "queue.mode", "Input should be"),
        ("[queue]\ncap = 'ten'\n", "queue.cap", "valid integer"),
        ("[sesion]\nscope = 'user'\n", "sesion", "unknown key"),
        ("[agent]\nid = 'Main Agent'\n", "agent.id", "pattern"),
        ("[pager]\ncolour = 'red'\n", "pager.colour", "unknown key"),
        (
            "[pager]\nenabled = true\n",
            "pager.token_env",
            "environment variable PAGER_TOKEN is not set (pager is enabled)",
        ),
        (
            "[pager]\nenabled = true\ntoken_env = ''\n",
            "pager.token_env",
            "must name an environment variable (pager is enabled)",
        ),
    ],
)
def test_a_bad_value_is_an_error_naming_file_and_key(
    tmp_path: Path, text: str, key: str, problem: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={}, schema=PAGER_CONFIG)
    assert caught.value.key == key
    assert problem in caught.value.problem
    assert str(path) in str(caught.value)


def test_without_the_adapter_composed_in_its_section_is_an_unknown_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, "[pager]\nenabled = true\n"), env={})
    assert (caught.value.key, caught.value.problem) == ("pager", "unknown key")


def test_broken_toml_and_a_missing_file_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[queue\n"), env={})
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml", env={})


def test_an_adapter_reads_its_section_typed_with_its_defaults(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, "[queue]\ncap = 3\n"), env={}, schema=PAGER_CONFIG)
    pager = loaded.section(PagerSettings)
    assert isinstance(pager, PagerSettings)
    assert pager == PagerSettings()
    assert loaded.config.queue.cap == 3


def test_asking_for_a_section_that_was_not_composed_in_is_an_error(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, ""), env={})
    with pytest.raises(LookupError, match=r"\[pager\]"):
        loaded.section(PagerSettings)


def test_secrets_an_adapter_declares_come_from_the_named_env_vars_and_never_print(tmp_path: Path) -> None:
    path = write(tmp_path, "[pager]\nenabled = true\ntoken_env = 'MY_TOKEN'\n")
    loaded = load_config(path, env={"MY_TOKEN": "sekrit-value-123", "PAGER_WEBHOOK": ""}, schema=PAGER_CONFIG)
    token = loaded.secrets.get(loaded.section(PagerSettings).token_env)
    assert token is not None and token.get_secret_value() == "sekrit-value-123"
    assert loaded.secrets.get("PAGER_WEBHOOK") is None  # optional and empty: absent
    assert "sekrit-value-123" not in repr(loaded) + str(loaded)
    assert loaded.secrets.values() == ["sekrit-value-123"]


def test_a_disabled_adapter_needs_no_secrets_and_an_enabled_one_only_what_its_settings_call_for(
    tmp_path: Path,
) -> None:
    assert (
        load_config(write(tmp_path, "[pager]\nsigned = true\n"), env={}, schema=PAGER_CONFIG).secrets.values()
        == []
    )
    signed = write(tmp_path, "[pager]\nenabled = true\nsigned = true\n")
    with pytest.raises(ConfigError) as caught:
        load_config(signed, env={"PAGER_TOKEN": "t"}, schema=PAGER_CONFIG)
    assert caught.value.key == "pager.signing_env"
    assert "(pager.signed is true)" in caught.value.problem


def test_core_secrets_are_optional_and_read_only_from_the_vars_the_config_names(tmp_path: Path) -> None:
    path = write(tmp_path, "[agent.openai]\napi_key_env = 'LLM_KEY'\n[store]\npassword_env = 'REDIS_PW'\n")
    loaded = load_config(path, env={"LLM_KEY": "k-1", "REDIS_PW": "pw-2", "OPENAI_API_KEY": "unnamed"})
    assert sorted(loaded.secrets.values()) == ["k-1", "pw-2"]
    assert loaded.secrets.get("OPENAI_API_KEY") is None


def test_two_sections_with_one_name_cannot_be_composed() -> None:
    class Other(AdapterSettings):
        section: ClassVar[str] = "pager"

    class Store(AdapterSettings):
        section: ClassVar[str] = "store"

    with pytest.raises(ValueError, match=r"\[pager\]"):
        compose([PagerSettings, Other])
    with pytest.raises(ValueError, match=r"\[store\]"):
        compose([Store])
    assert set(compose([]).model_fields) == set(Config.model_fields)


def test_relative_state_path_resolves_against_the_config_folder(tmp_path: Path) -> None:
    path = write(tmp_path, "[store]\npath = 'data/state'\n")
    assert load_config(path, env={}).state_dir == tmp_path / "data" / "state"
