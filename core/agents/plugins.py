"""Agents from outside chatlane: `backend = "python"` + `factory`, or an entry point.

A factory is any callable taking the agent's `options` table (a plain dict) and
returning an object that satisfies `core.agents.Agent`. It is imported and called once,
at startup and by `chatlane check`; every way it can go wrong is a `PluginError` whose
text names the reason, which the registry turns into a config error naming the key.
That includes `SystemExit` (a plugin calling sys.exit() or argparse at import), which
would otherwise end `chatlane check` with its exit code and no word.
"""

from __future__ import annotations

import copy
import importlib
import inspect
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Any, cast

from core.agents.base import Agent

ENTRY_POINT_GROUP = "chatlane.agents"

Factory = Callable[[dict[str, Any]], Any]


class PluginError(Exception):
    """A plugin agent could not be made; the text says why, for the config's author."""


def import_factory(path: str) -> Factory:
    """`package.module:callable` (the callable may be dotted: `module:Class.create`)."""
    module_name, _, attr = path.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise PluginError(f"cannot import module {module_name!r}: {exc}") from exc
    except Exception as exc:  # the plugin's own import-time code failed
        raise PluginError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}") from exc
    except SystemExit as exc:  # sys.exit() or argparse at import: it must not end chatlane
        raise PluginError(_exited(f"importing {module_name!r}", exc)) from None
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise PluginError(f"module {module_name!r} has no {attr!r}") from None
    if not callable(target):
        raise PluginError(f"{path!r} is not callable")
    return cast(Factory, target)


def entry_point_names() -> list[str]:
    """Backend names registered by installed packages in the `chatlane.agents` group."""
    return sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def load_entry_point(name: str) -> Factory:
    """The factory an installed package registered as backend `name`."""
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not found:
        known = ", ".join(["echo", "openai", "python", *entry_point_names()])
        raise PluginError(
            f"unknown backend {name!r}: not built in and no installed package registers it "
            f"in the {ENTRY_POINT_GROUP!r} entry points (backends: {known})"
        )
    try:
        target = found[0].load()
    except Exception as exc:
        raise PluginError(
            f"entry point {name!r} ({found[0].value}) cannot be loaded: {type(exc).__name__}: {exc}"
        ) from exc
    except SystemExit as exc:
        raise PluginError(_exited(f"loading entry point {name!r} ({found[0].value})", exc)) from None
    if not callable(target):
        raise PluginError(f"entry point {name!r} ({found[0].value}) is not callable")
    return cast(Factory, target)


def make_plugin(factory: Factory, options: Mapping[str, Any], where: str) -> Agent:
    """Call `factory(options)` and check that the result is an Agent."""
    try:
        agent = factory(copy.deepcopy(dict(options)))
    except Exception as exc:
        raise PluginError(f"{where} raised {type(exc).__name__}: {exc}") from exc
    except SystemExit as exc:
        raise PluginError(_exited(where, exc)) from None
    if inspect.isawaitable(agent):
        if inspect.iscoroutine(agent):
            agent.close()
        raise PluginError(f"{where} returned an awaitable; the factory must return the agent itself")
    problem = not_an_agent(agent)
    if problem:
        raise PluginError(f"{where} returned {type(agent).__name__!s}, which is not an Agent: {problem}")
    return cast(Agent, agent)


def _exited(what: str, exc: SystemExit) -> str:
    """A plugin that tried to end the process (sys.exit, argparse reading chatlane's argv)."""
    return (
        f"{what} called sys.exit({exc.code!r}) (argparse does so on arguments it does not know): "
        "a plugin must not parse the command line or exit at import"
    )


def not_an_agent(obj: object) -> str:
    """What `obj` lacks of the Agent protocol ("" when nothing)."""
    if not isinstance(getattr(obj, "name", None), str):
        return "it has no `name` string"
    if not callable(getattr(obj, "stream", None)):
        return "it has no stream(turn) method"
    close = getattr(obj, "close", None)
    if not callable(close) or not inspect.iscoroutinefunction(close):
        return "it has no `async def close()`"
    return ""
