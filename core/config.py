"""One TOML file -> frozen, typed configuration.

Parsed once at startup. Unknown keys, wrong types and missing secrets are one
`ConfigError` naming the file and the dotted key, before anything connects. Secrets
live in environment variables named by the config (`token_env = "..."`); they are read
here and nowhere else, and held as `SecretStr` so they never print.
"""

from __future__ import annotations

import difflib
import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from core.keys import Scope

DmPolicy = Literal["open", "allowlist", "disabled"]


class _Section(BaseModel):
    # strict: `port = "8765"` or `enabled = "yes"` is an error, never silently coerced.
    # (The TOML is validated as JSON, where strict mode still takes arrays for tuples.)
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class OpenAISettings(_Section):
    base_url: str = "http://127.0.0.1:11434/v1"
    model: str = "llama3.2"
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float | None = None
    max_tokens: Annotated[int, Field(gt=0)] | None = None
    timeout: Annotated[float, Field(gt=0)] = 60.0
    max_retries: Annotated[int, Field(ge=0)] = 2


class AgentSettings(_Section):
    id: Annotated[str, Field(pattern=r"^[a-z0-9_-]{1,64}$")] = "main"
    backend: Literal["echo", "openai"] = "echo"
    history_limit: Annotated[int, Field(ge=0, le=10_000)] = 40
    system_prompt: str = "You are a helpful assistant."
    echo_delay_ms: Annotated[int, Field(ge=0, le=600_000)] = 0
    """echo backend only: wait this long before answering (demos, tests of queueing)."""
    failure_message: str = "Sorry, I couldn't answer that just now. Please try again."
    openai: OpenAISettings = OpenAISettings()


class ResetSettings(_Section):
    mode: Literal["none", "idle", "daily"] = "none"
    idle_minutes: Annotated[int, Field(ge=0)] = 0
    at_hour: Annotated[int, Field(ge=0, le=23)] = 4


class SessionSettings(_Section):
    scope: Scope = "user-channel"
    threads: bool = True
    reset_commands: tuple[str, ...] = ("/new", "/reset")
    reset: ResetSettings = ResetSettings()


class QueueSettings(_Section):
    mode: Literal["followup", "collect", "interrupt"] = "followup"
    debounce_ms: Annotated[int, Field(ge=0, le=600_000)] = 0
    cap: Annotated[int, Field(ge=1, le=100_000)] = 20
    drop: Literal["oldest", "newest"] = "oldest"
    max_concurrent_turns: Annotated[int, Field(ge=1, le=10_000)] = 16
    shutdown_timeout_s: Annotated[float, Field(ge=0)] = 10.0


class StoreSettings(_Section):
    backend: Literal["files", "redis"] = "files"
    path: str = "state"
    url: str = "redis://127.0.0.1:6379/0"
    password_env: str = ""
    prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9:_.-]{1,64}$")] = "chatlane"
    transcript_max: Annotated[int, Field(ge=1)] = 10_000
    turn_lock_ttl_s: Annotated[float, Field(gt=0)] = 30.0


class HttpSettings(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8765
    token_env: str = "CHATLANE_HTTP_TOKEN"
    max_body_bytes: Annotated[int, Field(gt=0)] = 1_048_576
    header_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    """A connection must send a request's complete headers within this long (of opening,
    or of its previous response), or it is closed."""
    body_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    max_connections: Annotated[int, Field(ge=0)] = 0
    """0: derived from the open-file limit (RLIMIT_NOFILE), keeping a quarter for the rest."""


class Access(_Section):
    """Who may talk to a bot. Empty allowlists allow everyone."""

    require_mention: bool = True
    dm_policy: DmPolicy = "open"
    allow_bots: bool = False
    allow_users: tuple[str, ...] = ()
    allow_channels: tuple[str, ...] = ()


class DiscordSettings(Access):
    enabled: bool = False
    token_env: str = "DISCORD_BOT_TOKEN"
    api_base_url: str = "https://discord.com/api/v10"
    gateway_url: str = "wss://gateway.discord.gg/"
    allow_guilds: tuple[str, ...] = ()
    allow_roles: tuple[str, ...] = ()
    mention_overrides: dict[str, bool] = {}
    """Per guild or channel id: whether a mention is required there."""
    reply_to: bool = True
    ack_reaction: str = ""
    shard_count: Annotated[int, Field(ge=1)] | None = None
    shard_ids: tuple[Annotated[int, Field(ge=0)], ...] | None = None
    guild_ready_timeout_s: Annotated[float, Field(ge=0)] = 2.0
    """How long discord.py waits for more servers (GUILD_CREATE) before it is ready."""
    ready_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    """start() waits this long for the gateway to be ready, then goes on connecting in the background."""
    max_ratelimit_wait_s: Annotated[float, Field(ge=30)] | None = 60.0
    """A send rate-limited for longer than this fails (logged) instead of holding its conversation."""
    sync_commands: bool = True
    """Register /new, /reset and /status with Discord at startup (one process per bot is enough)."""

    @model_validator(mode="after")
    def _shards_fit(self) -> DiscordSettings:
        if self.shard_ids is not None:
            if self.shard_count is None:
                raise ValueError("shard_ids needs shard_count (the total number of shards)")
            if not self.shard_ids or any(i >= self.shard_count for i in self.shard_ids):
                raise ValueError(f"shard_ids must be a non-empty list of ids below {self.shard_count}")
        return self


class SlackSettings(Access):
    enabled: bool = False
    mode: Literal["socket", "http"] = "socket"
    bot_token_env: str = "SLACK_BOT_TOKEN"
    app_token_env: str = "SLACK_APP_TOKEN"
    signing_secret_env: str = "SLACK_SIGNING_SECRET"
    api_base_url: str = "https://slack.com/api/"
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 3000
    path: str = "/slack/events"
    reply_in_thread: bool = True
    thread_replies_addressed: bool = True
    ack_reaction: str = ""
    slash_command: str = ""


class ConsoleSettings(_Section):
    enabled: bool = False
    user: str = "local"


class Config(_Section):
    agent: AgentSettings = AgentSettings()
    session: SessionSettings = SessionSettings()
    queue: QueueSettings = QueueSettings()
    store: StoreSettings = StoreSettings()
    http: HttpSettings = HttpSettings()
    discord: DiscordSettings = DiscordSettings()
    slack: SlackSettings = SlackSettings()
    console: ConsoleSettings = ConsoleSettings()


class Secrets(_Section):
    """Values of the env vars the config names; None where unset or not needed."""

    openai_api_key: SecretStr | None = None
    http_token: SecretStr | None = None
    discord_token: SecretStr | None = None
    slack_bot_token: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    redis_password: SecretStr | None = None

    def values(self) -> list[str]:
        """Every secret value set, for scrubbing logs."""
        out: list[str] = []
        for name in type(self).model_fields:
            secret = getattr(self, name)
            if isinstance(secret, SecretStr) and secret.get_secret_value():
                out.append(secret.get_secret_value())
        return out


class Loaded(_Section):
    path: Path
    config: Config
    secrets: Secrets

    @property
    def state_dir(self) -> Path:
        """`store.path`, resolved against the config file's folder when relative."""
        p = Path(self.config.store.path).expanduser()
        return p if p.is_absolute() else self.path.parent / p


class ConfigError(Exception):
    """A config problem, phrased for the person who wrote the file."""

    def __init__(self, path: Path | str, key: str, problem: str) -> None:
        self.path, self.key, self.problem = str(path), key, problem
        where = f"{self.path}: {key}: " if key else f"{self.path}: "
        super().__init__(where + problem)


def load_config(path: Path | str, env: Mapping[str, str] | None = None) -> Loaded:
    """Read and validate `path`; read the secrets the enabled parts need from `env`."""
    path = Path(path)
    env = os.environ if env is None else env
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(path, "", "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, "", f"cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "", f"not valid TOML: {exc}") from None
    try:
        as_json = json.dumps(raw)
    except (TypeError, ValueError):
        raise ConfigError(path, "", "dates and times are not valid values for any key") from None
    try:
        config = Config.model_validate_json(as_json)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        problem = err["msg"]
        if err["type"] == "extra_forbidden":
            problem = "unknown key" + _did_you_mean(Config, err["loc"])
        more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        raise ConfigError(path, key, problem + more) from None
    return Loaded(path=path.resolve(), config=config, secrets=_read_secrets(path, config, env))


def _did_you_mean(model: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    """` (did you mean `backend`?)` for a misspelt key, from the fields of its section."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        inner = field.annotation if field is not None else None
        if not (isinstance(inner, type) and issubclass(inner, BaseModel)):
            return ""
        model = inner
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""


def _read_secrets(path: Path, config: Config, env: Mapping[str, str]) -> Secrets:
    def optional(var: str) -> SecretStr | None:
        value = env.get(var, "") if var else ""
        return SecretStr(value) if value else None

    def required(key: str, var: str, why: str) -> SecretStr:
        if not var:
            raise ConfigError(path, key, f"must name an environment variable ({why})")
        value = env.get(var, "")
        if not value:
            raise ConfigError(path, key, f"environment variable {var} is not set ({why})")
        return SecretStr(value)

    secrets: dict[str, SecretStr | None] = {
        "openai_api_key": optional(config.agent.openai.api_key_env),
        "http_token": optional(config.http.token_env) if config.http.enabled else None,
        "redis_password": optional(config.store.password_env),
    }
    if config.discord.enabled:
        secrets["discord_token"] = required(
            "discord.token_env", config.discord.token_env, "discord is enabled"
        )
    if config.slack.enabled:
        s = config.slack
        secrets["slack_bot_token"] = required("slack.bot_token_env", s.bot_token_env, "slack is enabled")
        if s.mode == "socket":
            secrets["slack_app_token"] = required(
                "slack.app_token_env", s.app_token_env, "slack mode is socket"
            )
        else:
            secrets["slack_signing_secret"] = required(
                "slack.signing_secret_env", s.signing_secret_env, "slack mode is http"
            )
    return Secrets(**secrets)
