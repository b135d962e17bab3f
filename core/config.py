"""One TOML file -> frozen, typed configuration.

Core owns its sections (agent, session, queue, store) and knows no platform: each
adapter declares its own section as an `AdapterSettings` subclass (with the secrets it
needs), and the CLI composes the full schema from the adapter registry (`compose`).
Parsed once at startup. Unknown keys, wrong types and missing secrets are one
`ConfigError` naming the file and the dotted key, before anything connects. Secrets
live in environment variables named by the config (`token_env = "..."`); they are read
here and nowhere else, and held as `SecretStr` so they never print.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from core.model import ANY, Scope, parse_key

DmPolicy = Literal["open", "allowlist", "disabled"]


class Section(BaseModel):
    """A frozen TOML table: unknown keys are errors, and so are values of the wrong type.

    strict: `port = "8765"` or `enabled = "yes"` is an error, never silently coerced. (The
    TOML is validated as JSON, where strict mode still takes arrays for tuples.)
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class OpenAISettings(Section):
    base_url: str = "http://127.0.0.1:11434/v1"
    model: str = "llama3.2"
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float | None = None
    max_tokens: Annotated[int, Field(gt=0)] | None = None
    timeout: Annotated[float, Field(gt=0)] = 60.0
    max_retries: Annotated[int, Field(ge=0)] = 2
    vision: bool = False
    """The model accepts images: they are sent as `image_url` parts, else as a short placeholder."""
    stream_usage: bool = True
    """Ask for the answer's token usage (`stream_options.include_usage`); false for a server
    that rejects that field."""


class McpServerSettings(Section):
    """One MCP server whose tools the openai agent may call (`[[agents.<id>.mcp]]`)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")]
    command: tuple[Annotated[str, Field(min_length=1)], ...] = ()
    """stdio: the program and its arguments (started once per process, restarted if it dies)."""
    url: str = ""
    """Streamable HTTP: the server's URL (instead of `command`)."""
    env: dict[str, str] = {}
    """Extra environment variables for a stdio server."""
    tools: tuple[str, ...] | None = None
    """Allowlist of tool names; unset: every tool the server lists."""
    approval: tuple[str, ...] = ()
    """Tools that ask a person (Approve / Deny) before each call."""

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerSettings:
        if bool(self.command) == bool(self.url):
            raise ValueError(f'mcp server {self.name!r} needs exactly one of command = [...] or url = "..."')
        return self


AGENT_ID = r"^[a-z0-9_-]{1,64}$"
FACTORY = r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_.]*$"
BUILTIN_BACKENDS = ("echo", "openai", "python")


class AgentSettings(Section):
    id: Annotated[str, Field(pattern=AGENT_ID)] = "main"
    backend: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = "echo"
    """echo | openai | python (with `factory`) | a name registered in the `chatlane.agents` entry points."""
    factory: str = ""
    """backend "python": `package.module:callable`, called with `options` (a dict) to make the agent."""
    options: dict[str, Any] = {}
    """Passed as a dict to a plugin agent's factory (backend "python" or an entry point)."""
    default: bool = False
    """The agent for messages no `[[bindings]]` rule matches (else `main`, else the first agent)."""
    history_limit: Annotated[int, Field(ge=0, le=10_000)] = 40
    system_prompt: str = "You are a helpful assistant."
    echo_delay_ms: Annotated[int, Field(ge=0, le=600_000)] = 0
    """echo backend only: wait this long before answering (demos, tests of queueing)."""
    failure_message: str = "Sorry, I couldn't answer that just now. Please try again."
    models: tuple[Annotated[str, Field(min_length=1, max_length=200)], ...] = ()
    """What `/model NAME` may choose for one conversation; empty: no `/model` for this agent."""
    compact_after_tokens: Annotated[int, Field(ge=0)] = 0
    """Summarise the older history once the history to send passes this many (estimated)
    tokens; 0 = never."""
    compact_keep_recent: Annotated[int, Field(ge=0, le=10_000)] = 6
    """Records kept word for word after a summary."""
    openai: OpenAISettings = OpenAISettings()
    mcp: tuple[McpServerSettings, ...] = ()
    """MCP servers whose tools the openai agent may call (docs/agents.md, "Tools")."""
    max_tool_rounds: Annotated[int, Field(ge=1, le=100)] = 8
    """Model -> tool calls -> results -> model, at most this many rounds per turn."""
    tool_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    """One tool call's limit; past it the model is told the tool timed out."""
    tool_output_chars: Annotated[int, Field(ge=100, le=1_000_000)] = 20_000
    """A tool's output is cut to this many characters (with a note) before the model sees it."""
    approval_timeout_s: Annotated[float, Field(gt=0, le=86_400)] = 600.0
    """An approval nobody decides within this long is denied."""
    approvers: tuple[str, ...] = ()
    """Platform user ids who may approve tool calls besides the conversation's own user."""
    remind: bool = False
    """Offer the built-in `remind` tool: a one-shot schedule in the conversation (openai)."""

    @model_validator(mode="after")
    def _factory_fits_backend(self) -> AgentSettings:
        if self.backend == "python":
            if not self.factory:
                raise ValueError('backend "python" needs factory = "package.module:callable"')
            if not re.fullmatch(FACTORY, self.factory):
                raise ValueError(f'factory {self.factory!r} must look like "package.module:callable"')
        elif self.factory:
            raise ValueError(f'factory is only used with backend "python" (backend is {self.backend!r})')
        names = [m.name for m in self.mcp]
        if len(set(names)) != len(names):
            raise ValueError(f"mcp server names must be unique, got {names}")
        return self


def _one_or_many(value: Any) -> Any:
    return (value,) if isinstance(value, str) else value


Names = Annotated[
    tuple[Annotated[str, Field(min_length=1, strict=True)], ...],
    BeforeValidator(_one_or_many),
    Field(strict=False),  # the validator's tuple is not a JSON array: lax for the container only
]
"""A string or a list of strings; any of them matches."""


class Binding(Section):
    """One `[[bindings]]` rule: every condition given must hold; the first matching rule wins."""

    agent: Annotated[str, Field(pattern=AGENT_ID)]
    platform: Names = ()
    guild: Names = ()
    """Discord server ids."""
    team: Names = ()
    """Slack workspace (team) ids."""
    channel: Names = ()
    """Channel ids; a Discord thread matches its parent channel."""
    dm: bool | None = None
    """true: direct messages only; false: never direct messages."""
    user: Names = ()
    role: Names = ()
    """Discord role ids: the sender has any of them."""


class ResetSettings(Section):
    mode: Literal["none", "idle", "daily"] = "none"
    idle_minutes: Annotated[int, Field(ge=0)] = 0
    at_hour: Annotated[int, Field(ge=0, le=23)] = 4


class SessionSettings(Section):
    scope: Scope = "user-channel"
    threads: bool = True
    reset_commands: tuple[str, ...] = ("/new", "/reset")
    stop_commands: tuple[str, ...] = ("/stop",)
    """Messages that stop the answer in progress (in any process on the store)."""
    reset: ResetSettings = ResetSettings()
    model_command: str = "/model"
    """Shows or switches the conversation's model (agents with `models` only); "" turns it off."""
    status_command: str = "/status"
    """Says what the conversation has stored, running and waiting; "" lets the agent have it."""
    keep_model_on_reset: bool = True
    """A reset (`/new`) keeps the conversation's `/model` choice."""


class QueueSettings(Section):
    mode: Literal["followup", "collect", "interrupt"] = "followup"
    debounce_ms: Annotated[int, Field(ge=0, le=600_000)] = 0
    cap: Annotated[int, Field(ge=1, le=100_000)] = 20
    drop: Literal["oldest", "newest"] = "oldest"
    max_concurrent_turns: Annotated[int, Field(ge=1, le=10_000)] = 256
    """Turns of different conversations running at once in this process; one more waits
    for a free slot, a whole answer long with a slow model. A turn waiting on its model
    costs ~36 KB and no loop work but its stop poll (bench waiting), so the bound is
    the platforms' and the model's budgets: docs/performance.md, "Sizing"."""
    shutdown_timeout_s: Annotated[float, Field(ge=0, exclude=True)] = 10.0
    """The older name of `drain_s`; used when only it is set (left out of dumps: configs
    people write keep working, new ones are shown `drain_s`)."""
    drain_s: Annotated[float, Field(ge=0)] = 10.0
    """On SIGTERM, how long running turns may take to finish; what is left stays in the
    durable inbox and is answered after the restart."""
    adopt_every_s: Annotated[float, Field(gt=0, le=3600)] = 2.0
    """How often each process looks for inbox items of dead processes to answer."""
    stop_poll_s: Annotated[float, Field(gt=0, le=60)] = 0.25
    """How often a running turn checks the store for a `/stop` taken by another process."""

    @property
    def drain_timeout_s(self) -> float:
        """`drain_s`, or `shutdown_timeout_s` in a config that sets only that older key."""
        fields = self.model_fields_set
        if "shutdown_timeout_s" in fields and "drain_s" not in fields:
            return self.shutdown_timeout_s
        return self.drain_s


class AttachmentSettings(Section):
    """Files on incoming messages (Discord attachments, Slack files, HTTP content parts)."""

    max_attachment_bytes: Annotated[int, Field(ge=1, le=1 << 30)] = 25 * 1024 * 1024
    """Per file: Discord's own cap. Downloads stream to disk, so memory does not grow with it."""
    max_attachments: Annotated[int, Field(ge=0, le=100)] = 4
    """Per message; 0 reads none."""
    fetch_timeout_s: Annotated[float, Field(gt=0, le=600)] = 20.0
    """All of one message's downloads together."""
    max_text_chars: Annotated[int, Field(ge=0)] = 20_000
    """A text file is shown to the agent up to this many characters, with a note past it."""
    history_bytes: Annotated[int, Field(ge=0)] = 32 * 1024 * 1024
    """Bytes of earlier attachments read back per turn (newest first); older ones are placeholders."""


class StoreSettings(Section):
    backend: Literal["files", "redis"] = "files"
    path: str = "state"
    url: str = "redis://127.0.0.1:6379/0"
    password_env: str = ""
    prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9:_.-]{1,64}$")] = "chatlane"
    transcript_max: Annotated[int, Field(ge=1)] = 10_000
    turn_lock_ttl_s: Annotated[float, Field(gt=0)] = 30.0
    blobs_max: Annotated[int, Field(ge=1)] = 64
    """redis: attachments kept per session (the oldest are dropped first)."""


class Access(Section):
    """Who may talk to a bot. Empty allowlists allow everyone."""

    require_mention: bool = True
    dm_policy: DmPolicy = "open"
    allow_bots: bool = False
    allow_users: tuple[str, ...] = ()
    allow_channels: tuple[str, ...] = ()


class StreamSettings(Section):
    """How a chat adapter shows an answer while the agent produces it (core/turn/streaming.py)."""

    stream_edit_interval_s: Annotated[float, Field(ge=0.2, le=60)] = 1.2
    """Edits of a streamed message (and new messages of it) at most this often."""
    stream_first_post_s: Annotated[float, Field(ge=0, le=60)] = 1.0
    """A first short piece is posted at once if it has `stream_first_chars`, else after this long."""
    stream_first_chars: Annotated[int, Field(ge=1, le=2000)] = 24
    status_reactions: bool = False
    """React ⏳ while a message waits, 👀 while it is answered, ✅ once answered, ⚠️ on failure."""


@dataclass(frozen=True, slots=True)
class SecretNeed:
    """A secret an adapter's settings call for: the field that names its env var."""

    field: str
    """The settings field holding the env var's name, e.g. "token_env"."""
    required: bool
    why: str = ""
    """The reason it is required, as errors say it: "slack mode is socket"."""


class AdapterSettings(Section):
    """An adapter's own `[section]`: subclass it next to the adapter (bots/<platform>/settings.py).

    Core never names a platform: the CLI composes the full config from `Config` and the
    registered adapters' classes (`compose`), and `load_config` reads each section's
    secrets from what `secret_needs` declares.
    """

    section: ClassVar[str]
    """The TOML table name, e.g. "discord"."""
    enabled: bool = False

    def secret_needs(self) -> tuple[SecretNeed, ...]:
        """The secrets these settings call for (none by default); read by `load_config`."""
        return ()


class DedupeSettings(Section):
    window_s: Annotated[float, Field(gt=0)] = 3600.0
    """How long a platform delivery (Slack event and message, Discord message id, HTTP
    Idempotency-Key) is remembered in the store, by every process: a copy that arrives
    within it is not answered again."""


class LimitsSettings(Section):
    """Messages per sender (platform user id; HTTP: `user` or API token); 0 = no limit."""

    per_minute: Annotated[int, Field(ge=0)] = 0
    per_day: Annotated[int, Field(ge=0)] = 0


DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0}
TRANSCRIPT_ONLY = ("http", "console")
"""Platforms whose conversations a proactive message reaches only in the transcript."""


def parse_duration(text: str) -> float:
    """`"30m"` -> 1800.0 (ms, s, m, h, d); ValueError otherwise."""
    found = DURATION.fullmatch(text.strip())
    if found is None:
        raise ValueError(f"{text!r} is not a duration like 10s, 30m, 1h or 1d")
    return float(found.group(1)) * _UNIT_S[found.group(2)]


def _cron_is_valid(expression: str) -> bool:
    from croniter import croniter  # only a config with a cron schedule pays its import

    return bool(croniter.is_valid(expression))


def unreachable(key: str) -> str | None:
    """Why a proactive message cannot be sent to `key` (None if it can): a malformed key,
    or one with no channel to speak in (scope `user` keys end in `*`)."""
    try:
        parts = parse_key(key)
    except ValueError as exc:
        return str(exc)
    if parts.platform not in TRANSCRIPT_ONLY and ANY in (parts.channel, parts.thread):
        return f"{key} names no channel to speak in (a scope `user` key: its channel is {ANY!r})"
    return None


class ScheduleSettings(Section):
    """One `[[schedules]]` entry: a message the bot sends on its own, in one conversation."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    key: str
    """The conversation it speaks in (a session key)."""
    cron: str = ""
    every: str = ""
    """A fixed interval (`30m`, `10s`), counted from 1970-01-01 UTC."""
    at: str = ""
    """Once, at an ISO date and time (with an offset, or read in `timezone`)."""
    timezone: str = "UTC"
    text: Annotated[str, Field(min_length=1)]
    mode: Literal["prompt", "notice"] = "prompt"
    catch_up: str = "1h"
    """A fire missed while every process was down runs once if it is at most this late."""

    @model_validator(mode="after")
    def _check(self) -> ScheduleSettings:
        where = f"schedule {self.name!r}"
        if sum(bool(x) for x in (self.cron, self.every, self.at)) != 1:
            raise ValueError(f"{where}: give exactly one of cron, every, at")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{where}: unknown timezone {self.timezone!r} (e.g. Europe/Berlin)") from None
        if self.cron and not _cron_is_valid(self.cron):
            raise ValueError(f"{where}: {self.cron!r} is not a cron expression (e.g. 0 9 * * 1-5)")
        try:
            if self.every and parse_duration(self.every) < 1.0:
                raise ValueError(f"{self.every!r} is shorter than 1s")
            parse_duration(self.catch_up)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        if self.at:
            try:
                datetime.fromisoformat(self.at)
            except ValueError:
                raise ValueError(f"{where}: at = {self.at!r} is not an ISO date and time") from None
        if (why := unreachable(self.key)) is not None:
            raise ValueError(f"{where}: cannot speak in {self.key!r}: {why}")
        return self

    @property
    def interval_s(self) -> float:
        return parse_duration(self.every) if self.every else 0.0

    @property
    def catch_up_s(self) -> float:
        return parse_duration(self.catch_up)


class SchedulerSettings(Section):
    """`[scheduler]`: how processes share the work of `[[schedules]]`."""

    enabled: bool = True
    poll_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    """The longest sleep: how soon another process's lapsed claim or a new reminder is seen."""
    lease_s: Annotated[float, Field(gt=0)] = 60.0
    """A claimed fire's lease, renewed while it runs; another process takes it over once
    it lapsed (its owner died)."""


class Config(Section):
    """The core sections; `compose` adds one field per adapter section."""

    agent: AgentSettings = AgentSettings()
    """The single agent of older configs; it is agent `agent.id` ("main") beside `[agents.*]`."""
    agents: dict[str, AgentSettings] = {}
    bindings: tuple[Binding, ...] = ()
    session: SessionSettings = SessionSettings()
    queue: QueueSettings = QueueSettings()
    store: StoreSettings = StoreSettings()
    attachments: AttachmentSettings = AttachmentSettings()
    dedupe: DedupeSettings = DedupeSettings()
    limits: LimitsSettings = LimitsSettings()
    schedules: tuple[ScheduleSettings, ...] = ()
    scheduler: SchedulerSettings = SchedulerSettings()

    @field_validator("agents", mode="after")
    @classmethod
    def _ids_from_tables(cls, agents: dict[str, AgentSettings]) -> dict[str, AgentSettings]:
        out = {}
        for name, settings in agents.items():
            if not re.fullmatch(AGENT_ID, name):
                raise ValueError(f"agent id {name!r} must match [a-z0-9_-]{{1,64}}")
            if "id" in settings.model_fields_set and settings.id != name:
                raise ValueError(
                    f"[agents.{name}] has id = {settings.id!r}; leave id out (the table names it)"
                )
            out[name] = settings.model_copy(update={"id": name})
        return out

    def agent_table(self) -> dict[str, AgentSettings]:
        """Every agent by id, in file order: `[agent]` (when written, or when there is no
        `[agents.*]`) first, then `[agents.*]`."""
        table: dict[str, AgentSettings] = {}
        if "agent" in self.model_fields_set or not self.agents:
            table[self.agent.id] = self.agent
        table.update(self.agents)
        return table

    def default_agent_id(self) -> str:
        """The agent for messages no binding matches: the one marked `default`, else `main`,
        else the first."""
        table = self.agent_table()
        marked = [a for a, s in table.items() if s.default]
        if marked:
            return marked[0]
        return "main" if "main" in table else next(iter(table))


def compose(adapters: Iterable[type[AdapterSettings]]) -> type[Config]:
    """`Config` plus one `[section]` per adapter settings class, with its defaults."""
    fields: dict[str, Any] = {}
    for kind in adapters:
        name = kind.section
        if name in Config.model_fields or name in fields:
            raise ValueError(f"two config sections named [{name}]")
        fields[name] = (kind, kind())
    return create_model("ComposedConfig", __base__=Config, **fields)


class Secrets(Section):
    """Values of the env vars the config names and needs, by variable name; unset ones are absent."""

    by_var: dict[str, SecretStr] = {}

    def get(self, var: str) -> SecretStr | None:
        """The value of env var `var` if it was needed and set, else None."""
        return self.by_var.get(var) if var else None

    def values(self) -> list[str]:
        """Every secret value set, for scrubbing logs."""
        return [s.get_secret_value() for s in self.by_var.values() if s.get_secret_value()]


S = TypeVar("S", bound=AdapterSettings)


class Loaded(Section):
    path: Path
    config: Config
    secrets: Secrets

    @property
    def state_dir(self) -> Path:
        """`store.path`, resolved against the config file's folder when relative."""
        p = Path(self.config.store.path).expanduser()
        return p if p.is_absolute() else self.path.parent / p

    def section(self, kind: type[S]) -> S:
        """An adapter's settings, typed: `loaded.section(DiscordSettings)`."""
        found = getattr(self.config, kind.section, None)
        if not isinstance(found, kind):
            raise LookupError(f"config has no [{kind.section}] section of {kind.__name__} (compose it in)")
        return found


class ConfigError(Exception):
    """A config problem, phrased for the person who wrote the file.

    `problems` lists every problem found, each as (key, problem); `key` and `problem` are
    the first. With several, the message names them all, one line each with its key."""

    def __init__(
        self, path: Path | str, key: str, problem: str, *, more: Sequence[tuple[str, str]] = ()
    ) -> None:
        self.path, self.key, self.problem = str(path), key, problem
        self.problems = [(key, problem), *more]
        if not more:
            super().__init__(f"{self.path}: {key}: {problem}" if key else f"{self.path}: {problem}")
            return
        lines = [f"  {k}: {p}" if k else f"  {p}" for k, p in self.problems]
        super().__init__(f"{self.path}: {plural(len(self.problems), 'problem')}:\n" + "\n".join(lines))

    @classmethod
    def of(cls, path: Path | str, problems: Sequence[tuple[str, str]]) -> ConfigError:
        """One error that names every (key, problem) of a non-empty list."""
        (key, problem), *more = problems
        return cls(path, key, problem, more=more)


def plural(n: int, word: str) -> str:
    """`1 problem`, `3 problems`."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def load_config(
    path: Path | str, env: Mapping[str, str] | None = None, *, schema: type[Config] = Config
) -> Loaded:
    """Read and validate `path` against `schema`; read the secrets the enabled parts need from `env`.

    `schema` is `Config` (core sections only) or one built by `compose` with the adapters'
    sections; the CLI passes the latter (`bots.launcher.load_config`).
    """
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
        config = schema.model_validate_json(as_json)
    except ValidationError as exc:
        problems: list[tuple[str, str]] = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            problem = err["msg"]
            if err["type"] == "extra_forbidden":
                problem = "unknown key" + _did_you_mean(schema, err["loc"])
            problems.append((key, problem))
        raise ConfigError.of(path, problems) from None
    problems = _check_agents(config)
    secrets = _read_secrets(config, env, problems)
    if problems:
        raise ConfigError.of(path, problems)
    return Loaded(path=path.resolve(), config=config, secrets=secrets)


def _did_you_mean(model: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    """` (did you mean `backend`?)` for a misspelt key, from the fields of its section."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        inner = field.annotation if field is not None else None
        if not (isinstance(inner, type) and issubclass(inner, BaseModel)):
            return ""
        model = inner
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.75)
    return f" (did you mean `{close[0]}`?)" if close else ""


def _check_agents(config: Config) -> list[tuple[str, str]]:
    """What one section cannot check alone: ids unique, bindings name agents, one default."""
    problems: list[tuple[str, str]] = []
    if "agent" in config.model_fields_set and config.agent.id in config.agents:
        twice = f"agent {config.agent.id!r} is also defined by [agent]"
        problems.append((f"agents.{config.agent.id}", twice))
    table = config.agent_table()
    defaults = [a for a, s in table.items() if s.default]
    for extra in defaults[1:]:
        one = f"only one agent can be the default ({defaults[0]!r} is)"
        problems.append((f"agents.{extra}.default", one))
    names: set[str] = set()
    for i, sched in enumerate(config.schedules):
        if sched.name in names:
            problems.append((f"schedules.{i}.name", f"schedule {sched.name!r} is defined twice"))
        names.add(sched.name)
        if (agent := parse_key(sched.key).agent) not in table:
            problems.append((f"schedules.{i}.key", f"schedule {sched.name!r}: no agent {agent!r}"))
    for i, rule in enumerate(config.bindings):
        if rule.agent not in table:
            problems.append((f"bindings.{i}.agent", f"no agent {rule.agent!r} (agents: {', '.join(table)})"))
    return problems


def _read_secrets(config: Config, env: Mapping[str, str], problems: list[tuple[str, str]]) -> Secrets:
    """The secrets the config names, read from `env`; a missing required one is added to
    `problems` (key, problem)."""
    found: dict[str, SecretStr] = {}
    agent_keys = [a.openai.api_key_env for a in config.agent_table().values() if a.backend == "openai"]
    for var in (
        config.agent.openai.api_key_env,
        *agent_keys,
        config.store.password_env,
    ):  # optional, core's own
        value = env.get(var, "") if var else ""
        if value:
            found[var] = SecretStr(value)
    for name in type(config).model_fields:
        section = getattr(config, name)
        if not isinstance(section, AdapterSettings):
            continue
        for need in section.secret_needs():
            key, var = f"{name}.{need.field}", getattr(section, need.field)
            if not isinstance(var, str):
                raise TypeError(f"{key} must be a str field naming an environment variable")
            value = env.get(var, "") if var else ""
            if need.required and not var:
                problems.append((key, f"must name an environment variable ({need.why})"))
            elif need.required and not value:
                problems.append((key, f"environment variable {var} is not set ({need.why})"))
            if value:
                found[var] = SecretStr(value)
    return Secrets(by_var=found)
