"""`[[schedules]]` in the config: each mistake is one clear error naming the schedule, and
`chatlane check` refuses a schedule whose platform has no bot enabled."""

from __future__ import annotations

from pathlib import Path

import pytest

from bots.launcher import load_config
from bots.preflight import inspect
from core.config import ConfigError

GOOD = 'name = "standup"\nkey = "agent:main:slack:*:C0123"\ncron = "0 9 * * 1-5"\ntext = "hi"\n'


def config(tmp_path: Path, schedule: str, extra: str = "") -> Path:
    path = tmp_path / "chatlane.toml"
    path.write_text(f"{extra}[[schedules]]\n{schedule}", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("schedule", "problem"),
    [
        (GOOD.replace("0 9 * * 1-5", "61 9 * * *"), "'61 9 * * *' is not a cron expression"),
        (GOOD + 'timezone = "Mars/Olympus"\n', "unknown timezone 'Mars/Olympus'"),
        (GOOD.replace("slack:*:C0123", "slack:U1:*"), "cannot speak in 'agent:main:slack:U1:*'"),
        (GOOD.replace("slack:*:C0123", "slack"), "cannot speak in 'agent:main:slack'"),
        (GOOD + 'every = "1h"\n', "give exactly one of cron, every, at"),
        (GOOD + 'catch_up = "5 minutes"\n', "'5 minutes' is not a duration"),
        (GOOD.replace('cron = "0 9 * * 1-5"', 'at = "next friday"'), "at = 'next friday' is not an ISO"),
    ],
)
def test_a_bad_schedule_is_an_error_naming_it(tmp_path: Path, schedule: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=r"schedules\.0") as caught:
        load_config(config(tmp_path, schedule))
    assert f"schedule 'standup': {problem}" in str(caught.value)


def test_two_schedules_of_one_name_and_an_unknown_agent_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="defined twice"):
        load_config(config(tmp_path, GOOD + "[[schedules]]\n" + GOOD))
    with pytest.raises(ConfigError, match="no agent 'other'"):
        load_config(config(tmp_path, GOOD.replace("agent:main:", "agent:other:")))


def test_check_refuses_a_schedule_whose_platform_has_no_bot(tmp_path: Path) -> None:
    loaded = load_config(config(tmp_path, GOOD))
    errors = [f.text for f in inspect(loaded) if f.level == "error"]
    assert any(e.startswith("schedule 'standup': cannot speak in agent:main:slack:*:C0123") for e in errors)
    http = load_config(config(tmp_path, GOOD.replace("slack:*:C0123", "http:ops:api")))
    assert not [f for f in inspect(http) if f.level == "error"]
